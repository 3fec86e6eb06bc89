"""The official SadTalker files for the download manager (study.md §2). Sizes and hashes are left out where we
do not know them for certain: the manager then records the sha256 of what it fetched."""

from __future__ import annotations

_RC = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
_FACEXLIB = "https://github.com/xinntao/facexlib/releases/download/v0.1.0"
_LICENCE = "Apache-2.0 (SadTalker); see the SadTalker repository for the weights' terms"


def _entry(entry_id: str, name: str, filename: str, description: str, url: str = _RC,
           folder: str = "SadTalker", licence: str = _LICENCE) -> dict[str, object]:
    return {"id": entry_id, "name": name, "url": f"{url}/{filename}", "size": None, "sha256": None,
            "folder": folder, "filename": filename, "description": description, "licence_note": licence}


DOWNLOADS: tuple[dict[str, object], ...] = (
    _entry("sadtalker-256", "SadTalker V0.0.2 (256)", "SadTalker_V0.0.2_256.safetensors",
           "Talking-head networks at 256x256 (every network but MappingNet)."),
    _entry("sadtalker-512", "SadTalker V0.0.2 (512)", "SadTalker_V0.0.2_512.safetensors",
           "Talking-head networks at 512x512."),
    _entry("sadtalker-mapping-00229", "SadTalker MappingNet (crop)", "mapping_00229-model.pth.tar",
           "MappingNet for the crop, extcrop and resize preprocess modes."),
    _entry("sadtalker-mapping-00109", "SadTalker MappingNet (full)", "mapping_00109-model.pth.tar",
           "MappingNet for the full and extfull preprocess modes."),
    _entry("facexlib-alignment-awing", "facexlib AWing FAN landmarks", "alignment_WFLW_4HG.pth",
           "98-point face landmarks that SadTalker's face crop uses.", url=_FACEXLIB, folder="GFPGAN",
           licence="MIT (facexlib)"),
)
