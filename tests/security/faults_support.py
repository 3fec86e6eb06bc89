"""What the fault tests share: stub extensions that misbehave on purpose, a small tmpfs, waiting, and looking
at outputs/ the way a user (a file manager, a gallery) does."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
from PIL import Image

# before_image_saved holds the save (its file name is already claimed) until the test kills the server. The
# hook timeout must be longer than the test: set extension_hook_timeout high in config.json.
HOLDS_THE_SAVE = '''
import time
from pathlib import Path

HERE = Path(__file__).parent


def register(api):
    def hold(event):
        (HERE / "entered").write_text(str(event.path))
        time.sleep(3600)

    api.on("before_image_saved", hold)
'''

# Hangs in before_generate for prompts that ask for it, then, past the timeout, tries to swap the request and
# the payload's fields for garbage: a timed-out hook must not change anything any more.
HANGS_ON_REQUEST = '''
import time
from pathlib import Path

HERE = Path(__file__).parent


def register(api):
    def hook(event):
        if "hang here" not in getattr(event.request, "prompt", ""):
            return
        (HERE / "entered").write_text("yes")
        time.sleep(2.5)
        event.request = "garbage"
        (HERE / "woke").write_text("yes")

    api.on("before_generate", hook)
'''


def wait_until(condition: Callable[[], object], timeout: float, what: str, poll: float = 0.05) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def visible_files(root: Path) -> list[Path]:
    """Files a user sees: no hidden file and nothing in hidden folders."""
    return sorted(p for p in root.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def hidden_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob(".*") if p.is_file())


def assert_complete_images(files: list[Path]) -> None:
    for path in files:
        if path.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
            with Image.open(path) as image:
                image.load()  # raises on a truncated file


def wait_job(http: httpx.Client, job_id: str, timeout: float = 120) -> dict:
    return wait_until(lambda: (s := http.get(f"/studio/v1/jobs/{job_id}").json())["state"] in
                      ("done", "failed", "cancelled") and s, timeout, f"job {job_id}")  # type: ignore[return-value]


@contextlib.contextmanager
def small_tmpfs(where: Path, size: str) -> Iterator[str | None]:
    """Mount a tmpfs of `size` at `where`; yields None on success, or why it could not be mounted."""
    where.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        yield f"cannot run mount: {e}"
        return
    if done.returncode != 0:
        yield f"mount -t tmpfs failed (needs root and CAP_SYS_ADMIN): {done.stderr.strip()}"
        return
    try:
        yield None
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)


def fill_disk(folder: Path, leave_bytes: int = 0) -> Path:
    """Fill the file system holding `folder` until at most `leave_bytes` (rounded to blocks) are free."""
    filler = folder / f"filler-{uuid.uuid4().hex[:8]}.bin"
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    size = max(0, free - leave_bytes)
    chunk = b"\0" * (1 << 16)
    with filler.open("wb", buffering=0) as f:  # unbuffered: a full disk shows at write(), never at close()
        try:
            while size > 0:
                size -= f.write(chunk[: min(len(chunk), size)]) or 0
        except OSError:
            pass  # already full
    return filler
