"""Installing, updating and removing user extensions (the backend of the Extensions tab).

Every install takes the same road: unpack the source into a fresh staging folder under `tmp_dir`, read and
validate its `extension.toml`, install its pip requirements, then rename the folder into `extensions_dir`.
Whatever fails on the way, the staging folder is removed and `extensions_dir` is left as it was, so the
loader never sees a half-installed extension.

Who may install (e.g. refusing when the app is shared on the LAN) is decided by the caller, not here.
Extensions are trusted code once installed; what this module guards against is a *source* that reaches
outside its own folder while being unpacked (zip-slip, escaping symlinks, device files, archive bombs) and a
URL that smuggles options into git.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modules.errors import NotFound, UserError
from modules.extensions import archive as archive_mod
from modules.extensions import git as gitcmd
from modules.extensions.manifest import MANIFEST_NAME, Manifest, ManifestError, read_manifest

logger = logging.getLogger(__name__)

PipRunner = Callable[[list[str]], None]

DEFAULT_MAX_ARCHIVE_BYTES = 500 * 1024 * 1024
DEFAULT_MAX_ARCHIVE_MEMBERS = 20_000
DEFAULT_GIT_TIMEOUT_S = 300.0
PIP_TIMEOUT_S = 1800.0
_PIP_TAIL_LINES = 20
# A folder name we create ourselves: one path component, no leading dot (dot-names are our temp folders).
_FOLDER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class UpdateStatus:
    """Where a git-based extension stands against its upstream branch.

    `current` and `remote` are short shas of HEAD and of the upstream branch, `upstream` names that branch
    ("origin/main"), `url` is the remote's address with credentials masked, and `message` is ready to show
    ("latest", "3 new commits", "not a git repository").
    """

    is_git: bool
    behind: int = 0
    current: str = ""
    remote: str = ""
    branch: str = ""
    upstream: str = ""
    url: str = ""
    message: str = ""

    @property
    def has_update(self) -> bool:
        """True when the upstream branch has commits that HEAD lacks."""
        return self.behind > 0


def run_pip(requirements: list[str], timeout_s: float = PIP_TIMEOUT_S) -> None:
    """Install `requirements` into the running interpreter's environment with pip.

    Raises UserError with pip's last output lines if pip fails or runs past `timeout_s`.
    """
    # "--" because requirements come from a manifest; it already refuses options, this makes sure of it.
    argv = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--no-input", "--", *requirements]
    logger.info("pip install %s", " ".join(requirements))
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            timeout=timeout_s,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise UserError(f"pip install did not finish within {timeout_s:.0f} s and was stopped") from None
    if proc.returncode != 0:
        lines = [line for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
        detail = gitcmd.redact("\n".join(lines[-_PIP_TAIL_LINES:]))
        raise UserError(f"pip could not install {', '.join(requirements)}:\n{detail}")


class ExtensionInstaller:
    """Installs user extensions into `extensions_dir`, staging them under `tmp_dir`.

    Keep `tmp_dir` on the same disk as `extensions_dir` so the final move is an atomic rename; on another
    disk the installer falls back to copying into a hidden temporary name inside `extensions_dir` first.
    """

    def __init__(
        self,
        extensions_dir: Path,
        tmp_dir: Path,
        pip_runner: PipRunner | None = None,
        *,
        max_archive_bytes: int = DEFAULT_MAX_ARCHIVE_BYTES,
        max_archive_members: int = DEFAULT_MAX_ARCHIVE_MEMBERS,
        git_timeout_s: float = DEFAULT_GIT_TIMEOUT_S,
    ) -> None:
        self.extensions_dir = Path(extensions_dir).absolute()
        self.tmp_dir = Path(tmp_dir).absolute()
        self._pip_runner: PipRunner = pip_runner or run_pip
        self._max_archive_bytes = max_archive_bytes
        self._max_archive_members = max_archive_members
        self._git = gitcmd.Git()
        self._git_timeout_s = git_timeout_s
        # One install/update/uninstall at a time: two requests for the same id must not both pass the
        # "already installed" check, and two pip runs must not write into one environment at once.
        self._lock = threading.Lock()

    # -- installing ----------------------------------------------------------------------------------

    def install_from_git(self, url: str, branch: str | None = None, folder_name: str | None = None) -> Manifest:
        """Shallow-clone a repository (optionally one branch or tag) and install it; return its manifest."""
        clean_url = gitcmd.validate_url(url)
        clean_branch = gitcmd.validate_branch(branch) if branch else None
        if folder_name is not None:
            self._refuse_existing(_validate_folder_name(folder_name))
        with self._staging() as stage:
            repo = stage / "repo"
            logger.info("cloning %s%s", gitcmd.redact(clean_url), f" (branch {clean_branch})" if clean_branch else "")
            gitcmd.clone(self._git, clean_url, repo, clean_branch, self._git_timeout_s)
            check_tree(repo)
            return self._install_staged(repo, folder_name, gitcmd.redact(clean_url))

    def install_from_folder(self, path: Path) -> Manifest:
        """Copy a local extension folder (its `.git` included, so updates keep working) and install it."""
        try:
            source = Path(path).expanduser().absolute()
            is_folder = source.is_dir()
        except (OSError, RuntimeError):  # `~nosuchuser`, or a name too long for the file system: not a 500
            source, is_folder = Path(path), False
        if not is_folder:
            raise UserError(f"{source} is not a folder", field="path")
        real = source.resolve()
        for ours in (self.extensions_dir, self.tmp_dir):
            if _is_within(ours.resolve(), real):
                raise UserError(f"{source} contains the app's {ours.name} folder; pick the extension's own folder")
        # Checked before copying: copying a device file could read forever, and a link out of the folder
        # would copy or expose files that are not part of the extension.
        check_tree(source)
        with self._staging() as stage:
            copy = stage / "copy"
            shutil.copytree(source, copy, symlinks=True)
            check_tree(copy)
            return self._install_staged(copy, None, str(source))

    def install_from_archive(self, path: Path) -> Manifest:
        """Unpack a .zip or .tar(.gz/.bz2/.xz) and install it; the manifest may sit at the root of the archive
        or inside a single top-level folder."""
        archive = Path(path)
        if not archive.is_file():
            raise UserError(f"{archive} is not a file", field="path")
        with self._staging() as stage:
            unpacked = stage / "unpacked"
            unpacked.mkdir()
            try:
                archive_mod.extract(archive, unpacked, self._max_archive_bytes, self._max_archive_members)
            except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as e:
                raise UserError(f"{archive.name} could not be unpacked: {e}") from None
            root = archive_mod.manifest_root(unpacked, archive.name)
            check_tree(root)
            return self._install_staged(root, None, archive.name)

    def _install_staged(self, root: Path, folder_name: str | None, source: str) -> Manifest:
        manifest = _read_staged_manifest(root, source)
        name = _validate_folder_name(folder_name) if folder_name is not None else manifest.id
        if name != manifest.id:
            logger.warning("installing extension %r into folder %r, not one named after its id", manifest.id, name)
        target = self.extensions_dir / name
        with self._lock:
            self._refuse_existing(name)
            if manifest.pip:
                self._pip_runner(list(manifest.pip))
            self._move_into_place(root, target)
        logger.info("installed extension %s %s into %s", manifest.id, manifest.version, target)
        return manifest

    def _refuse_existing(self, name: str) -> None:
        # "<name>.disabled" is the same extension switched off the A1111 way; a second copy would shadow it.
        for candidate in (name, f"{name}.disabled"):
            target = self.extensions_dir / candidate
            if target.exists() or target.is_symlink():
                raise UserError(f"{candidate} is already installed; use update", field="folder_name")

    def _move_into_place(self, staged: Path, target: Path) -> None:
        self.extensions_dir.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staged, target)
            return
        except OSError as e:
            if e.errno != errno.EXDEV:
                raise
        # tmp_dir is on another disk: copy under a hidden name first so the extension still appears in one
        # rename, never half-copied.
        temp = self.extensions_dir / f".installing-{target.name}-{secrets.token_hex(4)}"
        try:
            shutil.copytree(staged, temp, symlinks=True)
            os.rename(temp, target)
        except BaseException:
            remove_tree(temp)
            raise

    @contextmanager
    def _staging(self) -> Iterator[Path]:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix="ext-install-", dir=self.tmp_dir))
        try:
            yield stage
        finally:
            remove_tree(stage)

    # -- updating ------------------------------------------------------------------------------------

    def check_for_updates(self, folder: Path) -> UpdateStatus:
        """Fetch the extension's upstream branch and say how many commits it is behind."""
        return self._status(self._user_folder(folder), fetch=True)

    def update(self, folder: Path) -> UpdateStatus:
        """Fast-forward a git-based extension to its upstream branch.

        Refuses if tracked files were edited locally. If the new version's manifest is invalid, or its new
        pip requirements fail to install, the folder is put back at the previous commit and the error raised.
        """
        path = self._user_folder(folder)
        with self._lock:
            status = self._status(path, fetch=True)
            if not status.is_git:
                raise UserError(f"{path.name} is not a git repository; uninstall and install it again to update")
            if not status.upstream:
                raise UserError(f"{path.name}: {status.message}")
            if status.behind == 0:
                return status
            repo = gitcmd.Repo(self._git, path.resolve())
            # Required because the rollback below is a hard reset: it must not be able to destroy the user's
            # own edits. (A1111 resets to origin/<branch> unconditionally; we would rather refuse.)
            if repo.has_local_changes():
                raise UserError(f"{path.name} has local changes to its files; commit or undo them before updating")
            old_manifest = _read_manifest_or_none(path)
            old_sha = repo.head()
            try:
                repo.fast_forward(status.upstream)
            except gitcmd.GitNotFound:
                raise
            except UserError as e:
                raise UserError(
                    f"{path.name} cannot be fast-forwarded (local commits, or the upstream history was rewritten); "
                    f"uninstall and install it again. {e.message}"
                ) from None
            try:
                self._accept_update(path, old_manifest)
            except Exception as e:
                self._roll_back(repo, old_sha)
                if isinstance(e, UserError):
                    raise type(e)(f"{e.message} (update rolled back to {old_sha[:7]})", e.field) from None
                raise
            new = self._status(path, fetch=False)
        logger.info("updated extension %s from %s to %s", path.name, status.current, new.current)
        message = f"updated {status.current} → {new.current} ({_behind_message(status.behind)})"
        return dataclasses.replace(new, message=message)

    def _accept_update(self, path: Path, old: Manifest | None) -> None:
        new = read_manifest(path)
        check_tree(path)
        if old is not None and new.id != old.id:
            raise UserError(f"the new version changes the extension id from {old.id!r} to {new.id!r}; reinstall it")
        if new.pip and (old is None or new.pip != old.pip):
            self._pip_runner(list(new.pip))

    @staticmethod
    def _roll_back(repo: gitcmd.Repo, sha: str) -> None:
        try:
            repo.reset_hard(sha)
        except UserError:
            logger.exception("could not roll %s back to %s after a failed update", repo.folder, sha)

    def _status(self, path: Path, *, fetch: bool) -> UpdateStatus:
        repo = gitcmd.Repo(self._git, path.resolve())
        if not repo.is_repo_root():
            return UpdateStatus(is_git=False, message="not a git repository")
        branch = repo.branch()
        current = repo.short("HEAD")
        upstream = repo.upstream()
        if not upstream:
            why = "no upstream branch to update from" if branch else "pinned to a tag or commit (detached HEAD)"
            return UpdateStatus(is_git=True, current=current, branch=branch, url=repo.remote_url(""), message=why)
        if fetch:
            repo.fetch(self._git_timeout_s)
        behind = repo.behind(upstream)
        return UpdateStatus(
            is_git=True,
            behind=behind,
            current=current,
            remote=repo.short(upstream),
            branch=branch,
            upstream=upstream,
            url=repo.remote_url(upstream),
            message=_behind_message(behind),
        )

    # -- removing ------------------------------------------------------------------------------------

    def uninstall(self, folder: Path) -> None:
        """Delete a user extension folder. A symlinked folder loses only its link, never the linked source."""
        path = self._user_folder(folder)
        with self._lock:
            if path.is_symlink():
                path.unlink()
                logger.info("removed the link %s", path)
                return
            # Renamed first so a delete that fails half-way leaves a hidden folder, not a broken extension.
            trash = self.extensions_dir / f".removing-{path.name}-{secrets.token_hex(4)}"
            try:
                os.rename(path, trash)
            except OSError as e:
                raise UserError(f"could not remove {path.name}: {e.strerror or e}") from None
            remove_tree(trash)
        logger.info("uninstalled extension folder %s", path)

    def _user_folder(self, folder: Path) -> Path:
        """`folder` as a direct child of extensions_dir, or UserError; followed symlinks are not a way out."""
        path = Path(os.path.abspath(Path(folder).expanduser()))
        if path.parent.resolve() != self.extensions_dir.resolve() or not _FOLDER_NAME.match(path.name):
            raise UserError(f"{folder} is not a user extension folder in {self.extensions_dir}", field="folder")
        if not (path.exists() or path.is_symlink()):
            raise NotFound(f"no extension folder {path.name} in {self.extensions_dir}", field="folder")
        return path


