"""Imports `extensions/sadtalker/talking_head` for the tests.

The extension loader imports an extension folder as a package of its own name; the tests do the same for the
`talking_head` folder alone (under a private name), so its relative imports work without the rest of the
extension existing yet.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "extensions" / "sadtalker" / "talking_head"
PACKAGE = "sdstudio_sadtalker_talking_head"


def _load() -> ModuleType:
    if PACKAGE in sys.modules:
        return sys.modules[PACKAGE]
    spec = importlib.util.spec_from_file_location(
        PACKAGE, PACKAGE_DIR / "__init__.py", submodule_search_locations=[str(PACKAGE_DIR)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[PACKAGE] = module
    spec.loader.exec_module(module)
    return module


def submodule(name: str) -> ModuleType:
    """`talking_head.<name>`, e.g. submodule("weights") or submodule("nets.generator")."""
    _load()
    return importlib.import_module(f"{PACKAGE}.{name}")
