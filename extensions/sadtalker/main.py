"""SadTalker, the built-in talking-head extension: what it adds to the studio.

- the model folder `models/SadTalker` (the official `SadTalker_V0.0.2_{256,512}.safetensors`, the two
  `mapping_*.pth.tar` files, or the older per-network `.pth` set) and the download catalogue entries;
- the "sadtalker" job type on the studio's queue (so /studio/v1/jobs can submit it);
- the SadTalker tab, which takes images from txt2img/img2img ("Send to SadTalker");
- REST routes under /ext/sadtalker and the `python launch.py sadtalker` command;
- its settings.
Our own networks in `talking_head/` load the official checkpoints unchanged (see talking_head/__init__.py).
"""

from __future__ import annotations

from typing import Any

from .catalogue import DOWNLOADS
from .request import TalkingHeadRequest
from .runner import JOB_TYPE, MODEL_KIND, TalkingHeadRunner


def register(api: Any) -> None:
    api.add_model_kind(MODEL_KIND, [".safetensors", ".pth", ".tar", ".pth.tar"])
    for entry in DOWNLOADS:
        api.add_download(**entry)
    api.add_settings("SadTalker", [
        api.Option("sadtalker_max_seconds", 600.0, "Longest recording accepted (seconds)", "float",
                   minimum=1, maximum=7200,
                   help="Longer recordings are refused before any work starts; a video costs memory and time "
                        "in proportion to its length."),
        api.Option("sadtalker_keep_loaded", True, "Keep the SadTalker networks in RAM between videos", "bool",
                   help="Off frees about 1 GB of RAM after each video, at the cost of reading the files again."),
    ])
    runner = TalkingHeadRunner(api)
    api.add_job_type(JOB_TYPE, TalkingHeadRequest, runner.run, runs_on_cluster=True)

    def build() -> Any:
        from .ui import build_tab

        return build_tab(api, runner)

    api.add_tab("SadTalker", build, elem_id="tab_sadtalker", takes_images=True)

    from .routes import register_routes

    register_routes(api, runner)

    from . import command

    api.add_command("sadtalker", command.HELP, command.configure, command.run)
