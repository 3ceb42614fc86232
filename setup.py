"""Build hook: compile the data plane's hot modules with mypyc.

Portway is pure Python and runs as such; compiling the modules on the request path with
mypyc (the compiler mypy ships, fed by the type hints the code already has) roughly halves
their CPU per request (``python bench/hotpath_bench.py``: 36 → 15 µs). A regular install
(``pip install .``) compiles them; an editable install (``pip install -e .``) does not, so a
compiled module can never shadow the source you are editing. ``PORTWAY_PURE=1`` skips
compiling; a failure to compile falls back to the pure-Python modules with a warning.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Any

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

#: modules compiled by mypyc: the request path, nothing a plugin subclasses or patches
HOT_MODULES = [
    "src/portway/observability/metrics.py",
    "src/portway/observability/observer.py",
    "src/portway/pipeline/context.py",
    "src/portway/pipeline/pending.py",
    "src/portway/pipeline/runner.py",
    "src/portway/plugins/_ratelimit/algorithms.py",
    "src/portway/plugins/access_log/line.py",
    "src/portway/plugins/cache/hit.py",
    "src/portway/plugins/cache/hooks.py",
    "src/portway/plugins/cache/memory.py",
    "src/portway/plugins/_ratelimit/headers.py",
    "src/portway/plugins/_ratelimit/hooks.py",
    "src/portway/plugins/_ratelimit/keys.py",
    "src/portway/plugins/_ratelimit/local.py",
    "src/portway/plugins/_ratelimit/redis_hooks.py",
    "src/portway/plugins/jwt/cache.py",
    "src/portway/plugins/jwt/hooks.py",
    "src/portway/plugins/key_auth/hooks.py",
    "src/portway/plugins/request_id/hooks.py",
    "src/portway/http/body.py",
    "src/portway/http/client.py",
    "src/portway/http/clientsimple.py",
    "src/portway/http/clientstate.py",
    "src/portway/http/clientparse.py",
    "src/portway/http/clientwire.py",
    "src/portway/http/flow.py",
    "src/portway/http/forwarded.py",
    "src/portway/http/forwarding.py",
    "src/portway/http/h2base.py",
    "src/portway/http/headers.py",
    "src/portway/http/memo.py",
    "src/portway/http/models.py",
    "src/portway/http/ng2.py",
    "src/portway/http/ng2cb.py",
    "src/portway/http/ng2stream.py",
    "src/portway/http/path.py",
    "src/portway/http/pool.py",
    "src/portway/http/rawhead.py",
    "src/portway/http/relay.py",
    "src/portway/http/server.py",
    "src/portway/http/serverapi.py",
    "src/portway/http/serverlite.py",
    "src/portway/http/serverparse.py",
    "src/portway/http/serversimple.py",
    "src/portway/http/serverstate.py",
    "src/portway/http/serverwrite.py",
    "src/portway/http/streamreq.py",
    "src/portway/http/streamserve.py",
    "src/portway/http/sweeper.py",
    "src/portway/http/wire.py",
    "src/portway/proxy/exchange.py",
    "src/portway/proxy/fast.py",
    "src/portway/proxy/fastexchange.py",
    "src/portway/proxy/fastlines.py",
    "src/portway/proxy/fastsink.py",
    "src/portway/proxy/forward.py",
    "src/portway/proxy/handler.py",
    "src/portway/routing/entry.py",
    "src/portway/routing/router.py",
    "src/portway/routing/tree.py",
    "src/portway/runtime/graph.py",
    "src/portway/state/backoff.py",
    "src/portway/state/luabatch.py",
    "src/portway/state/respbatch.py",
    "src/portway/state/resp.py",
    "src/portway/state/respreader.py",
    "src/portway/upstream/balancer.py",
    "src/portway/upstream/breaker.py",
    "src/portway/upstream/health.py",
    "src/portway/upstream/retry.py",
    "src/portway/upstream/target.py",
    "src/portway/upstream/upstream.py",
]


#: the commands that build what gets installed (a wheel, or in place)
_BUILDS = {"bdist_wheel", "build", "build_ext", "install"}


def _warn(msg: str) -> None:
    print(f"portway: {msg}; installing the pure-Python modules", file=sys.stderr)


class MypycBuildExt(build_ext):  # type: ignore[misc]
    """Compiles :data:`HOT_MODULES` when a wheel is built (only then: the analysis takes
    about half a minute, and metadata or editable builds do not need it). Compiling is an
    optimisation: it never fails an install."""

    def _pure(self) -> bool:
        commands = set(self.distribution.commands or [])
        if not commands & _BUILDS or "editable_wheel" in commands:
            # metadata steps finalize this command too; editable installs run the sources
            # as they are edited
            return True
        return bool(getattr(self, "editable_mode", False)) or os.environ.get("PORTWAY_PURE") == "1"

    def finalize_options(self) -> None:
        if not self._pure():
            self.distribution.ext_modules = _mypyc_extensions()
        super().finalize_options()

    def run(self) -> None:
        if self._pure():
            return
        try:
            super().run()
        except Exception as e:
            # all or nothing: a module built without mypyc's shared library would not import
            for out in self.get_outputs():
                with contextlib.suppress(OSError):
                    os.remove(out)
            _warn(f"compiling with mypyc failed ({e})")


def _mypyc_extensions() -> list[Any]:
    try:
        from mypyc.build import mypycify
    except ImportError:
        _warn("mypyc is not available")
        return []
    try:
        # mypyc.ini: the build environment has mypy and pydantic only; the other
        # dependencies' types are not needed to compile our own code
        exts = list(mypycify(["--config-file", "mypyc.ini", *HOT_MODULES], opt_level="3"))
    except (Exception, SystemExit) as e:
        _warn(f"mypyc could not analyse the sources ({e})")
        return []
    for ext in exts:
        _link_lean(ext)
    return exts


def _link_lean(ext: Any) -> None:
    """Build the compiled modules with hidden symbols and packed relocations.

    Nothing outside the library links to its C functions (each module's small shim finds
    its init through a capsule; ``PyInit_*`` stay exported, Python declares them so), so
    exporting them only made the dynamic loader work at every start: 115 KB of symbols,
    181 KB of their names, 403 KB of relocations (17 000, one per pointer in the static
    data) read and applied by ``dlopen``, pages no process touches again. Hidden, the
    calls between compiled functions are direct instead of through the PLT, and the
    relative relocations that remain are packed (``DT_RELR``) into a few KB. Packed
    relocations need glibc >= 2.36 where the library is loaded (the wheel is built for the
    machine or image that builds it), so they are only asked for when the building glibc
    has them. ``PORTWAY_PLAIN_LINK=1`` leaves both out."""
    if os.environ.get("PORTWAY_PLAIN_LINK") == "1" or not sys.platform.startswith("linux"):
        return
    ext.extra_compile_args = [*(ext.extra_compile_args or []), "-fvisibility=hidden"]
    if _glibc() >= (2, 36):
        ext.extra_link_args = [*(ext.extra_link_args or []), "-Wl,-z,pack-relative-relocs"]


def _glibc() -> tuple[int, ...]:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # e.g. "glibc 2.36"
        return tuple(int(x) for x in version.split(".")[:2]) if name == "glibc" else ()
    except (ValueError, OSError, AttributeError):
        return ()


setup(
    # a stand-in so that setuptools runs build_ext and tags the wheel for this platform;
    # MypycBuildExt replaces it with the real extensions (or none)
    ext_modules=[Extension("portway._compiled", sources=[])],
    cmdclass={"build_ext": MypycBuildExt},
)
