"""The one model-folder registry: model kinds, their folders, scans, lookups and A1111-compatible hashes.

Importing this package reads nothing from disk; build a `ModelRegistry(core_kinds(paths), HashCache(...))`
at startup and hand it around.
"""

from modules.model_registry.hashes import HashCache, file_sha256, legacy_hash, shorthash
from modules.model_registry.kinds import ModelKind, ModelPaths, core_kinds
from modules.model_registry.registry import ModelFile, ModelRegistry, UnknownModelKind, scan_kind

__all__ = [
    "HashCache",
    "ModelFile",
    "ModelKind",
    "ModelPaths",
    "ModelRegistry",
    "UnknownModelKind",
    "core_kinds",
    "file_sha256",
    "legacy_hash",
    "scan_kind",
    "shorthash",
]
