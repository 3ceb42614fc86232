"""Request header names the gateway owns, and the underscore rule (``http/server.py`` and
``http/h2.py`` apply it to every request field as it is parsed).

Servers behind a gateway often fold ``_`` into ``-`` when they read header names (CGI and
WSGI expose ``X_User_ID`` and ``X-User-ID`` both as ``HTTP_X_USER_ID``), so a client sending
``X_Forwarded_For`` or ``X_Consumer_Username`` could set what the upstream reads as the
gateway's own assertion, which the gateway only strips in its dashed spelling. Hence:

- by default (``listeners[].underscores_in_headers: false``, nginx's
  ``underscores_in_headers off``) every request field whose name contains ``_`` is dropped;
- with ``underscores_in_headers: true`` such fields are kept, except the underscore spellings
  of :data:`OWNED` names and of the names the current configuration makes the gateway set
  (``identity_headers`` claims, the ``request_id`` header: ``App.owns_header``).

Names arrive lower-cased, so "any case" is covered by comparing lower-case names.
"""

from __future__ import annotations

from typing import Final

#: what the gateway sets or believes about a request (docs/security.md has the audit)
OWNED: Final[frozenset[bytes]] = frozenset(
    {
        # forwarding (proxy/forward.py; kept only from trusted proxies)
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-forwarded-prefix",
        b"x-real-ip",
        b"forwarded",
        b"via",
        # identity (auth plugins, plugins/_identity/headers.py)
        b"x-consumer-id",
        b"x-consumer-username",
        b"x-consumer-groups",
        b"x-credential-identifier",
        b"x-anonymous-consumer",
        # request id (request_id plugin default, error bodies) and debugging
        b"x-request-id",
        b"x-portway-debug",
        # tracing (B3 propagation; W3C traceparent/tracestate have no '-' to fold)
        b"x-b3-traceid",
        b"x-b3-spanid",
        b"x-b3-parentspanid",
        b"x-b3-sampled",
        b"x-b3-flags",
    }
)


def folded(name: bytes) -> bytes:
    """``name`` as an upstream that folds ``_`` into ``-`` reads it."""
    return name.replace(b"_", b"-")


def drop_underscored(name: bytes, allowed: bool, extra: frozenset[bytes]) -> bool:
    """Whether a lower-cased field name that contains ``_`` is dropped: always unless
    ``allowed``, and then when it folds into an owned name (:data:`OWNED` or ``extra``)."""
    if not allowed:
        return True
    f = folded(name)
    return f in OWNED or f in extra
