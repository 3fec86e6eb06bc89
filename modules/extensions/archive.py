"""Unpacking an extension archive (.zip, .tar, .tar.gz/.bz2/.xz) without letting it reach outside its folder.

Members are written one by one, never with `extractall`: absolute names, `..`, links that point out, device
files and archive bombs (checked against the declared sizes first, then against what is actually written) are
all refused with a UserError naming the entry.
"""

from __future__ import annotations

import os
import re
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from modules.errors import UserError
from modules.extensions.manifest import MANIFEST_NAME, ManifestError

_CHUNK = 1024 * 1024
_MAX_SYMLINK_TARGET = 4096
# Folders macOS's archiver adds next to the real content; skipping them keeps "single top-level folder" true.
_SKIPPED_TOP_LEVEL = frozenset({"__MACOSX"})


def extract(archive: Path, dest: Path, max_bytes: int, max_members: int) -> None:
    """Unpack `archive` into the empty folder `dest`, zip or tar as its first bytes say."""
    limits = _Limits(max_bytes, max_members)
    if _looks_like_zip(archive):
        _extract_zip(archive, dest, limits)
    else:
        _extract_tar(archive, dest, limits)


def manifest_root(unpacked: Path, archive_name: str) -> Path:
    return _manifest_root(unpacked, archive_name)


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents



@dataclass(frozen=True)
class _Limits:
    max_bytes: int
    max_members: int


class _Budget:
    """Counts what has been written so far, so a lying header cannot get past the limits."""

    def __init__(self, limits: _Limits) -> None:
        self.limits = limits
        self.written = 0

    def spend(self, n: int) -> None:
        self.written += n
        if self.written > self.limits.max_bytes:
            raise UserError(f"the archive unpacks to more than {_mb(self.limits.max_bytes)}; refused")


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MB"


def _check_declared(count: int, total: int, limits: _Limits) -> None:
    if count > limits.max_members:
        raise UserError(f"the archive has more than {limits.max_members} entries; refused")
    if total > limits.max_bytes:
        raise UserError(f"the archive unpacks to more than {_mb(limits.max_bytes)}; refused")


def _looks_like_zip(path: Path) -> bool:
    # Sniffed from the first bytes, not `zipfile.is_zipfile`: that looks at the end of the file and can
    # take a tar whose last member is a zip for a zip.
    with path.open("rb") as f:
        return f.read(2) == b"PK"


