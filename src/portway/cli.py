"""Command line: ``portway run | validate | routes | demo | version``.

Every failure ends with one clear message on stderr and a non-zero exit code; tracebacks are
only shown with ``PORTWAY_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from portway import __version__

EXIT_CONFIG = 2
EXIT_RUNTIME = 1


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_RUNTIME) -> None:
        super().__init__(message)
        self.code = code


def _load(path: str, *, build: bool = False) -> Any:
    """Load and validate ``path``; ``build``: also build every part ``run`` builds
    (consumers, certificates, plugins — see :mod:`portway.server.preflight`)."""
    from portway.config.errors import ConfigError
    from portway.config.loader import load_config

    if not Path(path).exists():
        raise CliError(f"config file not found: {path}", EXIT_CONFIG)
    try:
        if build:
            from portway.server.preflight import preflight

            return preflight(path)
        return load_config(path)
    except ConfigError as e:
        lines = [
            f"{path}: invalid config ({len(e.errors)} error{'s' if len(e.errors) != 1 else ''})"
        ]
        lines += [f"  {i}" for i in e.errors]
        raise CliError("\n".join(lines), EXIT_CONFIG) from None


def _setup_logging(level: str) -> None:
    try:
        from portway.observability.logging import setup_logging

        setup_logging(level)
    except Exception:
        logging.basicConfig(
            level=getattr(logging, level.upper(), logging.INFO),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )


def cmd_validate(args: argparse.Namespace) -> int:
    cfg = _load(args.config, build=True)
    print(
        f"{args.config}: OK — {len(cfg.routes)} routes, {len(cfg.upstreams)} upstreams, "
        f"{len(cfg.plugins)} global plugins, {len(cfg.consumers)} consumers"
    )
    return 0


def cmd_routes(args: argparse.Namespace) -> int:
    from portway.routing.router import Router

    cfg = _load(args.config)
    router = Router(cfg.routes)
    rows = [("#", "ROUTE", "PATH", "HOSTS", "METHODS", "UPSTREAM")]
    for rank, pattern, r in router.table():
        rows.append(
            (
                str(rank),
                r.name,
                pattern,
                ",".join(r.match.hosts) or "*",
                ",".join(r.match.methods) or "*",
                r.upstream or "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _preflight(cfg: Any) -> None:
    """Fail fast, with one message, when an address cannot be bound.

    Workers bind with SO_REUSEPORT, which would silently share a port with another gateway
    already serving it, and a forked worker that cannot bind would be restarted forever; so
    each address is bound once here *without* SO_REUSEPORT, which fails if anyone holds it.
    """
    from portway.server.listener import bind_socket

    addrs = [(f"listener {lc.name!r}", lc.address) for lc in cfg.listeners]
    if cfg.admin.enabled:
        addrs.append(("admin API", cfg.admin.address))
    for what, addr in addrs:
        try:
            sock = bind_socket(addr, reuse_port=False)
        except OSError as e:
            raise CliError(f"cannot listen on {addr} ({what}): {e.strerror or e}") from None
        sock.close()


def cmd_run(args: argparse.Namespace) -> int:
    from portway.server.supervisor import run_supervised

    cfg = _load(args.config, build=True)
    if args.workers is not None and args.workers < 1:
        raise CliError("--workers must be at least 1", EXIT_CONFIG)
    _preflight(cfg)
    _setup_logging(cfg.server.log_level)
    workers = args.workers or cfg.server.workers or os.cpu_count() or 1
    addrs = ", ".join(lc.address for lc in cfg.listeners)
    print(f"portway {__version__}: starting on {addrs} with {workers} worker(s)", file=sys.stderr)
    try:
        return run_supervised(cfg, args.config, args.watch, workers)
    except OSError as e:
        raise CliError(f"cannot start: {e.strerror or e}") from None


def cmd_demo(args: argparse.Namespace) -> int:
    from portway.config.loader import load_config_text
    from portway.demo import banner, demo_config_text, demo_ports, start_backends
    from portway.server.worker import Worker

    if args.port:
        os.environ["PORTWAY_PORT"] = str(args.port)
    if not os.environ.get("PORTWAY_ADMIN_TOKEN"):
        import secrets

        # a fresh token per demo run: the dashboard and the admin API are never open
        os.environ["PORTWAY_ADMIN_TOKEN"] = secrets.token_urlsafe(12)
    token = os.environ["PORTWAY_ADMIN_TOKEN"]
    cfg = load_config_text(demo_config_text(), "demo.yaml")
    _setup_logging("warning")

    async def main() -> None:
        try:
            backends = await start_backends(demo_ports())
        except OSError as e:
            raise CliError(f"cannot start demo backends: {e.strerror or e}") from None
        w = Worker(cfg)
        try:
            await w.start()
        except OSError as e:
            raise CliError(f"cannot start the gateway: {e.strerror or e}") from None
        w.install_signals()
        port = int(cfg.listeners[0].address.rsplit(":", 1)[1])
        admin_port = int(cfg.admin.address.rsplit(":", 1)[1])
        print(banner(port, admin_port, token), flush=True)
        await w.wait()
        await w.shutdown()
        for b in backends:
            b.close()

    import uvloop

    uvloop.run(main())
    return 0


def _columns() -> int:
    """The terminal width as ``shutil.get_terminal_size`` finds it (``$COLUMNS``, then the
    terminal of stdout, else 80), without importing :mod:`shutil`: argparse imports it for
    every formatter it makes (each ``add_argument`` makes one), and with it ``bz2``,
    ``lzma`` and ``zlib`` (~0.4 MB kept by the serving process for nothing)."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _Help(argparse.HelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)  # argparse's own margin


