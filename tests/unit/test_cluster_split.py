"""A job's batch count split over cluster workers and put back together (`modules.cluster.split`): each part makes
the images one machine would make with the same seeds, the merged result reads like one machine's (images in
order, ControlNet maps last, A1111's per-image info lists whole), the grid of all parts is saved once, and the
paths a worker sent are pointed at the server's copies."""

from __future__ import annotations

import copy
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modules.cluster.split import merge, remap_paths, split
from modules.engine.extras.requests import ExtrasRequest
from modules.engine.extras.results import ExtrasImage, ExtrasResult
from modules.engine.outputs import ImageSaver
from modules.engine.requests import MAX_SEED, Img2ImgRequest, Txt2ImgRequest
from modules.engine.results import GeneratedImage, GenerationResult

COLORS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (255, 0, 255), (0, 255, 255), (128, 0, 0),
          (0, 128, 0)]


def solid(color: tuple[int, int, int], size: int = 8) -> Image.Image:
    return Image.new("RGB", (size, size), color)


def extras_request() -> ExtrasRequest:
    return ExtrasRequest(images=[solid(COLORS[0])], gfpgan_visibility=1.0)


# -- split -------------------------------------------------------------------------------------------------------


def test_a_batch_count_becomes_one_part_per_batch_with_the_seeds_one_machine_would_use() -> None:
    request = Txt2ImgRequest(prompt="a fox", n_iter=4, batch_size=2, seed=100, subseed=7, subseed_strength=0.3,
                             steps=3, width=64, height=64)
    parts = split(request)
    assert len(parts) == 4
    assert all(isinstance(p, Txt2ImgRequest) for p in parts)
    assert [p.n_iter for p in parts] == [1, 1, 1, 1]
    assert [p.batch_size for p in parts] == [2, 2, 2, 2]
    assert [p.seed for p in parts] == [100, 102, 104, 106]
    assert [p.subseed for p in parts] == [7, 9, 11, 13]
    # Each part would save a grid of its own batch; the grid of the whole job is made when they are merged.
    assert all(p.do_not_save_grid for p in parts)
    # Everything else is the job's own request.
    assert all(p.prompt == "a fox" and p.steps == 3 and p.width == 64 and p.subseed_strength == 0.3 for p in parts)
    # The job's request is left as it was.
    assert (request.n_iter, request.seed, request.subseed, request.do_not_save_grid) == (4, 100, 7, False)


def test_a_random_seed_is_drawn_once_for_the_whole_job() -> None:
    request = Txt2ImgRequest(n_iter=5, batch_size=3, seed=-1, subseed=-1)
    parts = split(request)
    first, first_sub = parts[0].seed, parts[0].subseed
    assert 0 <= first <= MAX_SEED and 0 <= first_sub <= MAX_SEED
    # Part k holds image k * batch_size of one job, so its seed follows the first part's (wrapping at MAX_SEED).
    for k, part in enumerate(parts):
        assert part.seed == (first + 3 * k) % (MAX_SEED + 1)
        assert part.subseed == (first_sub + 3 * k) % (MAX_SEED + 1)
    assert request.seed == -1 and request.subseed == -1


def test_seeds_near_the_top_wrap_as_one_machine_wraps_them() -> None:
    parts = split(Txt2ImgRequest(n_iter=3, batch_size=1, seed=MAX_SEED - 1, subseed=0))
    assert [p.seed for p in parts] == [MAX_SEED - 1, MAX_SEED, 0]


def test_img2img_is_split_too() -> None:
    parts = split(Img2ImgRequest(init_images=[solid(COLORS[0])], n_iter=2, batch_size=1, seed=5))
    assert [type(p) for p in parts] == [Img2ImgRequest, Img2ImgRequest]
    assert [p.seed for p in parts] == [5, 6]


def test_a_single_batch_and_other_jobs_are_not_split() -> None:
    one = Txt2ImgRequest(n_iter=1, batch_size=4, seed=-1)
    assert split(one) == [one] and split(one)[0] is one
    assert split(one)[0].seed == -1  # the worker draws it, as one machine would
    extras = extras_request()
    assert split(extras)[0] is extras and len(split(extras)) == 1


# -- merge -------------------------------------------------------------------------------------------------------


