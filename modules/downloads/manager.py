"""The download manager: fetch catalogue files into their model folders, safely.

The rules every download follows:

- Bytes go to `<tmp>/downloads/<id>/<filename>.part`, never straight into a model folder, so a model list
  never shows half a file.
- An existing .part is resumed with `Range: bytes=N-` (and `If-Range`, so a file that changed upstream is
  fetched whole instead of being glued onto old bytes). A server that answers 200 instead of 206 starts it
  over. A connection lost mid-way is resumed automatically a few times before giving up.
- Cancelling (the job's Cancel button) stops between chunks and keeps the .part for a later resume.
- At the end the size and sha256 are checked when the catalogue knows them; a mismatch deletes the .part.
- The checked file is moved into the model folder atomically: `os.replace` on the same disk, otherwise a
  copy to a hidden temporary name in the model folder, fsync, then `os.replace`.
- Every failure says which file, from which URL, and which folder to put it in by hand.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, Field

from modules import atomic
from modules.downloads import transport
from modules.downloads.catalogue import Catalogue, CatalogueEntry
from modules.downloads.progress import ProgressCallback, ProgressReporter, format_bytes
from modules.errors import UserError
from modules.jobs import JobContext, JobQueue, JobType

if TYPE_CHECKING:
    from hashlib import _Hash

log = logging.getLogger(__name__)

JOB_TYPE = "download"
DOWNLOADS_SUBDIR = "downloads"
PART_SUFFIX = ".part"
META_SUFFIX = ".json"
COPY_CHUNK = 1024 * 1024
# How long a waiting download sleeps between looks at its cancel button.
_WAIT_POLL_S = 0.2


# -- errors -------------------------------------------------------------------------------------------------


class DownloadError(UserError):
    """A download failed for a reason outside the studio (network, server, corrupt transfer).

    The message always ends with how to get the file by hand; `url`, `folder` and `filename` are there for a
    UI that wants to show them as a link and a path.
    """

    # The upstream server (or the way to it) failed, not the request the user made.
    status_code = 502

    def __init__(self, message: str, entry: CatalogueEntry, url: str, folder: Path) -> None:
        super().__init__(message, field="id")
        self.entry_id = entry.id
        self.filename = entry.filename
        self.url = url
        self.folder = folder

    def to_json(self) -> dict[str, str | None]:
        return {**super().to_json(), "url": self.url, "folder": str(self.folder), "filename": self.filename}


class DownloadBusy(UserError):
    """The same file is already being downloaded."""

    status_code = 409


class _Interrupted(Exception):
    """The transfer stopped part-way (some bytes arrived); the .part is kept and the download can resume."""

    def __init__(self, cause: Exception | None) -> None:
        super().__init__(str(cause) if cause else "the server closed the connection early")
        self.cause = cause


class _Restart(Exception):
    """The server would not continue the .part we have (416, or a range we did not ask for): start over."""


# -- public data --------------------------------------------------------------------------------------------


class DownloadState(str, Enum):
    PRESENT = "present"  # the file is in its model folder
    MISSING = "missing"  # not there, nothing downloaded yet
    PARTIAL = "partial"  # not there, a .part from an earlier attempt will be resumed
    DOWNLOADING = "downloading"  # a download of it is running now


@dataclass(frozen=True)
class EntryStatus:
    """Where one catalogue file stands, for the settings and models pages."""

    entry: CatalogueEntry
    path: Path
    state: DownloadState
    partial_bytes: int = 0

    def to_json(self) -> dict[str, Any]:
        e = self.entry
        return {
            "id": e.id, "name": e.name, "filename": e.filename, "folder": e.folder, "url": e.url,
            "size": e.size, "sha256": e.sha256, "verified": e.verified, "description": e.description,
            "licence_note": e.licence_note, "path": str(self.path), "state": self.state.value,
            "partial_bytes": self.partial_bytes,
        }


@dataclass(frozen=True)
class DownloadResult:
    """What a download produced.

    Attributes:
        path: The file in its model folder.
        sha256: Its sha256, or None when it was already present (it is not re-read then).
        verified: True when the sha256 matched the catalogue; False when the catalogue has none (the hash is
            then recorded here and in the job notes) or when the file was already present.
        already_present: Nothing was downloaded because the file was already there.
        resumed_from: Bytes of an earlier .part that this download continued from.
    """

    entry_id: str
    path: Path
    sha256: str | None
    verified: bool
    already_present: bool = False
    resumed_from: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"id": self.entry_id, "path": str(self.path), "sha256": self.sha256, "verified": self.verified,
                "already_present": self.already_present, "resumed_from": self.resumed_from}


class DownloadRequest(BaseModel):
    """The request of a "download" job: which catalogue file to fetch."""

    id: str = Field(min_length=1, max_length=100)


@dataclass
class _Attempt:
    """The running state of one HTTP request's worth of a download."""

    offset: int  # bytes of the .part when the request started
    received: int = 0  # bytes this request wrote
    hasher: _Hash = field(default_factory=hashlib.sha256)


