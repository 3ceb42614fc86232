"""401/403 error shapes shared by the identity plugins.

Messages are deliberately generic: a client learns that its credentials were missing or not
accepted, never which part of them was wrong (unknown key and wrong key read the same).
"""

from __future__ import annotations

from collections.abc import Sequence

from portway.errors import ForbiddenError, UnauthorizedError

MISSING = "missing credentials"
INVALID = "invalid credentials"
INVALID_TOKEN = "invalid token"
EXPIRED_TOKEN = "token expired"


def _quote(value: str) -> str:
    # RFC 9110 §5.6.4 quoted-string: escape backslash and DQUOTE; drop anything that is not
    # visible ASCII so no attacker-influenced text can break the header.
    clean = "".join(c for c in value if " " <= c <= "~")
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def challenge(scheme: str, realm: str, **params: str) -> str:
    """A ``WWW-Authenticate`` value such as ``Bearer realm="portway", error="invalid_token"``."""
    parts = [f"realm={_quote(realm)}"]
    parts.extend(f"{k}={_quote(v)}" for k, v in params.items())
    return f"{scheme} " + ", ".join(parts)


class MissingCredentialsError(UnauthorizedError):
    """No credential of the plugin's kind was presented (the ``auth`` combinator and the
    ``anonymous`` fallback treat this differently from a rejected credential)."""


class LoginRequiredError(MissingCredentialsError):
    """No credential, and the method can get one interactively (a browser login): the answer
    is a redirect to the login page (``location`` among the headers) instead of a 401. The
    ``auth`` combinator raises it when no member found a credential."""

    status = 302
    code = "login_required"


def missing(challenges: Sequence[str], source: str) -> MissingCredentialsError:
    return MissingCredentialsError(
        MISSING, headers=[("www-authenticate", c) for c in challenges], source=source
    )


def unauthorized(
    challenges: Sequence[str], source: str, message: str = INVALID
) -> UnauthorizedError:
    return UnauthorizedError(
        message, headers=[("www-authenticate", c) for c in challenges], source=source
    )


def forbidden(
    source: str, message: str = "forbidden", challenges: Sequence[str] = ()
) -> ForbiddenError:
    return ForbiddenError(
        message, headers=[("www-authenticate", c) for c in challenges], source=source
    )
