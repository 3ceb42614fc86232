"""The per-request work of a Redis-limited ``rate_limit`` binding, as :class:`FieldHooks`.

``request`` drives the plugin's decision coroutine (``runner.drive``): it suspends on the
Redis reply's future, so the chain raises :class:`~portway.pipeline.suspend.HookSuspended`
and the task-free path parks the request on that future (``proxy/fast.py`` ``Parked``); the
task path awaits the plugin's ``on_request`` instead and never calls ``request``.
``response_fields`` renders the rate-limit fields as the local binding's hooks do, so a
Redis-limited route keeps the lite response head (``Chain.fields_only``).

Compiled with mypyc (setup.py ``HOT_MODULES``): :class:`FieldHooks` is a compiled base.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from portway.http.models import Response
from portway.pipeline.context import RequestContext
from portway.pipeline.runner import FieldHooks, Replaces, drive
from portway.plugins._ratelimit.headers import report_fields

Decide = Callable[[RequestContext], Coroutine[Any, Any, Response | None]]


class RedisRateHooks(FieldHooks):
    """``request`` runs ``decide(ctx)`` (the plugin's coroutine: decision, report,
    rejection) until it suspends or ends; ``response_fields`` sets the report's fields."""

    def __init__(self, decide: Decide) -> None:
        self.decide = decide

    def request(self, ctx: RequestContext) -> Response | None:
        return drive(self.decide(ctx))

    def response_fields(
        self, ctx: RequestContext, out: list[tuple[bytes, bytes]]
    ) -> Replaces | None:
        return report_fields(ctx, out)
