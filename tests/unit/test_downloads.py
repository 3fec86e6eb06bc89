"""The model download manager against a real HTTP server on 127.0.0.1: full downloads, resume with Range,
checksum failures, HTTP and network errors, cancellation through a job, the catalogue, and the job type."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import socket
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from modules.downloads import (
    Catalogue,
    CatalogueEntry,
    DownloadBusy,
    DownloadError,
    DownloadManager,
    DownloadProgress,
    DownloadState,
    default_catalogue,
)
from modules.downloads import transport
from modules.errors import NotFound, UserError
from modules.extensions.hooks import HookRegistry
from modules.jobs import JobQueue, JobState

SIZE = 3 * 1024 * 1024
CHUNK = 64 * 1024
PAYLOAD = random.Random(20240601).randbytes(SIZE)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
ETAG = f'"{PAYLOAD_SHA[:16]}"'


# -- a tiny HTTP server with Range support that can misbehave on purpose ------------------------------------


@dataclass
class ServerState:
    """What the test server serves and what it saw."""

    port: int = 0
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    sent: int = 0  # body bytes sent, over all requests
    drop_after: int | None = None  # the next body is cut off after this many bytes (once)
    ignore_range: bool = False  # answer every request with 200 and the whole file
    delay_s: float = 0.0  # pause after each 64 KiB chunk, to make a transfer slow enough to act on
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def ranges(self) -> list[str | None]:
        return [r.get("range") for r in self.requests]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # clients hanging up mid-body is what several tests do on purpose


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        pass  # keep test output clean

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append({"path": self.path, **{k.lower(): v for k, v in self.headers.items()}})
        data = state.files.get(self.path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = self._range_start(state, len(data))
        if start is None:
            return
        self._send_body(state, data, start)

    def _range_start(self, state: ServerState, length: int) -> int | None:
        """0 for a whole-file answer, N for a 206, None when a 416 was sent."""
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if not header or state.ignore_range or (if_range is not None and if_range != ETAG):
            return 0
        start = int(re.fullmatch(r"bytes=(\d+)-", header).group(1))  # type: ignore[union-attr]
        if start >= length:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{length}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return start

    def _send_body(self, state: ServerState, data: bytes, start: int) -> None:
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", ETAG)
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with state.lock:
            limit, state.drop_after = state.drop_after, None
        body = data[start:] if limit is None else data[start:start + limit]
        for i in range(0, len(body), CHUNK):
            self.wfile.write(body[i:i + CHUNK])
            with state.lock:
                state.sent += len(body[i:i + CHUNK])
            if state.delay_s:
                time.sleep(state.delay_s)
        if limit is not None:
            self.wfile.flush()
            self.close_connection = True  # cut off: fewer bytes than Content-Length promised


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[ServerState]:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # loopback only, never through a proxy
    state = ServerState(files={"/files/model.pth": PAYLOAD})
    srv = _Server(state)
    state.port = srv.server_address[1]
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), name="test-http", daemon=True)
    thread.start()
    yield state
    srv.shutdown()
    srv.server_close()
    thread.join(5)


# -- helpers ------------------------------------------------------------------------------------------------


def entry(url: str, *, id: str = "test-model", sha256: str | None = PAYLOAD_SHA, size: int | None = SIZE,  # noqa: A002
          folder: str = "ESRGAN", filename: str = "model.pth") -> CatalogueEntry:
    return CatalogueEntry(id=id, name="Test model", url=url, size=size, sha256=sha256, folder=folder,
                          filename=filename, description="served by the test")


def make_manager(tmp_path: Path, *entries: CatalogueEntry, retries: int = 0,
                 client_factory: Callable[[], httpx.Client] = transport.default_client,
                 console: bool = False) -> DownloadManager:
    models = tmp_path / "models"
    return DownloadManager(lambda name: models / name, tmp_path / "tmp", Catalogue(entries),
                           client_factory=client_factory, console=console, retries=retries, retry_delay_s=0.0)


def files_under(folder: Path) -> list[Path]:
    """Every file below `folder`, hidden ones included."""
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- downloads ----------------------------------------------------------------------------------------------


def test_full_download_lands_in_the_model_folder_with_the_right_hash(server: ServerState, tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    seen: list[DownloadProgress] = []

    result = manager.fetch("test-model", progress=seen.append)

    assert result.path == tmp_path / "models" / "ESRGAN" / "model.pth"
    assert sha(result.path) == PAYLOAD_SHA
    assert result.sha256 == PAYLOAD_SHA and result.verified and result.resumed_from == 0
    assert files_under(tmp_path / "tmp") == []
    assert files_under(tmp_path / "models") == [result.path]
    assert seen[-1].done == SIZE and seen[-1].total == SIZE
    assert server.ranges() == [None]
    assert server.requests[0]["accept-encoding"] == "identity"


def test_a_second_call_finds_the_file_present_and_downloads_nothing(server: ServerState, tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    manager.download("test-model")

    result = manager.fetch("test-model")

    assert result.already_present and result.path.is_file()
    assert len(server.requests) == 1


def test_a_dropped_connection_is_resumed_with_range_in_the_same_call(server: ServerState, tmp_path: Path) -> None:
    server.drop_after = 1024 * 1024
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")), retries=2)

    path = manager.download("test-model")

    assert sha(path) == PAYLOAD_SHA
    first, second = server.requests
    assert "range" not in first
    resumed_at = int(re.fullmatch(r"bytes=(\d+)-", second["range"]).group(1))  # type: ignore[union-attr]
    assert 0 < resumed_at <= 1024 * 1024
    assert second["if-range"] == ETAG
    # Every byte crossed the wire about once: the file plus at most what was lost in flight when it dropped.
    assert SIZE <= server.sent <= SIZE + CHUNK
    assert files_under(tmp_path / "tmp") == []


def test_an_interruption_keeps_the_part_and_the_next_download_resumes(server: ServerState, tmp_path: Path) -> None:
    server.drop_after = 1024 * 1024
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")), retries=0)

    with pytest.raises(DownloadError) as info:
        manager.download("test-model")

    part = manager.part_path("test-model")
    kept = part.stat().st_size
    assert 0 < kept <= 1024 * 1024
    assert PAYLOAD.startswith(part.read_bytes())
    assert "start the download again to resume" in info.value.message
    assert server.url("/files/model.pth") in info.value.message
    assert str(tmp_path / "models" / "ESRGAN") in info.value.message
    assert files_under(tmp_path / "models") == []
    assert manager.status("test-model").state is DownloadState.PARTIAL

    result = manager.fetch("test-model")

    assert server.ranges()[-1] == f"bytes={kept}-"
    assert result.resumed_from == kept and sha(result.path) == PAYLOAD_SHA
    assert SIZE <= server.sent <= SIZE + CHUNK
    assert files_under(tmp_path / "tmp") == []


def test_a_server_that_ignores_range_restarts_the_file_from_zero(server: ServerState, tmp_path: Path) -> None:
    server.ignore_range = True
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    part = manager.part_path("test-model")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 100_000)  # not the file's first bytes: appending to it would corrupt the result

    path = manager.download("test-model")

    assert server.ranges() == ["bytes=100000-"]
    assert sha(path) == PAYLOAD_SHA


def test_a_file_changed_upstream_is_fetched_whole_not_glued_onto_old_bytes(server: ServerState,
                                                                          tmp_path: Path) -> None:
    # No sha256 in the catalogue: only If-Range protects this download from mixing two versions.
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth"), sha256=None, size=None))
    part = manager.part_path("test-model")
    part.parent.mkdir(parents=True)
    part.write_bytes(b"old version " * 1000)
    part.with_name(part.name + ".json").write_text(json.dumps({"validator": '"old-etag"'}))

    result = manager.fetch("test-model")

    assert server.requests[0]["if-range"] == '"old-etag"'
    assert sha(result.path) == PAYLOAD_SHA
    assert result.sha256 == PAYLOAD_SHA and not result.verified


def test_a_part_longer_than_the_file_gets_416_and_starts_over(server: ServerState, tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth"), size=None))
    part = manager.part_path("test-model")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD + b"junk")

    path = manager.download("test-model")

    assert server.ranges() == [f"bytes={SIZE + 4}-", None]
    assert sha(path) == PAYLOAD_SHA


def test_a_complete_part_is_installed_without_asking_the_server(server: ServerState, tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    part = manager.part_path("test-model")
    part.parent.mkdir(parents=True)
    part.write_bytes(PAYLOAD)

    path = manager.download("test-model")

    assert server.requests == []
    assert sha(path) == PAYLOAD_SHA


def test_a_wrong_checksum_removes_the_file_and_says_so(server: ServerState, tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth"), sha256="0" * 64))

    with pytest.raises(UserError) as info:
        manager.download("test-model")

    message = info.value.message
    assert "checksum mismatch" in message and "the file was removed; try again" in message
    assert PAYLOAD_SHA in message and "0" * 64 in message
    assert files_under(tmp_path / "models") == []
    assert files_under(tmp_path / "tmp") == []
    assert manager.status("test-model").state is DownloadState.MISSING


def test_a_server_file_of_the_wrong_size_is_refused_before_downloading(server: ServerState,
                                                                       tmp_path: Path) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth"), size=SIZE + 1))

    with pytest.raises(DownloadError, match="serves a file of"):
        manager.download("test-model")

    assert files_under(tmp_path / "models") == [] and files_under(tmp_path / "tmp") == []


def test_404_names_the_file_the_url_and_the_folder_to_use(server: ServerState, tmp_path: Path) -> None:
    url = server.url("/files/gone.pth")
    manager = make_manager(tmp_path, entry(url, filename="gone.pth"))

    with pytest.raises(UserError) as info:
        manager.download("test-model")

    message = info.value.message
    assert "gone.pth" in message and url in message and "HTTP 404" in message
    assert f"put it in {tmp_path / 'models' / 'ESRGAN'}" in message and "by hand" in message
    assert isinstance(info.value, DownloadError) and info.value.url == url
    assert files_under(tmp_path / "models") == [] and files_under(tmp_path / "tmp") == []


def test_offline_gives_a_clear_message_with_manual_instructions(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{closed_port()}/files/model.pth"
    manager = make_manager(tmp_path, entry(url))

    with pytest.raises(DownloadError) as info:
        manager.download("test-model")

    message = info.value.message
    assert "could not connect" in message and "offline" in message
    assert url in message and str(tmp_path / "models" / "ESRGAN") in message
    assert files_under(tmp_path / "models") == [] and files_under(tmp_path / "tmp") == []


def test_hf_hub_offline_refuses_hugging_face_files_without_touching_the_network(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    url = "https://huggingface.co/org/repo/resolve/main/model.safetensors"

    def no_network() -> httpx.Client:
        raise AssertionError("must not connect while HF_HUB_OFFLINE is set")

    manager = make_manager(tmp_path, entry(url, folder="Stable-diffusion"), client_factory=no_network)

    with pytest.raises(DownloadError) as info:
        manager.download("test-model")

    assert "HF_HUB_OFFLINE" in info.value.message and url in info.value.message
    assert str(tmp_path / "models" / "Stable-diffusion") in info.value.message


def test_hf_endpoint_moves_hugging_face_urls_to_a_mirror(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "https://huggingface.co/org/repo/resolve/main/model.safetensors"
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert transport.resolve_url(url) == url
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example/")
    assert transport.resolve_url(url) == "https://hf-mirror.example/org/repo/resolve/main/model.safetensors"
    assert transport.is_huggingface_url("https://hf-mirror.example/x")
    assert not transport.is_huggingface_url("https://github.com/x")


def test_a_copy_across_disks_never_shows_a_partial_file(server: ServerState, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_replace = os.replace

    def replace(src: str | Path, dst: str | Path) -> None:
        if str(src).endswith(".part"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")  # what a rename across disks gives
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))

    path = manager.download("test-model")

    assert sha(path) == PAYLOAD_SHA
    assert files_under(tmp_path / "models") == [path]  # no hidden temporary copy left behind
    assert files_under(tmp_path / "tmp") == []
    assert stat.S_IMODE(path.stat().st_mode) != 0o600


def test_the_console_shows_a_progress_bar(server: ServerState, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")), console=True)

    manager.download("test-model")

    assert "model.pth" in capsys.readouterr().err


# -- concurrency, cancellation and the job queue ------------------------------------------------------------


@pytest.fixture
def queue() -> Iterator[JobQueue]:
    q = JobQueue(HookRegistry())
    q.start()
    yield q
    q.stop()


def test_the_download_job_runs_in_the_queue_and_reports_progress(server: ServerState, tmp_path: Path,
                                                                 queue: JobQueue) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    manager.register_job_type(queue)

    job = queue.submit("download", {"id": "test-model"})
    assert job.wait(20)

    assert job.state is JobState.DONE, job.error
    assert job.result["path"] == str(tmp_path / "models" / "ESRGAN" / "model.pth")
    assert job.result["sha256"] == PAYLOAD_SHA and job.result["verified"] is True
    assert (job.progress.step, job.progress.total) == (SIZE, SIZE)
    assert "model.pth" in job.progress.text and "MB" in job.progress.text


def test_an_unverified_download_records_its_hash_in_the_job_notes(server: ServerState, tmp_path: Path,
                                                                  queue: JobQueue) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth"), sha256=None))
    manager.register_job_type(queue)

    job = queue.submit("download", {"id": "test-model"})
    assert job.wait(20)

    assert job.state is JobState.DONE and job.result["verified"] is False
    assert any(PAYLOAD_SHA in note and "size only" in note for note in job.notes)


def test_a_failed_download_job_carries_the_manual_instructions(server: ServerState, tmp_path: Path,
                                                               queue: JobQueue) -> None:
    manager = make_manager(tmp_path, entry(server.url("/files/gone.pth")))
    manager.register_job_type(queue)

    job = queue.submit("download", {"id": "test-model"})
    assert job.wait(20)

    assert job.state is JobState.FAILED and job.error_status == 502
    assert "by hand" in (job.error or "") and server.url("/files/gone.pth") in (job.error or "")
    unknown = queue.submit("download", {"id": "nope"})
    assert unknown.wait(20) and unknown.state is JobState.FAILED and unknown.error_status == 404


def test_cancelling_the_job_keeps_the_part_and_a_later_download_resumes(server: ServerState, tmp_path: Path,
                                                                        queue: JobQueue) -> None:
    server.delay_s = 0.02  # about one second for the whole file
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    manager.register_job_type(queue)
    job = queue.submit("download", {"id": "test-model"})
    wait_until(lambda: job.progress.step >= 512 * 1024)

    queue.cancel(job.id)
    assert job.wait(20)

    assert job.state is JobState.CANCELLED
    part = manager.part_path("test-model")
    kept = part.stat().st_size
    assert 0 < kept < SIZE and PAYLOAD.startswith(part.read_bytes())
    assert files_under(tmp_path / "models") == []

    server.delay_s = 0.0
    path = manager.download("test-model")

    assert server.ranges()[-1] == f"bytes={kept}-"
    assert sha(path) == PAYLOAD_SHA
    assert files_under(tmp_path / "tmp") == []


def test_a_second_download_of_the_same_file_is_refused_or_waits(server: ServerState, tmp_path: Path) -> None:
    server.delay_s = 0.01
    manager = make_manager(tmp_path, entry(server.url("/files/model.pth")))
    results: dict[str, object] = {}

    def first() -> None:
        results["first"] = manager.fetch("test-model")

    thread = threading.Thread(target=first)
    thread.start()
    wait_until(lambda: manager.status("test-model").state is DownloadState.DOWNLOADING)

    with pytest.raises(DownloadBusy, match="already being downloaded"):
        manager.download("test-model")
    waited = manager.fetch("test-model", wait=True)
    thread.join(20)

    assert waited.already_present and sha(waited.path) == PAYLOAD_SHA
    assert len(server.requests) == 1


# -- catalogue and status -----------------------------------------------------------------------------------


def test_missing_lists_only_files_that_are_absent(tmp_path: Path) -> None:
    present = entry("http://127.0.0.1:9/a.pth", id="present", filename="a.pth")
    absent = entry("http://127.0.0.1:9/b.pth", id="absent", filename="b.pth", folder="GFPGAN")
    manager = make_manager(tmp_path, present, absent)
    manager.target_path("present").parent.mkdir(parents=True)
    manager.target_path("present").write_bytes(b"weights")

    assert [e.id for e in manager.missing()] == ["absent"]
    assert manager.status("present").state is DownloadState.PRESENT
    assert manager.status("absent").state is DownloadState.MISSING
    assert [s.to_json()["state"] for s in manager.statuses()] == ["present", "missing"]
    with pytest.raises(NotFound):
        manager.status("nope")


def test_the_default_catalogue_is_valid_and_extensible() -> None:
    defaults = default_catalogue()
    ids = [e.id for e in defaults]
    assert len(ids) == len(set(ids))
    by_file = {e.filename: e for e in defaults}
    assert by_file["v1-5-pruned-emaonly.safetensors"].folder == "Stable-diffusion"
    assert by_file["v1-5-pruned-emaonly.safetensors"].url.startswith(
        "https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/")
    assert {"RealESRGAN_x4plus.pth", "RealESRGAN_x4plus_anime_6B.pth", "GFPGANv1.4.pth", "RestoreFormer.pth",
            "detection_Resnet50_Final.pth", "parsing_parsenet.pth"} <= set(by_file)
    assert all(e.url.startswith("https://") for e in defaults)

    catalogue = Catalogue.with_defaults()
    extra = entry("https://github.com/x/y/releases/download/v1/sadtalker.safetensors", id="sadtalker-test",
                  folder="SadTalker", filename="sadtalker.safetensors")
    catalogue.add(extra)
    assert catalogue.get("sadtalker-test") is extra and "sadtalker-test" in catalogue
    with pytest.raises(ValueError, match="already registered"):
        catalogue.add(extra)
    with pytest.raises(NotFound, match="sadtalker-test"):
        catalogue.get("missing")


@pytest.mark.parametrize("changes", [
    {"filename": "../escape.pth"},
    {"filename": "sub/dir.pth"},
    {"folder": ".."},
    {"id": "Has Spaces"},
    {"sha256": "ABC"},
    {"size": 0},
    {"url": "file:///etc/passwd"},
])
def test_catalogue_entries_reject_unsafe_values(changes: dict[str, object]) -> None:
    fields = dict(id="ok", name="n", url="https://example.com/f", size=1, sha256=None, folder="ESRGAN",
                  filename="f.pth", description="d")
    fields.update(changes)
    with pytest.raises(ValueError):
        CatalogueEntry(**fields)  # type: ignore[arg-type]
