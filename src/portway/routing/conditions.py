"""Request conditions shared by traffic rules (``split.force[].when``) and plugins
(``fault_injection.when``): all given header tests and, when listed, the consumer."""

from __future__ import annotations

from collections.abc import Callable

from portway.config.traffic import Condition
from portway.pipeline.context import RequestContext
from portway.routing.entry import header_regex


class CompiledCondition:
    """A :class:`~portway.config.traffic.Condition` ready to test requests."""

    __slots__ = ("consumers", "headers")

    def __init__(self, cond: Condition) -> None:
        self.headers: list[tuple[bytes, Callable[[bytes], bool]]] = [
            (k.encode(), _value_test(v)) for k, v in cond.headers.items()
        ]
        self.consumers = frozenset(cond.consumers)

    def holds(self, ctx: RequestContext) -> bool:
        h = ctx.request.headers
        for name, test in self.headers:
            v = h.get_raw(name)
            if v is None or not test(v):
                return False
        if self.consumers:
            c = ctx.consumer
            if c is None or c.anonymous or c.username not in self.consumers:
                return False
        return True


def _value_test(v: str) -> Callable[[bytes], bool]:
    if v == "*":
        return lambda _: True
    if v.startswith("~"):
        rx = header_regex(v[1:])  # the route matcher's rule: one meaning of "~regex"
        return lambda b: rx.search(b.decode("latin-1")) is not None
    want = v.encode("latin-1")
    return lambda b: b == want