# -- the manager --------------------------------------------------------------------------------------------


class DownloadManager:
    """Downloads catalogue files into model folders; see the module docstring for the rules.

    Args:
        model_folder: Maps a model kind name ("ESRGAN") to its folder, e.g. `DataPaths.model_folder`.
        tmp_dir: The data dir's tmp folder; .part files live in `<tmp_dir>/downloads/`.
        catalogue: The known files.
        client_factory: Makes the httpx client for each request (tests and proxies swap it).
        console: Draw a tqdm bar on stderr as well.
        retries: How many times a transfer that broke off part-way is resumed automatically.
        retry_delay_s: Pause before the first automatic resume; doubled after each further one.
    """

    def __init__(
        self,
        model_folder: Callable[[str], Path],
        tmp_dir: Path,
        catalogue: Catalogue,
        client_factory: Callable[[], httpx.Client] = transport.default_client,
        *,
        console: bool = True,
        retries: int = 3,
        retry_delay_s: float = 2.0,
    ) -> None:
        self._model_folder = model_folder
        self._tmp_dir = Path(tmp_dir)
        self._catalogue = catalogue
        self._client_factory = client_factory
        self._console = console
        self._retries = retries
        self._retry_delay_s = retry_delay_s
        # One lock per target file: two downloads of the same file would write the same .part.
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    @property
    def catalogue(self) -> Catalogue:
        return self._catalogue

    # -- where things go ---------------------------------------------------------------------------------

    def target_path(self, entry_id: str) -> Path:
        """Where the file lives once downloaded."""
        return self._target(self._catalogue.get(entry_id))

    def part_path(self, entry_id: str) -> Path:
        """Where the file is written while it downloads."""
        return self._part(self._catalogue.get(entry_id))

    def manual_instructions(self, entry_id: str) -> str:
        """The sentence telling the user how to put the file in place by hand."""
        entry = self._catalogue.get(entry_id)
        return _manual(entry, transport.resolve_url(entry.url), self._target(entry).parent)

    # -- what is there -----------------------------------------------------------------------------------

    def missing(self) -> list[CatalogueEntry]:
        """Entries whose file is not in its model folder (the ones to offer a "Download" button for)."""
        return [entry for entry in self._catalogue if not self._target(entry).is_file()]

    def status(self, entry_id: str) -> EntryStatus:
        """Present, missing, partly downloaded, or downloading right now."""
        return self._status(self._catalogue.get(entry_id))

    def statuses(self) -> list[EntryStatus]:
        """The status of every catalogue entry, in catalogue order."""
        return [self._status(entry) for entry in self._catalogue]

    # -- downloading -------------------------------------------------------------------------------------

    def download(self, entry_id: str, ctx: JobContext | None = None, progress: ProgressCallback | None = None,
                 *, wait: bool = False) -> Path:
        """Download one catalogue file into its model folder and return its path; see `fetch`."""
        return self.fetch(entry_id, ctx=ctx, progress=progress, wait=wait).path

    def fetch(self, entry_id: str, ctx: JobContext | None = None, progress: ProgressCallback | None = None,
              *, wait: bool = False) -> DownloadResult:
        """Download one catalogue file into its model folder, or return at once if it is already there.

        Args:
            entry_id: The catalogue id.
            ctx: The job running this download: gets progress, and its Cancel stops the download (the
                .part is kept for a later resume; JobCancelled propagates).
            progress: Also called with a DownloadProgress a few times a second.
            wait: If the same file is already downloading, wait for it instead of raising DownloadBusy.

        Raises:
            NotFound: unknown id. DownloadBusy: already downloading and `wait` is False.
            DownloadError: network, server or checksum failure (the message says how to get it by hand).
            UserError: not enough disk space, or the model folder is not writable.
            JobCancelled: `ctx` was cancelled.
        """
        entry = self._catalogue.get(entry_id)
        target = self._target(entry)
        lock = self._lock_for(target)
        self._acquire(lock, entry, ctx, wait)
        try:
            if target.is_file():
                # Put there by hand, or by the download we just waited for.
                return DownloadResult(entry.id, target, sha256=None, verified=False, already_present=True)
            return self._download(entry, target, ctx, progress)
        finally:
            lock.release()

    def register_job_type(self, queue: JobQueue) -> None:
        """Register the "download" job type, so downloads run in the background queue with a progress bar."""
        queue.register(JobType(JOB_TYPE, DownloadRequest, self._run_job))

    def _run_job(self, request: DownloadRequest, ctx: JobContext) -> dict[str, Any]:
        # wait=True: if something else is fetching the same file, this job simply finishes with it.
        result = self.fetch(request.id, ctx=ctx, wait=True)
        if result.already_present:
            ctx.note(f"{result.path.name} is already in {result.path.parent}; nothing was downloaded.")
        elif not result.verified:
            ctx.note(f"{result.path.name} has no known sha256, so it was checked by size only; "
                     f"its sha256 is {result.sha256}.")
        return result.to_json()

    # -- the steps of one download -----------------------------------------------------------------------

    def _download(self, entry: CatalogueEntry, target: Path, ctx: JobContext | None,
                  progress: ProgressCallback | None) -> DownloadResult:
        url = transport.resolve_url(entry.url)
        folder = target.parent
        self._refuse_if_offline(entry, url, folder)
        part = self._part(entry)
        resumed_from = _size(part)
        with ProgressReporter(entry.id, entry.filename, ctx, progress, self._console) as reporter:
            attempt = self._transfer_with_retries(entry, url, part, folder, reporter, ctx)
            reporter.finish()
        digest = self._verify(entry, url, part, folder, attempt)
        self._install(entry, part, target)
        self._discard(part)
        log.info("downloaded %s to %s (sha256 %s)", entry.filename, target, digest)
        return DownloadResult(entry.id, target, digest, verified=entry.sha256 is not None,
                              resumed_from=resumed_from)

    def _transfer_with_retries(self, entry: CatalogueEntry, url: str, part: Path, folder: Path,
                               reporter: ProgressReporter, ctx: JobContext | None) -> _Attempt:
        """Transfer the file, resuming automatically when the connection breaks off after making progress."""
        failures = 0
        while True:
            try:
                return self._transfer(entry, url, part, folder, reporter, ctx)
            except _Interrupted as e:
                failures += 1
                if failures > self._retries:
                    raise self._network_error(entry, url, part, folder, e.cause) from e.cause
                log.warning("download of %s broke off (%s); resuming (%d of %d)", entry.filename, e, failures,
                            self._retries)
                self._pause(self._retry_delay_s * 2 ** (failures - 1), ctx)

    def _transfer(self, entry: CatalogueEntry, url: str, part: Path, folder: Path, reporter: ProgressReporter,
                  ctx: JobContext | None) -> _Attempt:
        """One request (two if the server will not continue our .part); returns the finished attempt."""
        if ctx is not None:
            ctx.check()
        try:
            return self._request(entry, url, part, folder, reporter, ctx)
        except _Restart as e:
            log.info("cannot resume %s (%s); starting it over", entry.filename, e)
            self._discard(part)
            return self._request(entry, url, part, folder, reporter, ctx)

    def _request(self, entry: CatalogueEntry, url: str, part: Path, folder: Path, reporter: ProgressReporter,
                 ctx: JobContext | None) -> _Attempt:
        # Made here, not once per download: discarding a .part removes its folder, and a restart needs it back.
        part.parent.mkdir(parents=True, exist_ok=True)
        attempt = _Attempt(offset=self._usable_offset(entry, part))
        if entry.size is not None and attempt.offset == entry.size:
            # An earlier run got every byte but stopped before installing; no need to ask the server again.
            attempt.hasher = _hash_prefix(part, attempt.offset)
            return attempt
        try:
            with self._client_factory() as client:
                with client.stream("GET", url, headers=self._resume_headers(part, attempt.offset)) as response:
                    self._receive(entry, url, part, folder, response, attempt, reporter, ctx)
        except httpx.RequestError as e:
            if attempt.received > 0:
                raise _Interrupted(e) from e
            raise self._network_error(entry, url, part, folder, e) from e
        return attempt

    def _receive(self, entry: CatalogueEntry, url: str, part: Path, folder: Path, response: httpx.Response,
                 attempt: _Attempt, reporter: ProgressReporter, ctx: JobContext | None) -> None:
        """Check the answer's status, then stream its body into the .part."""
        append = self._accept_status(entry, url, folder, response, attempt.offset)
        if not append:
            attempt.offset = 0
        total = self._expected_total(entry, url, part, folder, response, attempt.offset)
        self._check_space(entry, part, folder, total, attempt.offset)
        if not append:
            self._write_meta(part, url, response)
        attempt.hasher = _hash_prefix(part, attempt.offset) if append else hashlib.sha256()
        reporter.start(attempt.offset, total)
        self._stream_body(entry, part, response, attempt, reporter, ctx, append)
        done = attempt.offset + attempt.received
        if total is not None and done < total:
            # The server ended a body that had no Content-Length; what we have is still good to resume.
            raise _Interrupted(None)

    def _accept_status(self, entry: CatalogueEntry, url: str, folder: Path, response: httpx.Response,
                       offset: int) -> bool:
        """True to append to the .part (a 206 continuing it), False to write it from zero (a 200)."""
        status = response.status_code
        if offset and status == 416:
            raise _Restart("the server says the range is not satisfiable")
        if offset and status == 206:
            start = transport.content_range_start(response)
            if start != offset:
                raise _Restart(f"asked for bytes from {offset}, the server sent from {start}")
            return True
        if status == 200:
            if offset:
                log.info("the server sent all of %s instead of resuming at %d; starting over", entry.filename,
                         offset)
            return False
        raise self._http_error(entry, url, folder, response)

    def _expected_total(self, entry: CatalogueEntry, url: str, part: Path, folder: Path,
                        response: httpx.Response, offset: int) -> int | None:
        """The file's size: the catalogue's, checked against the server's so a wrong file is not fetched."""
        served = transport.full_size(response, offset)
        if entry.size is not None and served is not None and served != entry.size:
            self._discard(part)
            raise DownloadError(
                f"could not download {entry.filename}: {url} serves a file of {served} bytes, but the expected "
                f"file is {entry.size} bytes, so it was not downloaded. {_manual(entry, url, folder)}",
                entry, url, folder)
        return entry.size if entry.size is not None else served

    def _stream_body(self, entry: CatalogueEntry, part: Path, response: httpx.Response, attempt: _Attempt,
                     reporter: ProgressReporter, ctx: JobContext | None, append: bool) -> None:
        with open(part, "ab" if append else "wb") as f:
            try:
                for chunk in response.iter_bytes():
                    if ctx is not None:
                        ctx.check()  # JobCancelled leaves the .part in place for a later resume
                    f.write(chunk)
                    attempt.hasher.update(chunk)
                    attempt.received += len(chunk)
                    reporter.update(attempt.offset + attempt.received)
                    if entry.size is not None and attempt.offset + attempt.received > entry.size:
                        break  # a misbehaving server must not fill the disk; _verify rejects the file
            finally:
                # Whatever happens, what was written is on disk, so a resume continues from real bytes.
                f.flush()
                os.fsync(f.fileno())

    def _verify(self, entry: CatalogueEntry, url: str, part: Path, folder: Path, attempt: _Attempt) -> str:
        """Check size and sha256; a bad file is deleted. Returns the sha256."""
        size = _size(part)
        if entry.size is not None and size != entry.size:
            self._discard(part)
            raise DownloadError(
                f"size mismatch for {entry.filename}: expected {entry.size} bytes, got {size}; the file was "
                f"removed; try again. If it fails again, {_manual_lower(entry, url, folder)}", entry, url, folder)
        digest = str(attempt.hasher.hexdigest())
        if entry.sha256 is not None and digest != entry.sha256:
            self._discard(part)
            raise DownloadError(
                f"checksum mismatch for {entry.filename}: expected sha256 {entry.sha256}, got {digest}; the file "
                f"was removed; try again. If it fails again, {_manual_lower(entry, url, folder)}",
                entry, url, folder)
        return digest

    def _install(self, entry: CatalogueEntry, part: Path, target: Path) -> None:
        try:
            move_into_place(part, target)
        except OSError as e:
            raise UserError(
                f"{entry.filename} was downloaded and checked, but could not be put in {target.parent}: "
                f"{e.strerror or e}. It is kept at {part}; move it there by hand.", field="id") from e

    # -- helpers -----------------------------------------------------------------------------------------

    def _target(self, entry: CatalogueEntry) -> Path:
        return Path(self._model_folder(entry.folder)) / entry.filename

    def _part(self, entry: CatalogueEntry) -> Path:
        # One folder per entry: two entries may share a file name (say "model.pth") but never an id.
        return self._tmp_dir / DOWNLOADS_SUBDIR / entry.id / (entry.filename + PART_SUFFIX)

    def _status(self, entry: CatalogueEntry) -> EntryStatus:
        target = self._target(entry)
        if target.is_file():
            return EntryStatus(entry, target, DownloadState.PRESENT)
        if self._lock_for(target).locked():
            return EntryStatus(entry, target, DownloadState.DOWNLOADING, _size(self._part(entry)))
        partial = _size(self._part(entry))
        return EntryStatus(entry, target, DownloadState.PARTIAL if partial else DownloadState.MISSING, partial)

    def _lock_for(self, target: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(str(target), threading.Lock())

    def _acquire(self, lock: threading.Lock, entry: CatalogueEntry, ctx: JobContext | None, wait: bool) -> None:
        if lock.acquire(blocking=False):
            return
        if not wait:
            raise DownloadBusy(f"{entry.filename} is already being downloaded; wait for that download to finish",
                               field="id")
        while not lock.acquire(timeout=_WAIT_POLL_S):
            if ctx is not None:
                ctx.check()

    def _pause(self, seconds: float, ctx: JobContext | None) -> None:
        """Sleep before a retry, still answering Cancel."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if ctx is not None:
                ctx.check()
            time.sleep(min(left, _WAIT_POLL_S))

    def _usable_offset(self, entry: CatalogueEntry, part: Path) -> int:
        size = _size(part)
        if entry.size is not None and size > entry.size:
            self._discard(part)  # longer than the file can be: not something to resume
            return 0
        return size

    def _resume_headers(self, part: Path, offset: int) -> dict[str, str]:
        if not offset:
            return {}
        headers = {"Range": f"bytes={offset}-"}
        validator = _read_meta(part).get("validator")
        if isinstance(validator, str) and validator:
            headers["If-Range"] = validator
        return headers

    def _write_meta(self, part: Path, url: str, response: httpx.Response) -> None:
        atomic.write_json(_meta_path(part), {"url": url, "validator": transport.resume_validator(response)})

    def _discard(self, part: Path) -> None:
        """Remove a .part, its notes, and the entry's folder under tmp/downloads if that is now empty."""
        part.unlink(missing_ok=True)
        _meta_path(part).unlink(missing_ok=True)
        try:
            part.parent.rmdir()
        except OSError:
            pass  # not empty or already gone; either way nothing of ours is left to clean

    def _check_space(self, entry: CatalogueEntry, part: Path, folder: Path, total: int | None,
                     offset: int) -> None:
        if total is None:
            return
        _require_space(entry, part.parent, total - offset)
        existing = _existing_ancestor(folder)
        if existing.stat().st_dev != part.parent.stat().st_dev:
            # On another disk the finished file is copied, so the model folder needs room for all of it.
            _require_space(entry, existing, total)

    def _refuse_if_offline(self, entry: CatalogueEntry, url: str, folder: Path) -> None:
        if transport.is_huggingface_url(url) and transport.hf_offline():
            raise DownloadError(
                f"{entry.filename} is not downloaded: HF_HUB_OFFLINE is set, so nothing is fetched from Hugging "
                f"Face. {_manual(entry, url, folder)}", entry, url, folder)

    def _http_error(self, entry: CatalogueEntry, url: str, folder: Path, response: httpx.Response) -> DownloadError:
        status = response.status_code
        return DownloadError(
            f"could not download {entry.filename}: {url} answered HTTP {status} {response.reason_phrase}"
            f"{_status_hint(status)}. {_manual(entry, url, folder)}", entry, url, folder)

    def _network_error(self, entry: CatalogueEntry, url: str, part: Path, folder: Path,
                       cause: Exception | None) -> DownloadError:
        kept = _size(part)
        resume = f" {format_bytes(kept)} were kept; start the download again to resume." if kept else ""
        return DownloadError(
            f"could not download {entry.filename} from {url}: {_describe_network_failure(cause)}.{resume} "
            f"{_manual(entry, url, folder)}", entry, url, folder)


# -- module helpers (pure functions, no state) --------------------------------------------------------------


def move_into_place(src: Path, dst: Path) -> None:
    """Move a finished file to `dst` so that `dst` is either absent or complete, never partial.

    On one filesystem that is a rename. Across filesystems (tmp and models on different disks) the file is
    copied to a hidden temporary name next to `dst`, synced, then renamed over `dst`.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        copy_into_place(src, dst)
        src.unlink()
    _fsync_dir(dst.parent)


def copy_into_place(src: Path, dst: Path) -> None:
    """Copy `src` to `dst` through a hidden temporary file in `dst`'s folder, then rename it over `dst`.

    The temporary name starts with "." and ends with ".tmp", which the model registry never lists.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(src, "rb") as source:
            shutil.copyfileobj(source, out, COPY_CHUNK)
            out.flush()
            os.fsync(out.fileno())
        # mkstemp makes the file private (0600); a model file should be as readable as the download was.
        os.chmod(tmp, stat.S_IMODE(os.stat(src).st_mode))
        os.replace(tmp, dst)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; not possible (nor needed) on every platform, so failures are ignored."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _hash_prefix(path: Path, length: int) -> _Hash:
    """A sha256 object fed with the first `length` bytes of `path` (the part a resume continues)."""
    hasher = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left > 0 and (chunk := f.read(min(COPY_CHUNK, left))):
            hasher.update(chunk)
            left -= len(chunk)
    return hasher


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + META_SUFFIX)


