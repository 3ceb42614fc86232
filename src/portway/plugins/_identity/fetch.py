"""One-shot HTTP calls made by identity plugins (JWKS fetches, token introspection)."""

from __future__ import annotations

from portway.http.client import SimpleResponse, simple_request

#: a JWKS document or an introspection answer is small; anything bigger is refused
MAX_BODY = 1024 * 1024


#: the response type of :func:`http_request` (the shared one-shot client's)
FetchResponse = SimpleResponse


async def http_request(
    method: str,
    url: str,
    *,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    timeout: float = 5.0,
) -> FetchResponse:
    """Send one request on a fresh connection and read the whole response.

    Raises ``OSError``/``TimeoutError`` (or the client's protocol errors) on failure; callers
    treat any exception as "no answer".
    """
    return await simple_request(
        method, url, headers=headers, body=body, timeout=timeout, max_body=MAX_BODY
    )
