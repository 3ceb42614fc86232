"""Reading and writing the plugin's cookies, chunked past one cookie's size.

Browsers keep about 4096 bytes per cookie (name, value and attributes together), so a value
longer than :data:`CHUNK` characters is split over ``NAME``, ``NAME.1``, ``NAME.2`` … (at most
:data:`MAX_CHUNKS`). The parts are joined in order before the value is opened; the AEAD tag
covers the whole, so a missing, reordered or altered chunk makes the value unreadable.
Writing a value with fewer chunks than the request carried expires the extra ones.
"""

from __future__ import annotations

from portway.http.headers import Headers
from portway.plugins.oidc.config import CookieOptions

CHUNK = 3800
MAX_CHUNKS = 12


def parse_cookies(headers: Headers) -> dict[str, str]:
    """Cookie name → value of a request (the first of duplicate names wins)."""
    out: dict[str, str] = {}
    for raw in headers.get_all("cookie"):
        for pair in raw.split(";"):
            k, sep, v = pair.strip().partition("=")
            if sep and k and k not in out:
                v = v.strip()
                if len(v) >= 2 and v[0] == v[-1] == '"':
                    v = v[1:-1]
                out[k] = v
    return out


def chunk_names(name: str) -> list[str]:
    return [name] + [f"{name}.{i}" for i in range(1, MAX_CHUNKS)]


def read_chunked(cookies: dict[str, str], name: str) -> tuple[str | None, int]:
    """The joined value of ``name`` and how many chunk cookies the request carried."""
    parts: list[str] = []
    for n in chunk_names(name):
        v = cookies.get(n)
        if v is None:
            break
        parts.append(v)
    present = sum(1 for n in chunk_names(name) if n in cookies)
    return ("".join(parts) if parts else None), present


def _attributes(opts: CookieOptions, max_age: int | None, same_site: str | None = None) -> str:
    attrs = [f"Path={opts.path}", "HttpOnly"]
    if opts.domain:
        attrs.append(f"Domain={opts.domain}")
    if opts.secure:
        attrs.append("Secure")
    attrs.append(f"SameSite={(same_site or opts.same_site).capitalize()}")
    if max_age is not None:
        attrs.append(f"Max-Age={max_age}")
    return "; ".join(attrs)


def set_cookie(
    name: str, value: str, opts: CookieOptions, max_age: int | None, same_site: str | None = None
) -> str:
    return f"{name}={value}; {_attributes(opts, max_age, same_site)}"


def clear_cookie(name: str, opts: CookieOptions) -> str:
    return f"{name}=; {_attributes(opts, 0)}; Expires=Thu, 01 Jan 1970 00:00:00 GMT"


def write_chunked(
    name: str, value: str, opts: CookieOptions, max_age: int | None, present: int
) -> list[str]:
    """``Set-Cookie`` values storing ``value`` under ``name`` (and expiring stale chunks)."""
    parts = [value[i : i + CHUNK] for i in range(0, len(value), CHUNK)] or [""]
    if len(parts) > MAX_CHUNKS:
        raise ValueError("session too large for cookies; use session.store: redis")
    names = chunk_names(name)
    out = [set_cookie(names[i], p, opts, max_age) for i, p in enumerate(parts)]
    out += [clear_cookie(names[i], opts) for i in range(len(parts), max(present, len(parts)))]
    return out


def clear_chunked(name: str, opts: CookieOptions, present: int) -> list[str]:
    return [clear_cookie(n, opts) for n in chunk_names(name)[: max(present, 1)]]
