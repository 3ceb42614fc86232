"""Rate-limit response fields.

IETF fields follow draft-ietf-httpapi-ratelimit-headers-10 (structured field Lists)::

    RateLimit-Policy: "default";q=10;w=1, "daily";q=1000;w=86400
    RateLimit: "default";r=3;t=1, "daily";r=998;t=5400

``q`` quota units per window, ``w`` window seconds, ``r`` remaining units, ``t`` seconds until
the quota is fully restored. The legacy ``X-RateLimit-Limit/Remaining/Reset`` triple reports
the tightest policy (fewest remaining); ``X-RateLimit-Reset`` is delta seconds, as Kong sends.

Every limiting plugin appends ``(reporter, decision)`` to ``ctx.limits`` (:func:`reports_of`) in
``on_request`` and renders *all* reports in ``on_response``; the rendering is idempotent
(fields are replaced, not appended), so several limiting plugins and the order their response
phases run in never produce duplicate or conflicting fields.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Final

from portway.pipeline.context import RequestContext
from portway.pipeline.runner import FieldRun, Replaces, replace_fields
from portway.plugins._ratelimit.local import Decision

POLICY_NAME: Final = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def ceil_s(x: float) -> int:
    """Whole seconds for a header: rounded up, never negative."""
    return max(0, math.ceil(x - 1e-9))


class Reporter:
    """Renders one plugin binding's policies; built once per binding."""

    __slots__ = (
        "ietf",
        "last",
        "last_rem",
        "last_reset",
        "legacy",
        "names",
        "names_b",
        "ok",
        "ok_d",
        "ok_rem",
        "ok_reset",
        "ok_run",
        "policy",
        "policy_b",
        "quotas",
        "quotas_b",
        "single",
    )

    def __init__(
        self,
        names: Sequence[str],
        quotas: Sequence[int],
        windows: Sequence[int],
        mode: str,
        unit: str | None = None,
    ) -> None:
        self.names = tuple(f'"{n}"' for n in names)
        self.quotas = tuple(quotas)
        qu = f';qu="{unit}"' if unit else ""
        self.policy = ", ".join(
            f"{n};q={q};w={w}{qu}" for n, q, w in zip(self.names, quotas, windows, strict=True)
        )
        self.ietf = mode in ("ietf", "both")
        self.legacy = mode in ("legacy", "both")
        # the constant parts as bytes, for the one-report rendering of every response
        self.names_b = tuple(n.encode("latin-1") for n in self.names)
        self.policy_b = self.policy.encode("latin-1")
        self.quotas_b = tuple(b"%d" % q for q in self.quotas)
        #: the one-limit fields rendered last, for (``last_rem``, ``last_reset``): a key
        #: far from its limit reports the same numbers request after request
        self.last: list[tuple[bytes, bytes]] = []
        self.last_rem = -1
        self.last_reset = -1
        #: the report :func:`add_admitted` made last, for (``ok_rem``, ``ok_reset``)
        #: (a ``Report``, held as an object: compiled, a ``Report`` value is an unboxed
        #: tuple, boxed again, a new tuple, each time it goes into ``ctx.limits``)
        self.ok: object = None
        #: ``ok``'s decision (compiled, a tuple read from a list is unboxed: the decision's
        #: identity tells a report is ``ok``)
        self.ok_d: Decision | None = None
        self.ok_rem = -1
        self.ok_reset = -1
        #: ``ok``'s fields as a :class:`FieldRun` (:func:`report_run`), made at first use
        self.ok_run: FieldRun | None = None
        #: one limit: :func:`render_fields` of a lone report renders :meth:`one`
        self.single = len(self.names) == 1

    def one(self, remaining: int, reset: int) -> list[tuple[bytes, bytes]]:
        """The fields of one limit (the first) for these numbers; never mutate the list."""
        if remaining == self.last_rem and reset == self.last_reset:
            return self.last
        rem_b = str(remaining).encode()
        reset_b = str(reset).encode()
        out: list[tuple[bytes, bytes]] = []
        if self.ietf:
            out.append((b"ratelimit-policy", self.policy_b))
            out.append((b"ratelimit", b"".join([self.names_b[0], b";r=", rem_b, b";t=", reset_b])))
        if self.legacy:
            out.append((b"x-ratelimit-limit", self.quotas_b[0]))
            out.append((b"x-ratelimit-remaining", rem_b))
            out.append((b"x-ratelimit-reset", reset_b))
        self.last = out
        self.last_rem = remaining
        self.last_reset = reset
        return out


Report = tuple[Reporter, Decision]


def reports_of(ctx: RequestContext) -> list[Report] | None:
    """The request's reports, in the order they were made (None: none yet). They live in a
    slot of the context (``RequestContext.limits``), not in ``ctx.state``: no ``State``,
    dict and key per request."""
    return ctx.limits


