"""System routes of /sdapi/v1: png-info, memory, cmd-flags, extensions.

`/memory` never imports torch: until a job has needed torch, `cuda` says so instead of starting it.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.encoders import jsonable_encoder

from modules.api.images import decode_b64_image
from modules.api.sdapi.models import ExtensionItem, PngInfoRequest, PngInfoResponse
from modules.cli import public_flags
from modules.engine.image_metadata import read_image_info
from modules.engine.infotext import parse_infotext
from modules.errors import UserError
from modules.extensions.git import Git, redact
from modules.extensions.loader import ExtensionRecord
from modules.services import Services

log = logging.getLogger(__name__)
_GIT_TIMEOUT_S = 5.0


def ram_figures() -> dict[str, Any]:
    """A1111's `ram` block: system-wide free (available), used and total bytes."""
    try:
        import psutil
    except ImportError:
        return {"error": "psutil is not installed"}
    vm = psutil.virtual_memory()
    return {"free": int(vm.available), "used": int(vm.total - vm.available), "total": int(vm.total)}


def cuda_figures(services: Services) -> dict[str, Any]:
    """A1111's `cuda` block from the memory manager, or `{"error": ...}` when there is nothing to report."""
    if "torch" not in sys.modules:
        return {"error": "torch is not loaded yet (no generation has run)"}
    info = services.engine.memory.describe()
    vram = info.get("vram")
    if info.get("error") or not vram or "free" not in vram:
        return {"error": info.get("error") or f"unavailable (device: {info.get('device') or 'none'})"}
    total, free = int(vram["total"]), int(vram["free"])
    return {
        "system": {"free": free, "used": total - free, "total": total},
        "allocated": {"current": vram.get("allocated", 0), "peak": vram.get("peak_allocated", 0)},
        "reserved": {"current": vram.get("reserved", 0), "peak": vram.get("reserved", 0)},
        "device": info.get("device_name"),
    }


def extension_item(record: ExtensionRecord) -> ExtensionItem:
    """A1111's extension entry; git details only for a user extension that is a git checkout."""
    item = ExtensionItem(name=record.folder.name, version=record.manifest.version if record.manifest else None,
                         enabled=record.state != "disabled")
    if record.builtin or not (record.folder / ".git").exists():
        return item
    git, cwd = Git(), Path(record.folder)
    try:
        item.commit_hash = git.run(["rev-parse", "HEAD"], cwd=cwd, timeout_s=_GIT_TIMEOUT_S) or None
        branch = git.run(["rev-parse", "--abbrev-ref", "HEAD"], cwd=cwd, timeout_s=_GIT_TIMEOUT_S)
        item.branch = None if branch in ("", "HEAD") else branch
        date = git.run(["log", "-1", "--format=%ct"], cwd=cwd, timeout_s=_GIT_TIMEOUT_S)
        item.commit_date = int(date) if date.isdigit() else None
        item.remote = redact(git.run(["remote", "get-url", "origin"], cwd=cwd, timeout_s=_GIT_TIMEOUT_S)) or None
    except UserError as e:
        log.debug("git details of %s unavailable: %s", record.folder, e.message)
    return item


def router(services: Services) -> APIRouter:
    r = APIRouter()

    @r.post("/png-info", response_model=PngInfoResponse)
    def png_info(req: PngInfoRequest) -> PngInfoResponse:
        """The infotext inside an image, its other text items, and the infotext parsed (A1111's PNG Info)."""
        if not req.image.strip():
            return PngInfoResponse(info="")
        image = decode_b64_image(req.image)
        geninfo, items = read_image_info(image)
        geninfo = geninfo or ""
        return PngInfoResponse(info=geninfo, items=items, parameters=parse_infotext(geninfo))

    @r.get("/memory")
    def memory() -> dict[str, Any]:
        return {"ram": ram_figures(), "cuda": cuda_figures(services)}

    @r.get("/cmd-flags")
    def cmd_flags() -> dict[str, Any]:
        """The command-line flags in force, passwords masked."""
        return jsonable_encoder(public_flags(services.args))

    @r.get("/extensions", response_model=list[ExtensionItem])
    def extensions() -> list[ExtensionItem]:
        return [extension_item(record) for record in services.extensions.records]

    return r
