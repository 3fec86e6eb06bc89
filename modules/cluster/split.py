"""A batch count over several workers, and the parts put back together as one job's result.

Part k of a txt2img/img2img job is the same request with batch count 1 and the seeds image k * batch_size
would have had (A1111 numbers images seed + i), so the farm makes the very images one machine would. The
grid is made here, from all parts, because no one worker sees them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from modules.engine.outputs import ImageSaver, NamingContext
from modules.engine.requests import GenerationRequest
from modules.engine.results import GeneratedImage, GenerationResult
from modules.engine.seeds import seeds_for_job

# info keys that hold one entry per image: concatenated across parts
_PER_IMAGE = ("all_prompts", "all_negative_prompts", "all_seeds", "all_subseeds", "infotexts")


def split(request: BaseModel) -> list[BaseModel]:
    """The parts of a job: one per batch of a txt2img/img2img request, else the request itself."""
    if not isinstance(request, GenerationRequest) or request.n_iter == 1:
        return [request]
    seeds = seeds_for_job(request.seed, request.subseed, request.subseed_strength, request.total_images)
    size = request.batch_size
    # The grid of all parts is saved by `merge`; a part saving its own would leave one grid per batch.
    return [request.model_copy(update={"n_iter": 1, "seed": seeds[k * size].seed, "subseed": seeds[k * size].subseed,
                                       "do_not_save_grid": True})
            for k in range(request.n_iter)]


def merge(request: BaseModel, results: Sequence[Any], saver: ImageSaver, mode: str) -> Any:
    """One job's result from its parts' (in part order); the result of a job that was not split is returned as
    it is."""
    # Not `len(results) == 1`: when Interrupt stops a split job after one part, one machine would still save a
    # grid of the images made, so that one part goes through the merge too (its own grid was turned off).
    if not isinstance(request, GenerationRequest) or request.n_iter == 1:
        return results[0]
    parts = [r for r in results if isinstance(r, GenerationResult)]
    merged = GenerationResult()
    merged.images = [g for part in parts for g in part.images if g.seed >= 0]
    control_maps = [g for g in parts[0].images if g.seed < 0] if parts else []  # the same for every part
    merged.info = _merged_info(parts, len(merged.images))
    merged.notes = list(dict.fromkeys(n for part in parts for n in part.notes))
    _save_grid(request, merged, saver, mode)
    merged.images.extend(control_maps)
    return merged


def _merged_info(parts: Sequence[GenerationResult], count: int) -> dict[str, Any]:
    with_images = [p for p in parts if p.images] or list(parts)
    info = dict(with_images[0].info) if with_images else {}
    for key in _PER_IMAGE:
        info[key] = [v for p in parts for v in p.info.get(key, [])]
    if info.get("all_seeds"):
        info["seed"], info["subseed"] = info["all_seeds"][0], info["all_subseeds"][0]
    info["index_of_first_image"] = 0
    return info


def _save_grid(request: GenerationRequest, result: GenerationResult, saver: ImageSaver, mode: str) -> None:
    """As `records.save_grid` does on one machine: the settings decide, from every image of the job."""
    images = result.images
    if len(images) < 2 or request.do_not_save_grid or not saver.wants_grid(len(images)):
        return
    grid = saver.build_grid([g.image for g in images], request.batch_size)
    first = images[0]
    context = NamingContext(
        seed=first.seed, prompt=request.prompt, negative_prompt=request.negative_prompt, steps=request.steps,
        cfg_scale=request.cfg_scale, width=request.width, height=request.height, sampler=request.sampler_name,
        model_name=result.info.get("sd_model_name"), model_hash=result.info.get("sd_model_hash"),
        styles=tuple(request.styles), clip_skip=request.clip_skip, batch_size=request.batch_size,
        n_iter=request.n_iter)
    path = saver.save_grid(grid, mode, context, first.infotext)
    result.grid = GeneratedImage(grid, first.seed, first.subseed, first.infotext, path)


def remap_paths(value: Any, moved: Mapping[str, Path]) -> Any:
    """`value` with every path (a Path, or a str that is one) found in `moved` replaced by its new home.

    Results are dataclasses, pydantic models, dicts and lists of any of these; they are rebuilt, not edited,
    so nothing a worker sent is half-changed if this fails.
    """
    return _remap(value, lambda text: moved.get(text))


def _remap(value: Any, new: Callable[[str], Path | None]) -> Any:
    if isinstance(value, Path):
        return new(str(value)) or value
    if isinstance(value, str):
        found = new(value)
        return str(found) if found is not None else value
    if isinstance(value, list | tuple):
        return type(value)(_remap(v, new) for v in value)
    if isinstance(value, dict):
        return {k: _remap(v, new) for k, v in value.items()}
    if isinstance(value, BaseModel):
        return value.model_copy(update={k: _remap(getattr(value, k), new) for k in type(value).model_fields})
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: _remap(getattr(value, f.name), new)
                                             for f in dataclasses.fields(value) if f.init})
    return value
