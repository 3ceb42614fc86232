"""Adding members to a response's Vary field."""

from __future__ import annotations

from portway.http.headers import Headers


def add_vary(headers: Headers, *names: str) -> None:
    """Add ``names`` to the response's Vary unless it already lists them (or ``*``); the
    existing field lines are kept as they are."""
    present = {
        t.strip().lower() for v in headers.get_all(b"vary") for t in v.split(",") if t.strip()
    }
    if "*" in present:
        return
    missing = [n for n in names if n.lower() not in present]
    if missing:
        headers.add("vary", ", ".join(missing))