class _RawHelp(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog: str) -> None:
        super().__init__(prog, width=_columns() - 2)


def build_parser() -> argparse.ArgumentParser:
    fmt = _RawHelp
    p = argparse.ArgumentParser(
        prog="portway",
        formatter_class=fmt,
        description="Portway: a fast API gateway. Routes, authenticates, limits, caches and "
        "observes traffic to your services.",
        epilog="Start with `portway demo`, then write a config and `portway validate` it.\n"
        "`portway COMMAND --help` describes each command.",
    )
    p.add_argument("--version", action="version", version=f"portway {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser(
        "run",
        help="serve traffic with a config file",
        formatter_class=fmt,
        description="Serve traffic with a config file until SIGTERM or Ctrl-C (in-flight "
        "requests finish first).\nSIGHUP reloads the config; a bad config keeps the old one "
        "serving and logs every error.",
        epilog="example:\n  portway run -c portway.yaml --workers 2 --watch",
    )
    r.add_argument("-c", "--config", required=True, metavar="FILE", help="path to portway.yaml")
    r.add_argument(
        "-w",
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes (default: server.workers, else the CPU count)",
    )
    r.add_argument(
        "--watch", action="store_true", help="reload when the config file's content changes"
    )
    r.set_defaults(func=cmd_run)
    v = sub.add_parser(
        "validate",
        formatter_class=_Help,
        help="check a config file and report every error with its line",
        description="Check a config file without starting anything. Prints a summary and "
        "exits 0, or lists every error with its YAML path and line and exits 2.",
    )
    v.add_argument("config", metavar="FILE", help="path to portway.yaml")
    v.set_defaults(func=cmd_validate)
    t = sub.add_parser(
        "routes",
        formatter_class=_Help,
        help="print the compiled route table in priority order",
        description="Print the compiled route table, highest priority first: exact paths, "
        "then templates and prefixes by literal length, then regexes.",
    )
    t.add_argument("config", metavar="FILE", help="path to portway.yaml")
    t.set_defaults(func=cmd_routes)
    d = sub.add_parser(
        "demo",
        help="start four demo services, the gateway and its dashboard",
        formatter_class=fmt,
        description="Start four demo services (users, orders, products, flaky) and the gateway "
        "on the bundled config\n(key auth, a rate limit, a cache), then print curl commands "
        "to try and the dashboard's\naddress and token. Ctrl-C stops everything.",
        epilog="ports (environment): PORTWAY_PORT (8080), PORTWAY_ADMIN_PORT (9901),\n"
        "  DEMO_USERS_PORT (9001), DEMO_ORDERS_PORT (9002), DEMO_PRODUCTS_PORT (9003),\n"
        "  DEMO_FLAKY_PORT (9004); PORTWAY_ADMIN_TOKEN (default: a random token)",
    )
    d.add_argument(
        "--port", type=int, default=None, help="gateway port (default: $PORTWAY_PORT or 8080)"
    )
    d.set_defaults(func=cmd_demo)
    ver = sub.add_parser(
        "version", formatter_class=_Help, help="print the version", description="Print the version."
    )
    ver.set_defaults(func=lambda a: print(f"portway {__version__}") or 0)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_CONFIG
    try:
        return int(args.func(args) or 0)
    except CliError as e:
        print(f"portway: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        if os.environ.get("PORTWAY_DEBUG"):
            raise
        print(f"portway: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