def add_admitted(ctx: RequestContext, reporter: Reporter, remaining: float, reset: float) -> None:
    """:func:`add_report` of an admitted one-limit decision of these numbers, made as every
    rendering reads them (whole units left, whole seconds to reset, rounded up: what
    :func:`header_pairs` and :meth:`Reporter.one` do to them again gives the same): the
    report is kept and shared while the numbers repeat (a key far from its limit)."""
    rem = max(0, int(remaining))
    sec = ceil_s(reset)
    rep: object = reporter.ok
    if rep is None or rem != reporter.ok_rem or sec != reporter.ok_reset:
        d = reporter.ok_d = Decision(True, (float(rem),), (float(sec),), 0.0)
        rep = reporter.ok = (reporter, d)
        reporter.ok_rem = rem
        reporter.ok_reset = sec
        reporter.ok_run = None
    add_report_pair(ctx, rep)


def add_report_pair(ctx: RequestContext, report: object) -> None:
    """Append ``report`` (a ``Report``) to the request's reports."""
    reports = ctx.limits
    if reports is None:
        ctx.limits = [report]
    else:
        reports.append(report)


def add_report(ctx: RequestContext, reporter: Reporter, decision: Decision) -> None:
    add_report_pair(ctx, (reporter, decision))


def header_pairs(reports: Sequence[Report]) -> list[tuple[str, str]]:
    policies: list[str] = []
    items: list[str] = []
    tightest: tuple[int, int, int] | None = None  # (remaining, -reset, limit)
    for rep, d in reports:
        for i, name in enumerate(rep.names):
            remaining = max(0, int(d.remaining[i]))
            reset = ceil_s(d.reset[i])
            if rep.ietf:
                items.append(f"{name};r={remaining};t={reset}")
            if rep.legacy:
                cand = (remaining, -reset, rep.quotas[i])
                if tightest is None or cand[:2] < tightest[:2]:
                    tightest = cand
        if rep.ietf:
            policies.append(rep.policy)
    out: list[tuple[str, str]] = []
    if policies:
        out.append(("ratelimit-policy", ", ".join(policies)))
        out.append(("ratelimit", ", ".join(items)))
    if tightest is not None:
        out.append(("x-ratelimit-limit", str(tightest[2])))
        out.append(("x-ratelimit-remaining", str(tightest[0])))
        out.append(("x-ratelimit-reset", str(-tightest[1])))
    return out


#: every field :func:`header_pairs` may render
FIELDS: Final = frozenset(
    {
        b"ratelimit-policy",
        b"ratelimit",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    }
)


#: what the rendering replaces: every field it may render, whichever it renders this time
REPLACES: Final = Replaces(FIELDS)


def render_fields(reports: Sequence[Report], out: list[tuple[bytes, bytes]]) -> None:
    """Append the fields for ``reports`` (not empty) to ``out``; they replace every field in
    :data:`FIELDS` (:data:`REPLACES`)."""
    if len(reports) == 1:
        rep, d = reports[0]
        if len(rep.names) == 1:
            # one plugin, one limit: the common case, rendered straight to bytes (and not
            # again while the numbers stay the same)
            out.extend(rep.one(max(0, int(d.remaining[0])), ceil_s(d.reset[0])))
            return
    for name, value in header_pairs(reports):
        out.append((name.encode("ascii"), value.encode("latin-1")))


def report_fields(ctx: RequestContext, out: list[tuple[bytes, bytes]]) -> Replaces | None:
    """The request's rate-limit fields (every report), as a :class:`FieldHooks` sets them;
    None when no limiter reported."""
    reports: list[Report] | None = ctx.limits
    if not reports:
        return None
    render_fields(reports, out)
    return REPLACES


def report_run(ctx: RequestContext) -> FieldRun | None:
    """:func:`report_fields`' fields as a :class:`FieldRun`, when the request's one report is
    the admitted one :func:`add_admitted` keeps for a one-limit reporter (its numbers are
    ``ok_rem`` / ``ok_reset``, so :func:`render_fields` would render ``one(ok_rem,
    ok_reset)``); None otherwise (``report_fields`` then renders), and the first time: the
    run is kept from the first repeat on, as the chain moves repeated fields to lines."""
    reports: list[Report] | None = ctx.limits
    if reports is None or len(reports) != 1:
        return None
    r, d = reports[0]
    if d is not r.ok_d or not r.single:
        return None
    run = r.ok_run
    if run is None:
        r.ok_run = FieldRun(r.one(r.ok_rem, r.ok_reset), REPLACES)
    return run


def apply_reports(ctx: RequestContext) -> None:
    """Set the fields for every report on ``ctx.response`` (idempotent: fields a previous
    call or the upstream set are replaced; the rule of ``pipeline/runner.py:replace_fields``)."""
    resp = ctx.response
    if resp is None:
        return
    out: list[tuple[bytes, bytes]] = []
    rep = report_fields(ctx, out)
    if rep is not None:
        replace_fields(resp.headers, rep.names, out)