def part_result(first_seed: int, count: int, colors: list[tuple[int, int, int]], *, control_map: bool = False,
                notes: tuple[str, ...] = ()) -> GenerationResult:
    """What a worker's txt2img part returns: `count` images from `first_seed`, and A1111's info block."""
    seeds = [first_seed + i for i in range(count)]
    images = [GeneratedImage(solid(c), s, s + 1000, f"a fox\nSteps: 3, Seed: {s}", None) for s, c in zip(seeds, colors)]
    result = GenerationResult(images=images, notes=list(notes))
    result.info = {
        "prompt": "a fox", "all_prompts": ["a fox"] * count, "negative_prompt": "", "all_negative_prompts": [""] * count,
        "seed": seeds[0] if seeds else -1, "all_seeds": seeds, "subseed": seeds[0] + 1000 if seeds else -1,
        "all_subseeds": [s + 1000 for s in seeds], "infotexts": result.infotexts, "index_of_first_image": 0,
        "sd_model_name": "tiny", "sd_model_hash": "7ab498371a", "steps": 3, "batch_size": count,
    }
    if control_map:  # ControlNet's detected map comes after the images, with no seed of its own
        result.images.append(GeneratedImage(solid((9, 9, 9)), -1, -1, "", None))
    return result


def saver_for(tmp_path: Path, **settings: Any) -> ImageSaver:
    values = {"grid_save": True, "grid_only_if_multiple": True, "directories_filename_pattern": "[date]", **settings}
    return ImageSaver(tmp_path / "outputs", values.__getitem__, clock=lambda: datetime(2026, 11, 22, 12, 0))


def four_parts() -> tuple[Txt2ImgRequest, list[GenerationResult]]:
    request = Txt2ImgRequest(prompt="a fox", n_iter=4, batch_size=2, seed=100, steps=3, width=8, height=8)
    results = [part_result(100 + 2 * k, 2, COLORS[2 * k:2 * k + 2], notes=(f"note {k % 2}",)) for k in range(4)]
    return request, results


def test_merged_images_and_info_are_in_part_order(tmp_path: Path) -> None:
    request, results = four_parts()
    merged = merge(request, results, saver_for(tmp_path, grid_save=False), "txt2img")
    assert [g.seed for g in merged.images] == list(range(100, 108))
    assert [g.image.getpixel((0, 0)) for g in merged.images] == COLORS
    info = merged.info
    assert info["all_seeds"] == list(range(100, 108))
    assert info["all_subseeds"] == list(range(1100, 1108))
    assert info["all_prompts"] == ["a fox"] * 8 and info["all_negative_prompts"] == [""] * 8
    assert info["infotexts"] == merged.infotexts == [f"a fox\nSteps: 3, Seed: {s}" for s in range(100, 108)]
    assert (info["seed"], info["subseed"], info["index_of_first_image"]) == (100, 1100, 0)
    assert info["sd_model_name"] == "tiny"
    # A note every part made is shown once, in the order they came.
    assert merged.notes == ["note 0", "note 1"]
    assert merged.grid is None and not (tmp_path / "outputs").exists()


def test_the_parts_are_not_changed_by_the_merge(tmp_path: Path) -> None:
    request, results = four_parts()
    seeds_before = [[g.seed for g in r.images] for r in results]
    infos_before = copy.deepcopy([r.info for r in results])
    merge(request, results, saver_for(tmp_path), "txt2img")
    assert [[g.seed for g in r.images] for r in results] == seeds_before
    assert [r.info for r in results] == infos_before


def test_controlnet_maps_of_the_first_part_only_come_last(tmp_path: Path) -> None:
    request = Txt2ImgRequest(n_iter=3, batch_size=1, seed=10, width=8, height=8)
    results = [part_result(10 + k, 1, [COLORS[k]], control_map=True) for k in range(3)]
    merged = merge(request, results, saver_for(tmp_path), "txt2img")
    assert [g.seed for g in merged.images] == [10, 11, 12, -1]
    assert merged.images[-1].image.getpixel((0, 0)) == (9, 9, 9)
    assert merged.info["all_seeds"] == [10, 11, 12]
    # The grid holds the generated images only, not the map: 3 images make 2 rows of 2 cells of 8 px.
    assert merged.grid is not None
    with Image.open(merged.grid.path) as grid:
        assert grid.size == (16, 16)
        cells = [grid.getpixel((x * 8 + 4, y * 8 + 4)) for y in range(2) for x in range(2)][:3]
    assert cells == COLORS[:3]


