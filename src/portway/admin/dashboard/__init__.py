"""The operator dashboard served by the admin listener (``/dashboard``).

A small bundled front end (``assets/``: one HTML page, one script, one style sheet; no build
step, no CDN) over the admin API plus a few read-only endpoints under ``/dashboard/api/``
that aggregate what the page shows: live rates and latency percentiles sampled from the
gateway's own metrics (:mod:`.live`), the most recent gateway-made errors with their explain
records (:mod:`.errors`), the history of configuration applies (:mod:`.history`) and a
route-matching probe that sends nothing (:mod:`.api`). Every write the page makes goes
through the ordinary admin API endpoints with the same bearer token.
"""
