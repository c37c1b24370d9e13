"""Handler modules. Every module here that defines ``router`` is included.

Discovery walks this package only (module names come from our own files, never
from client input), so adding a module is all it takes to add packages.
"""

from __future__ import annotations

import importlib
import pkgutil

from app.routing import PackageRouter


def build_router() -> PackageRouter:
    root = PackageRouter()
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        sub = getattr(module, "router", None)
        if isinstance(sub, PackageRouter):
            root.include(sub)
    return root