def test_a_grid_of_every_part_is_saved_once(tmp_path: Path) -> None:
    request, results = four_parts()
    merged = merge(request, results, saver_for(tmp_path), "txt2img")
    grids = tmp_path / "outputs" / "txt2img-grids" / "2026-11-22"
    assert sorted(p.name for p in grids.iterdir()) == ["grid-0000.png"]
    assert merged.grid is not None and merged.grid.path == grids / "grid-0000.png"
    assert (merged.grid.seed, merged.grid.infotext) == (100, merged.images[0].infotext)
    with Image.open(merged.grid.path) as grid:
        grid.load()
        # 8 images: round(sqrt(8)) = 3 rows of 3, filled row by row in part order.
        assert grid.size == (24, 24)
        cells = [grid.getpixel((x * 8 + 4, y * 8 + 4)) for y in range(3) for x in range(3)]
        assert cells[:8] == COLORS
        assert "Seed: 100" in grid.info.get("parameters", "")
    # No image was saved by the merge: the parts' images were saved on their workers.
    assert not (tmp_path / "outputs" / "txt2img-images").exists()


def test_a_second_job_gets_the_next_grid_number(tmp_path: Path) -> None:
    saver = saver_for(tmp_path)
    first = merge(*four_parts(), saver, "txt2img")
    second = merge(*four_parts(), saver, "txt2img")
    assert (first.grid.path.name, second.grid.path.name) == ("grid-0000.png", "grid-0001.png")


def test_no_grid_when_the_request_or_the_settings_say_so(tmp_path: Path) -> None:
    request, results = four_parts()
    no_grid = request.model_copy(update={"do_not_save_grid": True})
    assert merge(no_grid, results, saver_for(tmp_path), "txt2img").grid is None
    assert merge(request, results, saver_for(tmp_path, grid_save=False), "txt2img").grid is None
    assert not list(tmp_path.rglob("*.png"))


def test_no_grid_for_a_single_image(tmp_path: Path) -> None:
    # Two parts, but the second was interrupted before making anything: one image, no grid.
    request = Txt2ImgRequest(n_iter=2, batch_size=1, seed=3, width=8, height=8)
    results = [part_result(3, 1, [COLORS[0]]), part_result(4, 0, [])]
    merged = merge(request, results, saver_for(tmp_path), "img2img")
    assert [g.seed for g in merged.images] == [3]
    assert merged.info["all_seeds"] == [3] and merged.info["seed"] == 3
    assert merged.grid is None and not list(tmp_path.rglob("*.png"))


def test_an_interrupted_job_keeps_a_grid_of_what_was_made(tmp_path: Path) -> None:
    """Interrupt stops the parts not started yet: one machine still saves a grid of the images it made, so the
    farm does too, though only one part came back."""
    request = Txt2ImgRequest(n_iter=3, batch_size=2, seed=20, width=8, height=8)
    merged = merge(request, [part_result(20, 2, COLORS[:2])], saver_for(tmp_path), "txt2img")
    assert [g.seed for g in merged.images] == [20, 21]
    assert merged.grid is not None and merged.grid.path.name == "grid-0000.png"
    with Image.open(merged.grid.path) as grid:
        assert grid.size == (16, 8)


def test_img2img_grids_go_to_their_own_folder(tmp_path: Path) -> None:
    request = Img2ImgRequest(init_images=[solid(COLORS[0])], n_iter=2, batch_size=1, seed=1, width=8,
                             height=8)
    results = [part_result(1, 1, [COLORS[0]]), part_result(2, 1, [COLORS[1]])]
    merged = merge(request, results, saver_for(tmp_path), "img2img")
    assert merged.grid.path.parent == tmp_path / "outputs" / "img2img-grids" / "2026-11-22"


def test_one_part_or_another_job_is_returned_as_it_came(tmp_path: Path) -> None:
    one = part_result(1, 2, COLORS[:2])
    assert merge(Txt2ImgRequest(batch_size=2), [one], saver_for(tmp_path), "txt2img") is one
    extras = ExtrasResult(images=[ExtrasImage(name="a.png")])
    assert merge(extras_request(), [extras], saver_for(tmp_path), "extras") is extras
    assert not (tmp_path / "outputs").exists()


# -- remap_paths -------------------------------------------------------------------------------------------------