def _read_meta(part: Path) -> dict[str, Any]:
    try:
        data = json.loads(_meta_path(part).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _existing_ancestor(path: Path) -> Path:
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def _require_space(entry: CatalogueEntry, folder: Path, needed: int) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise UserError(f"not enough disk space to download {entry.filename}: it needs {format_bytes(needed)} "
                        f"in {folder}, which has {format_bytes(free)} free", field="id")


def _manual(entry: CatalogueEntry, url: str, folder: Path) -> str:
    return f"Download it by hand from {url} and put it in {folder} as {entry.filename}."


def _manual_lower(entry: CatalogueEntry, url: str, folder: Path) -> str:
    text = _manual(entry, url, folder)
    return text[0].lower() + text[1:]


def _status_hint(status: int) -> str:
    if status in (401, 403):
        return " (the file may be gated: it can need a login or accepting its licence on the website)"
    if status == 404:
        return " (the file is no longer at that address)"
    if status == 429:
        return " (too many requests; try again later)"
    if status >= 500:
        return " (the server failed; try again later)"
    return ""


def _describe_network_failure(cause: Exception | None) -> str:
    if cause is None:
        return "the server closed the connection before the end of the file"
    if isinstance(cause, httpx.ConnectError):
        return f"could not connect ({cause}); the computer may be offline, or a firewall or proxy blocks it"
    if isinstance(cause, httpx.TimeoutException):
        return f"the server stopped answering ({type(cause).__name__})"
    return f"the connection failed ({type(cause).__name__}: {cause})"
