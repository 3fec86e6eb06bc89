"""Model hashes as A1111 computes them, with a persistent cache so a 7 GB checkpoint is read once, not at
every start.

- Full hash: sha256 of the whole file; its first 10 hex digits are the "shorthash" that A1111 shows in
  checkpoint titles and writes as `Model hash` in infotext.
- Legacy hash: the 8-hex hash of A1111 before v1.0, kept only so old infotext still finds its model.
- Folder hash (diffusers layout, our own convention since A1111 has none): sha256 of the concatenated hex
  sha256 digests of the folder's weight files, taken in order of their "/"-separated relative paths.
  Hidden files are left out, so a `.cache/` folder left by a download does not change the hash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import threading
from pathlib import Path
from typing import Any

from modules import atomic

log = logging.getLogger(__name__)

CHUNK_SIZE = 1024 * 1024
LEGACY_OFFSET = 0x100000
LEGACY_LENGTH = 0x10000
SHORTHASH_LENGTH = 10
# Files inside a diffusers folder that hold weights, as opposed to configs and tokenizer files.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".onnx", ".gguf", ".msgpack")


def file_sha256(path: Path) -> str:
    """sha256 hex digest of the whole file, read in 1 MiB chunks, with no cache."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def shorthash(sha: str) -> str:
    """A1111's short model hash: the first 10 hex digits of the full sha256."""
    return sha[:SHORTHASH_LENGTH]


