"""Answers of the login flow: redirects, and errors as JSON or as a page for browsers.

An error during login is never answered with another redirect to the provider (that is how
login loops start): the browser gets a page saying what failed and a link to try again.
"""

from __future__ import annotations

import html

from portway.errors import error_body
from portway.http.headers import Headers
from portway.http.models import Request, Response


def wants_html(request: Request) -> bool:
    """Whether the client is a browser navigating (not an XHR or API client)."""
    h = request.headers
    if (h.get("x-requested-with") or "").lower() == "xmlhttprequest":
        return False
    accept = (h.get("accept") or "").lower()
    return "text/html" in accept


def wants_json(request: Request) -> bool:
    """Clients that must get a 401 rather than a login redirect: XHR, JSON-only, non-GET."""
    if request.method not in ("GET", "HEAD"):
        return True
    h = request.headers
    if (h.get("x-requested-with") or "").lower() == "xmlhttprequest":
        return True
    if (h.get("sec-fetch-mode") or "").lower() in ("cors", "no-cors", "same-origin"):
        return True
    accept = (h.get("accept") or "").lower()
    return "application/json" in accept and "text/html" not in accept


def redirect(location: str, cookies: list[str] | None = None) -> Response:
    h = Headers()
    h.set("location", location)
    h.set("cache-control", "no-store")
    for c in cookies or []:
        h.add("set-cookie", c)
    return Response(302, h, b"")


def error(
    request: Request,
    status: int,
    message: str,
    code: str,
    request_id: str | None,
    *,
    retry: str | None = None,
) -> Response:
    """``status`` with a JSON body, or an HTML page for a browser (with a try-again link)."""
    h = Headers()
    h.set("cache-control", "no-store")
    if wants_html(request):
        link = f'<p><a href="{html.escape(retry, quote=True)}">Try again</a></p>' if retry else ""
        page = (
            "<!doctype html><html><head><meta charset=utf-8><title>Sign-in problem</title>"
            "</head><body><h1>Sign-in problem</h1>"
            f"<p>{html.escape(message)}</p>{link}"
            f"<p><small>request id {html.escape(request_id or '-')}</small></p></body></html>"
        )
        h.set("content-type", "text/html; charset=utf-8")
        return Response(status, h, page.encode("utf-8"))
    h.set("content-type", "application/json")
    return Response(status, h, error_body(status, message, code, request_id))


def continue_page(location: str, cookies: list[str]) -> Response:
    """A 200 page that moves on to ``location`` itself: with ``SameSite=Strict`` a cookie set
    by the callback (reached from the provider's site) would not be sent on a redirect
    there, so the next request starts same-site instead."""
    h = Headers()
    h.set("cache-control", "no-store")
    h.set("content-type", "text/html; charset=utf-8")
    h.set("referrer-policy", "no-referrer")
    for c in cookies:
        h.add("set-cookie", c)
    loc = html.escape(location, quote=True)
    page = (
        f'<!doctype html><html><head><meta http-equiv="refresh" content="0;url={loc}">'
        f'</head><body><a href="{loc}">Continue</a></body></html>'
    )
    return Response(200, h, page.encode("utf-8"))
