"""Finding extensions on disk and loading each one in isolation.

Built-in extensions ship in the repo's `extensions/`; user extensions live in `<data-dir>/extensions/`. Each
is imported under its own package name, its `register(api)` is called, and any exception (import error,
missing dependency, a bug in register) is caught and recorded with its traceback. The app goes on without it.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import logging
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from modules.extensions.api import ExtensionAPI
from modules.extensions.manifest import Manifest, ManifestError, read_manifest

log = logging.getLogger(__name__)

State = Literal["loaded", "failed", "disabled", "pending"]


@dataclass
class ExtensionRecord:
    """One extension folder and what became of it at this start."""

    id: str
    folder: Path
    builtin: bool
    manifest: Manifest | None
    state: State = "pending"
    error: str | None = None
    traceback: str | None = None
    load_ms: float = 0.0
    api: ExtensionAPI | None = None

    @property
    def name(self) -> str:
        return self.manifest.name if self.manifest else self.folder.name

    def fail(self, message: str, tb: str | None = None) -> None:
        if self.state != "failed":
            log.error("extension %s failed: %s%s", self.id, message, f"\n{tb}" if tb else "")
            self.state, self.error, self.traceback = "failed", message, tb

    def to_json(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id,
            "name": self.name,
            "version": m.version if m else None,
            "description": m.description if m else "",
            "builtin": self.builtin,
            "folder": self.folder.name,
            "state": self.state,
            "enabled": self.state != "disabled",
            "error": self.error,
            "traceback": self.traceback,
            "load_ms": round(self.load_ms, 1),
        }


def discover(roots: Sequence[Path], is_builtin: Callable[[Path], bool]) -> list[ExtensionRecord]:
    """Every extension folder under `roots`, in root order, each root sorted by name.

    A root may appear twice (the data dir defaults to the repo, whose `extensions/` also holds the built-ins);
    each folder is read once.
    """
    records: list[ExtensionRecord] = []
    seen_ids: dict[str, ExtensionRecord] = {}
    seen_folders: set[Path] = set()
    for root in roots:
        for folder in _candidate_folders(root):
            if folder.resolve() in seen_folders:
                continue
            seen_folders.add(folder.resolve())
            record = _record_for(folder, is_builtin(folder))
            if record.id in seen_ids:
                record.fail(f"id '{record.id}' is already used by {seen_ids[record.id].folder}; this copy is not loaded")
            else:
                seen_ids[record.id] = record
            records.append(record)
    return records


def _candidate_folders(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    return sorted(
        (p for p in root.iterdir()
         if p.is_dir() and not p.name.startswith((".", "_")) and not p.name.endswith(".disabled")),
        key=lambda p: p.name.lower(),
    )


def _record_for(folder: Path, builtin: bool) -> ExtensionRecord:
    try:
        manifest = read_manifest(folder)
    except ManifestError as e:
        record = ExtensionRecord(id=folder.name, folder=folder, builtin=builtin, manifest=None)
        record.fail(e.message)
        return record
    return ExtensionRecord(id=manifest.id, folder=folder, builtin=builtin, manifest=manifest)


def load_all(records: Sequence[ExtensionRecord], disabled: Iterable[str], disable_all: bool,
             make_api: Callable[[ExtensionRecord], ExtensionAPI]) -> None:
    """Import and register every enabled extension, dependencies first. Never raises."""
    disabled = set(disabled)
    for record in records:
        if record.state == "pending" and (disable_all or record.id in disabled):
            record.state = "disabled"
    by_id = {r.id: r for r in records if r.state != "failed" or r.manifest is not None}
    for record in _dependency_order(records):
        if record.state != "pending":
            continue
        missing = _unmet_requirements(record, by_id)
        if missing:
            record.fail(f"requires {', '.join(missing)}, which is not installed, enabled or loaded")
            continue
        _load_one(record, make_api)


def _dependency_order(records: Sequence[ExtensionRecord]) -> list[ExtensionRecord]:
    by_id = {r.id: r for r in records}
    ordered: list[ExtensionRecord] = []
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(record: ExtensionRecord) -> None:
        if record.id in done:
            return
        if record.id in visiting:
            record.fail("its 'requires' form a cycle")
            return
        visiting.add(record.id)
        for dep in record.manifest.requires if record.manifest else ():
            if dep in by_id:
                visit(by_id[dep])
        visiting.discard(record.id)
        done.add(record.id)
        ordered.append(record)

    for record in records:
        visit(record)
    return ordered


def _unmet_requirements(record: ExtensionRecord, by_id: dict[str, ExtensionRecord]) -> list[str]:
    requires = record.manifest.requires if record.manifest else ()
    return [dep for dep in requires if dep not in by_id or by_id[dep].state != "loaded"]


def _load_one(record: ExtensionRecord, make_api: Callable[[ExtensionRecord], ExtensionAPI]) -> None:
    assert record.manifest is not None
    started = time.perf_counter()
    package = _package_name(record.id)
    try:
        register = _import_entry(record.folder, package, record.manifest)
        api = make_api(record)
        register(api)
    except BaseException as e:  # noqa: BLE001 - an extension may raise anything, SystemExit included
        _forget_modules(package)
        record.fail(_describe(e), traceback.format_exc())
    else:
        record.api = api
        record.state = "loaded"
    record.load_ms = (time.perf_counter() - started) * 1000


def _package_name(extension_id: str) -> str:
    return f"sdstudio_ext_{extension_id.replace('-', '_')}"


def _import_entry(folder: Path, package: str, manifest: Manifest) -> Callable[[ExtensionAPI], Any]:
    """Import the extension folder as package `package`, then its entry module, and return the function."""
    _forget_modules(package)  # a copy loaded earlier from another folder must not answer for this one
    init = folder / "__init__.py"
    if init.is_file():
        spec = importlib.util.spec_from_file_location(package, init, submodule_search_locations=[str(folder)])
    else:
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[package] = module
    if spec.loader is not None:
        spec.loader.exec_module(module)
    entry = importlib.import_module(f"{package}.{manifest.entry_module}")
    register = getattr(entry, manifest.entry_function, None)
    if not callable(register):
        raise ManifestError(f"entry point {manifest.entry} is not a function in {folder}")
    return register


def _forget_modules(package: str) -> None:
    # A half-imported extension must not leave modules behind that a retry or another extension would see.
    for name in [n for n in sys.modules if n == package or n.startswith(package + ".")]:
        del sys.modules[name]


def _describe(e: BaseException) -> str:
    if isinstance(e, ModuleNotFoundError):
        return (f"needs the Python package '{e.name}', which is not installed; reinstall the extension "
                f"(its pip requirements are installed at install time) or pip install it")
    return f"{type(e).__name__}: {e}"