def legacy_hash(path: Path) -> str:
    """A1111's legacy 8-hex model hash: sha256 of the 64 KiB at offset 1 MiB.

    Like A1111, a shorter file is hashed on whatever lies past the offset, which for a file under 1 MiB is
    nothing at all (so all such files share "e3b0c442"). Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        f.seek(LEGACY_OFFSET)
        data = f.read(LEGACY_LENGTH)
    return hashlib.sha256(data).hexdigest()[:8]


def tree_files(folder: Path) -> list[tuple[str, Path]]:
    """Every non-hidden file under `folder` as ("a/b.bin", path), sorted by relative path.

    Symlinks are followed, but a folder already visited (a symlink cycle) is not entered twice.
    Unreadable subfolders are skipped with a warning.
    """
    found: list[tuple[str, Path]] = []
    visited: set[tuple[int, int]] = set()
    stack: list[tuple[Path, str]] = [(folder, "")]
    while stack:
        current, prefix = stack.pop()
        try:
            st = current.stat()
            if (st.st_dev, st.st_ino) in visited:
                continue
            visited.add((st.st_dev, st.st_ino))
            entries = list(os.scandir(current))
        except OSError as e:
            log.warning("skipping unreadable folder %s: %s", current, e)
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                mode = os.stat(path).st_mode
            except OSError:
                continue  # a broken symlink or a link loop is not a file
            if stat.S_ISDIR(mode):
                stack.append((path, f"{prefix}{entry.name}/"))
            elif stat.S_ISREG(mode):
                found.append((f"{prefix}{entry.name}", path))
    found.sort(key=lambda item: item[0])
    return found


def weight_files(folder: Path) -> list[tuple[str, Path]]:
    """The weight files of a diffusers folder, in the order the folder hash uses."""
    return [(rel, path) for rel, path in tree_files(folder) if rel.lower().endswith(WEIGHT_SUFFIXES)]


class HashCache:
    """sha256 of model files, kept in a JSON file keyed by real path with the size and mtime_ns it was
    computed for.

    A file is hashed again only when its size or mtime changed. The cache is loaded on first use; a corrupt
    file is logged, ignored and overwritten. With `path=None` the cache lives in memory only. Safe to use
    from several threads: lookups never wait for another file's hashing, and two threads asking for the
    same file hash it once.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._entries: dict[str, dict[str, Any]] = {}
        self._loaded = False
        self._lock = threading.RLock()
        # One lock per file being hashed, so a second caller waits for the first instead of reading the
        # same gigabytes again.
        self._file_locks: dict[str, threading.Lock] = {}

    @property
    def path(self) -> Path | None:
        """The JSON file the cache persists to; None for a memory-only cache."""
        return self._path

    def cached(self, file: Path) -> str | None:
        """The cached sha256 of `file` if it is still valid, else None; never reads file contents."""
        try:
            key, size, mtime_ns = _identify(file)
        except OSError:
            return None
        with self._lock:
            self._ensure_loaded()
            return self._lookup(key, size, mtime_ns)

    def sha256(self, file: Path) -> str:
        """Full sha256 hex digest of `file`, from the cache when size and mtime are unchanged.

        Raises OSError when the file cannot be read.
        """
        key, size, mtime_ns = _identify(file)
        with self._lock:
            self._ensure_loaded()
            hit = self._lookup(key, size, mtime_ns)
            if hit is not None:
                return hit
            file_lock = self._file_locks.setdefault(key, threading.Lock())
        with file_lock:
            # Another thread may have finished this file while we waited.
            key, size, mtime_ns = _identify(file)
            with self._lock:
                hit = self._lookup(key, size, mtime_ns)
            if hit is not None:
                return hit
            log.info("computing sha256 of %s", file)
            # The stat taken before reading goes into the entry: a file still being written gets a newer
            # mtime afterwards, so its half-read hash is never trusted again.
            digest = file_sha256(file)
            with self._lock:
                self._entries[key] = {"size": size, "mtime_ns": mtime_ns, "sha256": digest}
                self._save_locked()
            return digest

    def folder_sha256(self, folder: Path) -> str:
        """Hash of a diffusers folder: sha256 of its weight files' sha256 digests, concatenated in order
        of relative path (see the module docstring). Each weight file's hash comes from the cache."""
        digests = "".join(self.sha256(path) for _, path in weight_files(folder))
        return hashlib.sha256(digests.encode("ascii")).hexdigest()

    def cached_folder(self, folder: Path) -> str | None:
        """`folder_sha256` if every weight file's hash is cached and valid, else None."""
        digests: list[str] = []
        for _, path in weight_files(folder):
            digest = self.cached(path)
            if digest is None:
                return None
            digests.append(digest)
        return hashlib.sha256("".join(digests).encode("ascii")).hexdigest()

    # -- persistence ---------------------------------------------------------------------------------------

    def _lookup(self, key: str, size: int, mtime_ns: int) -> str | None:
        entry = self._entries.get(key)
        if entry is None or entry["size"] != size or entry["mtime_ns"] != mtime_ns:
            return None
        return str(entry["sha256"])

    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        if self._path is None:
            return
        try:
            raw = json.loads(self._path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("the top level is not a JSON object")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError, ValueError) as e:
            log.warning("hash cache %s is unreadable (%s); starting with an empty cache", self._path, e)
            self._save_locked()
            return
        self._entries = {key: value for key, value in raw.items() if _is_valid_entry(value)}
        dropped = len(raw) - len(self._entries)
        if dropped:
            log.warning("hash cache %s: ignored %d malformed entries", self._path, dropped)
            self._save_locked()

    def _save_locked(self) -> None:
        if self._path is None:
            return
        try:
            atomic.write_json(self._path, self._entries)
        except OSError as e:
            # The hashes stay valid in memory; losing the file only costs a re-hash at the next start.
            log.warning("could not save hash cache %s: %s", self._path, e)


def _identify(file: Path) -> tuple[str, int, int]:
    """Cache key (real path, so a checkpoint linked into two folders is hashed once), size and mtime_ns."""
    st = file.stat()
    return str(file.resolve()), st.st_size, st.st_mtime_ns


def _is_valid_entry(value: object) -> bool:
    if not isinstance(value, dict):
        return False
    sha = value.get("sha256")
    return (
        isinstance(value.get("size"), int)
        and isinstance(value.get("mtime_ns"), int)
        and isinstance(sha, str)
        and len(sha) == 64
        and all(c in "0123456789abcdef" for c in sha)
    )