# -- checks shared by every source ---------------------------------------------------------------------


def check_tree(root: Path) -> None:
    """Refuse a folder holding device files, FIFOs or sockets, or symlinks that resolve outside it."""
    real_root = Path(os.path.realpath(root))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in (*dirnames, *filenames):
            entry = Path(dirpath) / name
            mode = os.lstat(entry).st_mode
            rel = entry.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                if not _is_within(Path(os.path.realpath(entry)), real_root):
                    raise UserError(f"{rel} is a symbolic link to {os.readlink(entry)}, outside the extension folder")
            elif not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise UserError(f"{rel} is a device, pipe or socket; extensions may only hold files and folders")


def remove_tree(path: Path) -> None:
    """Delete a folder tree if it exists, including read-only files (git packs on Windows); never raises."""

    def make_writable_and_retry(func: Callable[..., Any], target: str, _exc: object) -> None:
        try:
            os.chmod(target, stat.S_IWRITE | stat.S_IREAD | stat.S_IEXEC)
            func(target)
        except OSError:
            logger.warning("could not delete %s", target)

    if path.is_symlink():
        path.unlink(missing_ok=True)
    elif path.exists():
        # onerror, not onexc: we support Python 3.11.
        shutil.rmtree(path, onerror=make_writable_and_retry)


def _validate_folder_name(name: str) -> str:
    if not _FOLDER_NAME.match(name) or name in (".", ".."):
        raise UserError(
            f"{name!r} is not a valid folder name (letters, digits, '.', '_', '-'; not starting with a dot)",
            field="folder_name",
        )
    return name


def _read_staged_manifest(root: Path, source: str) -> Manifest:
    """read_manifest, with the staging path in its messages replaced by what the user gave us."""
    if not (root / MANIFEST_NAME).is_file():
        raise ManifestError(f"{source} has no {MANIFEST_NAME}, so it is not an extension for this app")
    try:
        return read_manifest(root)
    except ManifestError as e:
        raise ManifestError(e.message.replace(str(root), source), e.field) from None


def _read_manifest_or_none(folder: Path) -> Manifest | None:
    try:
        return read_manifest(folder)
    except ManifestError:
        return None


def _behind_message(behind: int) -> str:
    if behind == 0:
        return "latest"
    return f"{behind} new commit" if behind == 1 else f"{behind} new commits"


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents
