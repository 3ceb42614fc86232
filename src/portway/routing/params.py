"""A read-only ``dict`` for route parameters shared between requests.

The router remembers the match of a (host, method, path) that captured nothing and hands the
same :class:`~portway.routing.router.RouteMatch` to every request that hits the memo. Its
``params`` must then be empty for good: a plugin writing into it would leak into other
requests. A ``dict`` subclass (not a mapping proxy) keeps ``RouteMatch.params`` a ``dict``
for its readers; every mutating method raises ``TypeError``.

Not compiled (mypyc compiles no subclasses of ``dict``).
"""

from __future__ import annotations

from typing import Any, NoReturn


def _read_only(*_: Any, **__: Any) -> NoReturn:
    raise TypeError("RouteMatch.params is read-only (the match is shared between requests)")


class FrozenParams(dict[str, str]):
    """An empty-or-fixed ``dict[str, str]`` that refuses changes."""

    __slots__ = ()

    __setitem__ = _read_only
    __delitem__ = _read_only
    __ior__ = _read_only
    clear = _read_only
    pop = _read_only
    popitem = _read_only
    setdefault = _read_only
    update = _read_only


#: the params of every memoised match (they capture nothing)
NO_PARAMS: dict[str, str] = FrozenParams()
