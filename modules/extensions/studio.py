"""`api.studio`: the part of the running app an extension may use, behind one narrow object.

Extensions import nothing from `modules`, yet a talking-head video needs what the image tabs use: the one job
queue (so UI, REST and command-line runs wait their turn with txt2img), the one device manager (so SD weights
leave the GPU while the extension's networks run, and the other way round), face restoration, upscalers, the
outputs folder and the download manager. This object hands out exactly those and nothing else, so the engine
stays free to change behind it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modules.downloads import DownloadRequest
from modules.downloads.manager import JOB_TYPE as DOWNLOAD_JOB
from modules.engine.outputs import next_sequence_number

if TYPE_CHECKING:
    from PIL import Image
    from pydantic import BaseModel

    from modules.engine.memory.devices import DeviceChoice
    from modules.jobs import Job
    from modules.services import Services


class Studio:
    def __init__(self, services: Services) -> None:
        self._services = services

    # -- jobs ---------------------------------------------------------------------------------------------------

    def submit(self, job_type: str, request: BaseModel | dict[str, Any]) -> Job:
        """Queue a job on the one GPU queue; it runs after the jobs already waiting (UI, REST or CLI)."""
        return self._services.jobs.submit(job_type, request)

    def job(self, job_id: str) -> Job:
        return self._services.jobs.get(job_id)

    def position(self, job: Job) -> int | None:
        """Jobs that run before `job` starts (0: running or next; None: finished)."""
        return self._services.jobs.position(job)

    def cancel(self, job_id: str) -> Job:
        return self._services.jobs.cancel(job_id)

    def start_worker(self) -> None:
        """Start the queue's worker (the server does this itself; a command-line tool calls it)."""
        self._services.jobs.start()

    # -- the device -----------------------------------------------------------------------------------------------

    @contextmanager
    def device(self, name: str, release: Callable[[], object]) -> Iterator[DeviceChoice]:
        """Run on the studio's device as guest `name`: SD pipelines (and other guests) leave the accelerator
        first, and `release()` is called before they come back. Out-of-memory errors become the studio's
        `OutOfMemory`, a user error with advice. Call it on the job worker."""
        memory = self._services.engine.memory
        memory.add_guest(name, release)
        with memory.guest(name) as choice:
            yield choice

    # -- images ---------------------------------------------------------------------------------------------------

    def restore_faces(self, image: Image.Image, name: str | None = None,
                      check: Callable[[], object] | None = None) -> Image.Image:
        """The faces of `image` restored with `name` (None: the `face_restoration_model` setting)."""
        return self._services.engine.face_restorers.restore(image, name, check=check).image

    def check_face_restorer(self, name: str) -> None:
        """Raise the user error `restore_faces` would (unknown name, or its file missing, with how to get it)."""
        self._services.engine.face_restorers.find(name)

    def upscaler_names(self) -> list[str]:
        return self._services.engine.upscalers.names()

    def upscale(self, image: Image.Image, name: str, scale: float,
                check: Callable[[], object] | None = None) -> Image.Image:
        """`image` upscaled by `scale` with upscaler `name`, tiled as the Extras tab tiles."""
        engine = self._services.engine
        tile, overlap = engine.upscaler_tiling()
        return engine.upscalers.upscale(image, name, scale=scale, tile=tile, overlap=overlap, multiple_of=2,
                                        check=check)

    # -- folders and downloads --------------------------------------------------------------------------------

    def check_upscaler(self, name: str) -> None:
        """Raise the user error `upscale` would for an unknown upscaler name."""
        self._services.engine.upscalers.find(name)

    def outputs_folder(self, name: str) -> Path:
        """`outputs/<name>` (A1111's layout: one folder per kind of output)."""
        return self._services.paths.outputs / name

    def next_output_number(self, folder: Path) -> int:
        """The next free A1111 counter (`00042-...`) in `folder`."""
        return next_sequence_number(folder)

    def catalogue_ids(self, folder: str, filenames: list[str]) -> dict[str, str]:
        """filename -> catalogue id, for those of `filenames` in model folder `folder` the catalogue lists."""
        wanted = set(filenames)
        return {entry.filename: entry.id for entry in self._services.downloads.catalogue
                if entry.folder == folder and entry.filename in wanted}

    def download(self, entry_id: str) -> Job:
        """Queue a catalogue download on the download queue (it never waits behind GPU jobs)."""
        return self._services.download_jobs.submit(DOWNLOAD_JOB, DownloadRequest(id=entry_id))
