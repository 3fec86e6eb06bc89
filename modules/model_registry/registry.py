"""The one model-folder registry: every kind of model, where it lives, what is there, and its hash.

Scans are cached per kind and redone only on `refresh`, the way A1111's "refresh" buttons work. Lookups
accept everything A1111's checkpoint lookup accepts, so names from old infotext and API clients still work.
"""

from __future__ import annotations

import builtins
import logging
import os
import re
import stat
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from modules.errors import NotFound
from modules.model_registry.hashes import HashCache, legacy_hash, shorthash, tree_files, weight_files
from modules.model_registry.kinds import MODEL_DIR_MARKERS, ModelKind, is_ignored_name

log = logging.getLogger(__name__)

# "name [hash]": A1111 titles; the bracket may hold a shorthash, a legacy hash or anything stale.
_TITLE_RE = re.compile(r"(.*?)\s*\[([^\]]*)\]")
_HASH_RE = re.compile(r"[0-9a-f]{8,64}")


class UnknownModelKind(NotFound, KeyError):
    """A kind name that nobody registered. A KeyError for callers, a 404 for the API."""

    def __init__(self, name: str, valid: Iterable[str]) -> None:
        super().__init__(f"unknown model kind '{name}'; valid kinds: {', '.join(valid) or '(none)'}")

    def __str__(self) -> str:
        # KeyError would show the repr of the message, quotes and all.
        return self.message


@dataclass(frozen=True)
class ModelFile:
    """One model found on disk.

    Attributes:
        kind: Name of the kind it was found for.
        name: Path relative to the kind's folder without the model extension, "/"-separated
            ("sdxl/juggernaut"). A diffusers folder keeps its whole relative path.
        filename: Absolute path of the file or folder (symlinks not resolved).
        size: Bytes; for a folder, the sum of the files in it.
        mtime: Seconds since the epoch; for a folder, the newest of its files.
        is_dir: True for a diffusers folder model.
    """

    kind: str
    name: str
    filename: Path
    size: int
    mtime: float
    is_dir: bool = False

    @property
    def relative_filename(self) -> str:
        """The name with its extension ("sdxl/juggernaut.safetensors"), which is A1111's checkpoint name."""
        if self.is_dir:
            return self.name
        return self.name + self.filename.name[len(self.basename):]

    @property
    def basename(self) -> str:
        """Last part of the name, without folders or extension ("juggernaut")."""
        return self.name.rsplit("/", 1)[-1]


