"""Keep pydantic from scanning the installed distributions for its plugins.

The first model pydantic builds imports ``pydantic.plugin._loader``, which imports
``importlib.metadata`` (and with it ``email``, ``csv``, ``zipfile``) and then reads the
metadata of every installed distribution looking for the ``pydantic`` entry-point group — even
with ``PYDANTIC_DISABLE_PLUGINS`` set (that variable is read after the import). In a worker
that is ~1 MB of RSS and tens of milliseconds of start-up for nothing: Portway's config models
are not instrumented by pydantic plugins (observability SDKs that hook model validation).

:func:`skip_pydantic_plugins` puts a stand-in for that module in ``sys.modules`` whose
``get_plugins`` returns no plugins, which is what pydantic does itself when
``PYDANTIC_DISABLE_PLUGINS=__all__``. It does nothing when the real loader is already imported
(a model was built earlier: the scan already happened) or when ``PORTWAY_PYDANTIC_PLUGINS=1``
asks for pydantic's own behaviour. The only consumer of the module inside pydantic
(2.x) is ``pydantic.plugin._schema_validator.create_schema_validator``, which imports
``get_plugins`` from it at call time.
"""

from __future__ import annotations

import os
import sys
import types
from collections.abc import Iterable

LOADER = "pydantic.plugin._loader"


def _no_plugins() -> Iterable[object]:
    return ()


def skip_pydantic_plugins() -> bool:
    """Install the stand-in loader; True when it is (now or already) the one in use."""
    current = sys.modules.get(LOADER)
    if current is not None:
        return getattr(current, "get_plugins", None) is _no_plugins
    if os.environ.get("PORTWAY_PYDANTIC_PLUGINS") == "1":
        return False
    stub = types.ModuleType(LOADER, "Portway's stand-in: no pydantic plugins.")
    setattr(stub, "get_plugins", _no_plugins)  # noqa: B010 (a module object has no such field)
    sys.modules[LOADER] = stub
    return True