def _member_path(name: str) -> PurePosixPath | None:
    """The safe relative path for an archive member, None for entries to skip, UserError if unsafe."""
    # Backslashes are separators in archives made on Windows; treating them as such keeps "..\\x" out too.
    cleaned = name.replace("\\", "/")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        raise UserError(f"archive entry {name!r} has control characters in its name")
    if cleaned.startswith("/") or re.match(r"^[A-Za-z]:", cleaned):
        raise UserError(f"archive entry {name!r} has an absolute path; refused")
    parts = [part for part in cleaned.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UserError(f"archive entry {name!r} points outside the archive ('..'); refused")
    if not parts or parts[0] in _SKIPPED_TOP_LEVEL:
        return None
    return PurePosixPath(*parts)


def _prepare(root: Path, rel: PurePosixPath) -> Path:
    """Create the parent folders of `root/rel`, refusing to go through a symlink; return the full path."""
    current = root
    for part in rel.parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise UserError(f"archive entry {rel} would be written through a symbolic link; refused")
        if not current.exists():
            current.mkdir()
        elif not current.is_dir():
            raise UserError(f"archive entry {rel} needs {current.name} to be a folder, but it is a file")
    dest = root / rel
    if dest.is_symlink():
        raise UserError(f"archive entry {rel} would replace a symbolic link; refused")
    return dest


def _make_dir(root: Path, rel: PurePosixPath) -> None:
    dest = _prepare(root, rel)
    if not dest.exists():
        dest.mkdir()
    elif not dest.is_dir():
        raise UserError(f"archive entry {rel} is both a file and a folder")


def _write_file(root: Path, rel: PurePosixPath, src: IO[bytes], executable: bool, budget: _Budget) -> None:
    dest = _prepare(root, rel)
    if dest.is_dir():
        raise UserError(f"archive entry {rel} is both a file and a folder")
    # A repeated entry replaces the earlier one, as tar itself does.
    dest.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(dest, flags, 0o755 if executable else 0o644)
    with os.fdopen(fd, "wb") as out:
        while chunk := src.read(_CHUNK):
            budget.spend(len(chunk))
            out.write(chunk)


def _make_symlink(root: Path, rel: PurePosixPath, target: str) -> None:
    if not target or len(target) > _MAX_SYMLINK_TARGET or "\0" in target:
        raise UserError(f"archive entry {rel} is a symbolic link with an invalid target")
    if target.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", target):
        raise UserError(f"archive entry {rel} is a symbolic link to the absolute path {target}; refused")
    dest = _prepare(root, rel)
    if dest.exists():
        raise UserError(f"archive entry {rel} is a symbolic link over an existing entry; refused")
    resolved = Path(os.path.realpath(dest.parent / target))
    if not _is_within(resolved, Path(os.path.realpath(root))):
        raise UserError(f"archive entry {rel} is a symbolic link to {target}, outside the extension; refused")
    os.symlink(target, dest)


def _copy_hardlink(root: Path, rel: PurePosixPath, link_name: str, budget: _Budget) -> None:
    # A tar hard link names another member; we copy that member's bytes rather than link, so the result
    # is plain files whatever the link pointed at.
    source_rel = _member_path(link_name)
    if source_rel is None:
        raise UserError(f"archive entry {rel} is a hard link to {link_name!r}; refused")
    source = root / source_rel
    real = Path(os.path.realpath(source))
    if source.is_symlink() or not source.is_file() or not _is_within(real, Path(os.path.realpath(root))):
        raise UserError(f"archive entry {rel} is a hard link to {link_name!r}, which is not a file in the archive")
    with source.open("rb") as src:
        _write_file(root, rel, src, os.access(source, os.X_OK), budget)


def _extract_zip(archive: Path, dest: Path, limits: _Limits) -> None:
    budget = _Budget(limits)
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        _check_declared(len(infos), sum(info.file_size for info in infos), limits)
        for info in infos:
            rel = _member_path(info.filename)
            if rel is None:
                continue
            if info.flag_bits & 0x1:
                raise UserError(f"{archive.name} is encrypted; unpack it yourself and install the folder")
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if info.is_dir():
                _make_dir(dest, rel)
            elif kind == stat.S_IFLNK:
                if info.file_size > _MAX_SYMLINK_TARGET:
                    raise UserError(f"archive entry {rel} is a symbolic link with an invalid target")
                _make_symlink(dest, rel, zf.read(info).decode("utf-8", errors="replace"))
            elif kind in (0, stat.S_IFREG):
                try:
                    with zf.open(info) as src:
                        _write_file(dest, rel, src, bool(mode & 0o111), budget)
                except NotImplementedError as e:
                    raise UserError(f"archive entry {rel} uses an unsupported compression: {e}") from None
            else:
                raise UserError(f"archive entry {rel} is a device, pipe or socket; refused")


def _extract_tar(archive: Path, dest: Path, limits: _Limits) -> None:
    budget = _Budget(limits)
    try:
        tf = tarfile.open(archive, mode="r:*")
    except tarfile.ReadError:
        raise UserError(f"{archive.name} is not a .zip or .tar(.gz/.bz2/.xz) archive") from None
    with tf:
        # Headers first, stopping as soon as a limit is crossed, so a bomb is refused before anything is
        # written and before the whole stream is decompressed.
        members: list[tarfile.TarInfo] = []
        total = 0
        for member in tf:
            members.append(member)
            total += member.size if member.isreg() else 0
            _check_declared(len(members), total, limits)
        for member in members:
            rel = _member_path(member.name)
            if rel is None:
                continue
            if member.isdir():
                _make_dir(dest, rel)
            elif member.issym():
                _make_symlink(dest, rel, member.linkname)
            elif member.islnk():
                _copy_hardlink(dest, rel, member.linkname, budget)
            elif member.isreg():
                src = tf.extractfile(member)
                if src is None:
                    raise UserError(f"archive entry {rel} cannot be read")
                with src:
                    _write_file(dest, rel, src, bool(member.mode & 0o111), budget)
            else:
                raise UserError(f"archive entry {rel} is a device, pipe or socket; refused")


def _manifest_root(unpacked: Path, archive_name: str) -> Path:
    """The folder holding extension.toml: the archive root, or its single top-level folder."""
    if (unpacked / MANIFEST_NAME).is_file():
        return unpacked
    entries = list(unpacked.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        if (entries[0] / MANIFEST_NAME).is_file():
            return entries[0]
    raise ManifestError(
        f"{archive_name}: no {MANIFEST_NAME} at the top of the archive or inside a single top-level folder"
    )