class ModelRegistry:
    """All model kinds, their cached scans and hashes. Safe to call from several threads.

    Args:
        kinds: Kinds to register at once (usually `core_kinds(paths)`).
        hash_cache: Where sha256 digests persist; an in-memory cache when None.
        hashing_enabled: False mirrors A1111's --no-hashing: file contents are then never read, titles are
            plain names and hashes never match.
    """

    def __init__(
        self, kinds: Iterable[ModelKind] = (), hash_cache: HashCache | None = None, hashing_enabled: bool = True
    ) -> None:
        self._hashes = hash_cache if hash_cache is not None else HashCache(None)
        self._hashing_enabled = hashing_enabled
        self._lock = threading.RLock()
        self._kinds: dict[str, ModelKind] = {}
        self._scans: dict[str, tuple[ModelFile, ...]] = {}
        # One lock per kind, held while scanning it: a slow network folder for one kind never blocks
        # lookups in another, and two refreshes of one kind cannot store their results out of order.
        self._scan_locks: dict[str, threading.Lock] = {}
        for kind in kinds:
            self.add_kind(kind)

    @property
    def hashing_enabled(self) -> bool:
        """False when the app runs with --no-hashing."""
        return self._hashing_enabled

    # -- kinds ---------------------------------------------------------------------------------------------

    def add_kind(self, kind: ModelKind) -> None:
        """Register a kind. Raises ValueError if the name is taken, so no one replaces a kind silently."""
        with self._lock:
            existing = self._kinds.get(kind.name)
            if existing is not None:
                raise ValueError(
                    f"model kind '{kind.name}' is already registered by '{existing.owner}'; "
                    f"'{kind.owner}' cannot register it again"
                )
            self._kinds[kind.name] = kind
            self._scan_locks[kind.name] = threading.Lock()

    def kinds(self) -> builtins.list[ModelKind]:
        """Registered kinds, in registration order."""
        with self._lock:
            return builtins.list(self._kinds.values())

    def kind(self, kind_name: str) -> ModelKind:
        """The kind called `kind_name`; raises UnknownModelKind (a KeyError) naming the valid kinds."""
        with self._lock:
            kind = self._kinds.get(kind_name)
            if kind is None:
                raise UnknownModelKind(kind_name, self._kinds)
            return kind

    # -- scanning ------------------------------------------------------------------------------------------

    def refresh(self, kind_name: str | None = None) -> builtins.list[ModelFile]:
        """Rescan one kind (or all kinds, in registration order) and return what was found."""
        kinds = [self.kind(kind_name)] if kind_name is not None else self.kinds()
        found: builtins.list[ModelFile] = []
        for kind in kinds:
            with self._scan_lock(kind.name):
                found.extend(self._scan_and_store(kind))
        return found

    def list(self, kind_name: str) -> builtins.list[ModelFile]:
        """Models of one kind, sorted case-insensitively by name; scanned on the first call only."""
        kind = self.kind(kind_name)
        with self._lock:
            cached = self._scans.get(kind_name)
        if cached is not None:
            return builtins.list(cached)
        with self._scan_lock(kind_name):
            with self._lock:
                cached = self._scans.get(kind_name)
            if cached is not None:
                return builtins.list(cached)
            return self._scan_and_store(kind)

    def _scan_lock(self, kind_name: str) -> threading.Lock:
        with self._lock:
            return self._scan_locks[kind_name]

    def _scan_and_store(self, kind: ModelKind) -> builtins.list[ModelFile]:
        models = scan_kind(kind)
        with self._lock:
            self._scans[kind.name] = tuple(models)
        return models

    # -- lookup --------------------------------------------------------------------------------------------

    def find(self, kind_name: str, query: str, *, compute_hashes: bool = True) -> ModelFile | None:
        """The model that `query` names, or None.

        `query` may be anything A1111's checkpoint lookup accepts: the name ("sdxl/juggernaut"), the file
        name with or without folders ("sdxl/juggernaut.safetensors", "juggernaut.safetensors",
        "juggernaut"), A1111's `model_name` ("sdxl_juggernaut"), the absolute path, a title
        ("name [hash]", ours or A1111's with the extension), or a hash: the 10-hex shorthash, the full
        sha256 or any prefix of at least 8 hex digits, or the legacy 8-hex hash. Exact matches win over
        case-insensitive ones. Hashes are compared from the cache first; with `compute_hashes` the missing
        ones are then computed (slow the first time: the whole file is read), unless hashing is disabled.
        """
        models = self.list(kind_name)
        text = query.strip().replace("\\", "/")
        if not text:
            return None
        hit = _match_name(models, text)
        if hit is not None:
            return hit
        title = _TITLE_RE.fullmatch(text)
        if title is not None:
            hit = _match_name(models, title.group(1))
            if hit is not None:
                return hit
            text = title.group(2).strip()
        if _HASH_RE.fullmatch(text.lower()):
            return self._match_hash(models, text.lower(), compute_hashes)
        return None

    def _match_hash(self, models: builtins.list[ModelFile], digest: str, compute: bool) -> ModelFile | None:
        if not self._hashing_enabled:
            return None
        for model in models:
            sha = self._cached_sha256(model)
            if sha is not None and sha.startswith(digest):
                return model
        if not compute:
            return None
        if len(digest) == 8:
            # The legacy hash reads only 64 KiB per file, so try it before any full hash.
            for model in models:
                if not model.is_dir and self._legacy_hash(model) == digest:
                    return model
        for model in models:
            sha = self.sha256(model)
            if sha is not None and sha.startswith(digest):
                return model
        return None

    # -- hashes --------------------------------------------------------------------------------------------

    def sha256(self, model: ModelFile) -> str | None:
        """Full sha256 (computed once, then cached); None when hashing is disabled or the file is gone.

        A diffusers folder gets the folder hash described in `modules.model_registry.hashes`.
        """
        if not self._hashing_enabled:
            return None
        try:
            if model.is_dir:
                return self._hashes.folder_sha256(model.filename)
            return self._hashes.sha256(model.filename)
        except OSError as e:
            log.warning("cannot hash %s: %s", model.filename, e)
            return None

    def file_shorthash(self, path: Path) -> str | None:
        """A1111's 10-hex hash of any file (e.g. a VAE beside a checkpoint), through the same cache."""
        if not self._hashing_enabled:
            return None
        try:
            return shorthash(self._hashes.sha256(path))
        except OSError as e:
            log.warning("cannot hash %s: %s", path, e)
            return None

    def shorthash(self, model: ModelFile, *, compute: bool = True) -> str | None:
        """A1111's 10-hex model hash, or None (hashing disabled, unreadable, or not cached and not
        `compute`)."""
        sha = self.sha256(model) if compute else self._cached_sha256(model)
        return shorthash(sha) if sha is not None else None

    def title(self, model: ModelFile, *, compute: bool = True) -> str:
        """A1111's title: the file name relative to its folder, extension included, then `[shorthash]`
        (`"sdxl/juggernaut.safetensors [6ce0161689]"`), or without the hash when none is available.

        Computing a hash reads the whole file once; a UI listing many models it has not hashed yet can
        pass `compute=False` to use cached hashes only, as A1111's checkpoint dropdown does.
        """
        short = self.shorthash(model, compute=compute)
        return f"{model.relative_filename} [{short}]" if short is not None else model.relative_filename

    def _cached_sha256(self, model: ModelFile) -> str | None:
        if not self._hashing_enabled:
            return None
        if model.is_dir:
            return self._hashes.cached_folder(model.filename)
        return self._hashes.cached(model.filename)

    def _legacy_hash(self, model: ModelFile) -> str | None:
        try:
            return legacy_hash(model.filename)
        except OSError as e:
            log.warning("cannot hash %s: %s", model.filename, e)
            return None