STAGING = "/tmp/sd-studio-worker-abc/outputs"
OLD_IMAGE = f"{STAGING}/txt2img-images/2026-11-22/00000-100.png"
OLD_GRID = f"{STAGING}/txt2img-grids/2026-11-22/grid-0000.png"


def moved(tmp_path: Path) -> dict[str, Path]:
    return {OLD_IMAGE: tmp_path / "txt2img-images/2026-11-22/00041-100.png",
            OLD_GRID: tmp_path / "txt2img-grids/2026-11-22/grid-0007.png"}


def test_paths_in_a_generation_result_point_at_the_server_copies(tmp_path: Path) -> None:
    image = solid(COLORS[0])
    result = GenerationResult(
        images=[GeneratedImage(image, 100, 1, "infotext", Path(OLD_IMAGE)),
                GeneratedImage(image, -1, -1, "", None)],
        grid=GeneratedImage(image, 100, 1, "infotext", Path(OLD_GRID)),
        info={"seed": 100, "infotexts": ["infotext"], "files": [OLD_IMAGE], "nested": {"grid": OLD_GRID}},
        notes=["saved to somewhere"])
    new = remap_paths(result, moved(tmp_path))
    assert isinstance(new, GenerationResult)
    assert new.images[0].path == tmp_path / "txt2img-images/2026-11-22/00041-100.png"
    assert isinstance(new.images[0].path, Path)
    assert new.images[1].path is None
    assert new.grid.path == tmp_path / "txt2img-grids/2026-11-22/grid-0007.png"
    # A path given as text stays text.
    assert new.info["files"] == [str(tmp_path / "txt2img-images/2026-11-22/00041-100.png")]
    assert new.info["nested"] == {"grid": str(tmp_path / "txt2img-grids/2026-11-22/grid-0007.png")}
    # Everything else is left as it was: other text, numbers, the images themselves.
    assert new.info["seed"] == 100 and new.info["infotexts"] == ["infotext"]
    assert new.notes == ["saved to somewhere"]
    assert new.images[0].image is image and new.images[0].infotext == "infotext"
    # The worker's result is not touched.
    assert result.images[0].path == Path(OLD_IMAGE) and result.grid.path == Path(OLD_GRID)
    assert result.info["files"] == [OLD_IMAGE] and result.info["nested"] == {"grid": OLD_GRID}


def test_paths_in_an_extras_result_point_at_the_server_copies(tmp_path: Path) -> None:
    old = f"{STAGING}/extras-images/00000.png"
    new_home = tmp_path / "extras-images" / "00012.png"
    result = ExtrasResult(images=[ExtrasImage(name="in.png", infotext="Postprocess upscaler: x", path=Path(old)),
                                  ExtrasImage(name="unsaved.png")],
                          notes=[old])
    new = remap_paths(result, {old: new_home})
    assert isinstance(new, ExtrasResult) and isinstance(new.images[0], ExtrasImage)
    assert new.images[0].path == new_home and new.images[0].name == "in.png"
    assert new.images[0].infotext == "Postprocess upscaler: x"
    assert new.images[1].path is None
    assert new.notes == [str(new_home)]
    assert result.images[0].path == Path(old) and result.notes == [old]


def test_plain_containers_and_unknown_values(tmp_path: Path) -> None:
    paths = moved(tmp_path)
    value = {"a": [Path(OLD_IMAGE), (OLD_GRID, 3)], "b": "txt2img-images/2026-11-22/00000-100.png", "c": None}
    new = remap_paths(value, paths)
    assert new == {"a": [paths[OLD_IMAGE], (str(paths[OLD_GRID]), 3)],
                   "b": "txt2img-images/2026-11-22/00000-100.png", "c": None}
    assert value["a"][0] == Path(OLD_IMAGE)  # the input is rebuilt, not edited
    assert remap_paths("not a path", paths) == "not a path"
    assert remap_paths(42, paths) == 42
    assert remap_paths(OLD_IMAGE, {}) == OLD_IMAGE


@pytest.mark.parametrize("container", [list, tuple])
def test_sequences_keep_their_type(tmp_path: Path, container: type) -> None:
    new = remap_paths(container([Path(OLD_IMAGE)]), moved(tmp_path))
    assert type(new) is container and new[0] == moved(tmp_path)[OLD_IMAGE]
