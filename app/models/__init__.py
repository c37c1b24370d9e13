"""SQLModel tables, one module per aggregate. Importing this registers them all
on ``SQLModel.metadata`` (Alembic and tests rely on that)."""

import importlib
import pkgutil

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base":
        importlib.import_module(f"{__name__}.{_mod.name}")