# -- scanning (no state: a scan is a pure function of the kind and the disk) ------------------------------


def scan_kind(kind: ModelKind) -> list[ModelFile]:
    """Every model of `kind` on disk, sorted case-insensitively by name.

    When two folders hold the same name the first folder wins and the other is logged. A folder reached
    twice (a symlink cycle, or two links to one folder) is scanned once.
    """
    by_name: dict[str, ModelFile] = {}
    visited: set[tuple[int, int]] = set()
    for root in kind.folders:
        for model in _scan_folder(kind, root, visited):
            first = by_name.setdefault(model.name, model)
            if first is not model:
                log.warning("%s model '%s': %s is hidden by %s", kind.name, model.name, model.filename, first.filename)
    return sorted(by_name.values(), key=lambda m: (m.name.casefold(), m.name))


def _scan_folder(kind: ModelKind, root: Path, visited: set[tuple[int, int]]) -> list[ModelFile]:
    if not root.is_dir():
        log.debug("%s folder %s does not exist", kind.name, root)
        return []
    found: list[ModelFile] = []
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        entries = _enter(folder, visited)
        for entry in entries:
            if is_ignored_name(entry.name):
                continue
            path = Path(entry.path)
            try:
                st = os.stat(path)  # follows symlinks, so a linked checkpoint is listed like a real one
            except OSError as e:
                log.debug("skipping %s: %s", path, e)  # a broken link, or a link pointing at itself
                continue
            relative = prefix + entry.name
            if stat.S_ISDIR(st.st_mode):
                if kind.is_excluded(entry.name):
                    continue  # an excluded folder is not entered either (ControlNet's annotators/)
                if kind.allow_dirs and _is_model_dir(path):
                    if _mark_visited(st, visited):
                        found.append(_dir_model(kind, relative, path, st.st_mtime))
                else:
                    stack.append((path, relative + "/"))
            elif stat.S_ISREG(st.st_mode):
                ext = kind.model_extension(entry.name)
                if ext is not None and not kind.is_excluded(entry.name):
                    found.append(ModelFile(kind.name, relative[: -len(ext)], path, st.st_size, st.st_mtime))
    return found


def _enter(folder: Path, visited: set[tuple[int, int]]) -> list[os.DirEntry[str]]:
    """The entries of `folder`, or none if it was seen already or cannot be read."""
    try:
        if not _mark_visited(folder.stat(), visited):
            log.debug("not entering %s again (symlink loop or second link)", folder)
            return []
        with os.scandir(folder) as it:
            return builtins.list(it)
    except OSError as e:
        log.warning("skipping unreadable model folder %s: %s", folder, e)
        return []


def _mark_visited(st: os.stat_result, visited: set[tuple[int, int]]) -> bool:
    key = (st.st_dev, st.st_ino)
    if key in visited:
        return False
    visited.add(key)
    return True


def _is_model_dir(path: Path) -> bool:
    # A weightless folder of configs is not a model: it is the A1111-style override folder that sits beside
    # a checkpoint of the same name (`tiny.safetensors` + `tiny/`), and listing it would hide that file.
    return any((path / marker).is_file() for marker in MODEL_DIR_MARKERS) and bool(weight_files(path))


def _dir_model(kind: ModelKind, relative: str, path: Path, mtime: float) -> ModelFile:
    size = 0
    for _, file in tree_files(path):
        try:
            st = file.stat()
        except OSError:
            continue
        size += st.st_size
        mtime = max(mtime, st.st_mtime)
    return ModelFile(kind.name, relative, path, size, mtime, is_dir=True)


def _match_name(models: list[ModelFile], text: str) -> ModelFile | None:
    """First model that `text` names exactly, then case-insensitively; tiers in order of precedence."""
    keys: tuple[Callable[[ModelFile], str], ...] = (
        lambda m: m.name,
        lambda m: m.relative_filename,
        lambda m: m.filename.as_posix(),  # the query's backslashes are already turned into "/"
        lambda m: m.name.replace("/", "_"),  # A1111's model_name, written as "Model:" in infotext
        lambda m: m.filename.name,
        lambda m: m.basename,
    )
    for fold in (False, True):
        wanted = text.casefold() if fold else text
        for key in keys:
            for model in models:
                value = key(model)
                if (value.casefold() if fold else value) == wanted:
                    return model
    return None
