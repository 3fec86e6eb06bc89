"""Saving images the A1111 way: names, counters, sanitising, infotext, hooks, atomicity, grids."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from modules import atomic
from modules.engine.image_metadata import read_image_info
from modules.engine.outputs import (
    ImageSaver,
    NamingContext,
    grid_rows,
    is_visible_output,
    make_grid,
    next_sequence_number,
    sanitize_part,
)
from modules.engine.outputs.naming import FilenameGenerator
from modules.errors import UserError
from modules.extensions.hooks import HookRegistry, ImageSaveEvent
from modules.settings.core import core_sections
from modules.settings.store import Settings

FIXED_NOW = datetime(2024, 5, 1, 13, 45, 7)
INFOTEXT = "a cat\nNegative prompt: dog\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 8x8"


def settings(**overrides: Any) -> Callable[[str], Any]:
    """A settings getter over the core defaults; unknown keys raise like the real store does."""
    values = {opt.key: opt.default for section in core_sections() for opt in section.options}
    values.update(overrides)

    def get(key: str) -> Any:
        return values[key]

    return get


def make_saver(tmp_path: Path, hooks: HookRegistry | None = None, **overrides: Any) -> ImageSaver:
    return ImageSaver(tmp_path / "outputs", settings(**overrides), hooks, clock=lambda: FIXED_NOW)


def image(color: str = "red", size: tuple[int, int] = (8, 8)) -> Image.Image:
    return Image.new("RGB", size, color)


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def day_dir(tmp_path: Path, kind: str = "txt2img-images") -> Path:
    return tmp_path / "outputs" / kind / "2024-05-01"


# --- default naming and the counter ------------------------------------------------------------------------


def test_default_names_use_today_and_count_from_zero(tmp_path: Path) -> None:
    saver = ImageSaver(tmp_path / "outputs", settings(), None)  # the real clock
    first = saver.save(image(), "txt2img", NamingContext(seed=1234, prompt="a cat"), INFOTEXT)
    second = saver.save(image(), "txt2img", NamingContext(seed=1235, prompt="a cat"), INFOTEXT)
    folder = tmp_path / "outputs" / "txt2img-images" / date.today().isoformat()
    assert first == folder / "00000-1234.png"
    assert second == folder / "00001-1235.png"
    assert first.is_file() and second.is_file()


def test_counter_continues_after_highest_existing_number(tmp_path: Path) -> None:
    folder = day_dir(tmp_path)
    folder.mkdir(parents=True)
    for name in ("00041-x.png", "00003-y.png", "00040-z.txt", "notes.txt", "12ab-c.png", ".00099-hidden.png.x.tmp"):
        (folder / name).write_bytes(b"")
    path = make_saver(tmp_path).save(image(), "txt2img", NamingContext(seed=7), None)
    assert path.name == "00042-7.png"


def test_next_sequence_number_follows_a1111(tmp_path: Path) -> None:
    assert next_sequence_number(tmp_path / "missing") == 0
    for name in ("00005-a.png", "00012.png", "grid-0007.png", "grid-0002-seed.png", "00020x.png", ".00050.reserve"):
        (tmp_path / name).write_bytes(b"")
    # A reservation marker of a save in flight counts; "00020x" is not a number before its first "-".
    assert next_sequence_number(tmp_path) == 51
    assert next_sequence_number(tmp_path, "grid") == 8


def test_img2img_and_extras_folders(tmp_path: Path) -> None:
    saver = make_saver(tmp_path)
    i2i = saver.save(image(), "img2img", NamingContext(seed=5, prompt="x"), None)
    extras = saver.save(image(), "extras", NamingContext(seed=5, prompt="x"), None)
    assert i2i == day_dir(tmp_path, "img2img-images") / "00000-5.png"
    # A1111 saves extras without a subfolder and with the counter only.
    assert extras == tmp_path / "outputs" / "extras-images" / "00000.png"


def test_suffix_and_extension(tmp_path: Path) -> None:
    path = make_saver(tmp_path).save(
        image(), "txt2img", NamingContext(seed=9), None, suffix="-before-highres-fix", extension="jpg"
    )
    assert path.name == "00000-9-before-highres-fix.jpg"


def test_save_to_dirs_off_uses_seed_and_prompt(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, save_to_dirs=False)
    path = saver.save(image(), "txt2img", NamingContext(seed=42, prompt="a cat, sitting"), None)
    assert path == tmp_path / "outputs" / "txt2img-images" / "00000-42-a cat, sitting.png"


def test_without_counter_and_name_taken_gets_a_suffix(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, save_images_add_number=False)
    first = saver.save(image(), "txt2img", NamingContext(seed=42), None)
    second = saver.save(image("blue"), "txt2img", NamingContext(seed=42), None)
    assert (first.name, second.name) == ("42.png", "42-1.png")
    # An empty name needs the counter, whatever the setting (A1111).
    saver = make_saver(tmp_path, save_images_add_number=False, samples_filename_pattern="[none]")
    assert saver.save(image(), "txt2img", NamingContext(seed=42), None).name == "00043.png"


# --- pattern tokens ----------------------------------------------------------------------------------------


def full_context(**changes: Any) -> NamingContext:
    base: dict[str, Any] = dict(
        seed=42, prompt="a cat, on a mat", negative_prompt="dog", steps=20, cfg_scale=7.0, width=512,
        height=768, sampler="DPM++ 2M", scheduler="Karras", model_name="v1-5-pruned-emaonly",
        model_hash="6ce0161689", styles=("Photo", "None"), clip_skip=2, denoising_strength=0.75,
    )
    base.update(changes)
    return NamingContext(**base)


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("[seed]-[steps]-[cfg]-[sampler]", "42-20-7.0-DPM++ 2M"),
        ("[scheduler]_[sampler_scheduler]", "Karras_DPM++ 2M Karras"),
        ("[model_name]-[model_hash]", "v1-5-pruned-emaonly-6ce0161689"),
        ("[width]x[height]", "8x8"),  # A1111 names by the saved image's size
        ("[date]_[datetime]", "2024-05-01_20240501134507"),
        ("[datetime<%Y/%m/%d %H:%M>]", "2024_05_01 13_45"),
        ("[prompt]", "a_cat,_on_a_mat"),
        ("[prompt_spaces]", "a cat, on a mat"),
        ("[prompt_words]", "a cat on a mat"),
        ("[prompt_hash]", "890cffe6"),
        ("[prompt_hash<4>]", "890c"),
        ("[styles]", "Photo"),
        ("[clip_skip]-[denoising]", "2-0.75"),
        ("[seed][none]", "42"),
        ("[SEED]", "42"),
        ("[unknown]-[seed]", "[unknown]-42"),
        ("[seed]-[batch_number]-[generation_number]", "42"),  # one image: skipped with the "-" before
        ("[image_hash<6>]", None),
    ],
)
def test_pattern_tokens(pattern: str, expected: str | None) -> None:
    img = image()
    name = FilenameGenerator(full_context(), img, FIXED_NOW).apply(pattern)
    if expected is None:
        assert len(name) == 6 and all(c in "0123456789abcdef" for c in name)
    else:
        assert name == expected


def test_batch_and_generation_numbers() -> None:
    ctx = full_context(batch_size=4, batch_index=2, n_iter=3, iteration=1, all_seeds=(10, 11, 12, 13))
    gen = FilenameGenerator(ctx, None, FIXED_NOW)
    assert gen.apply("[batch_number]-[generation_number]") == "3-7"
    assert gen.apply("[seed_first]-[seed_last]") == "10-13"
    assert gen.apply("[width]") == "512"  # no image: the context's size


def test_patterns_build_folders_and_names(tmp_path: Path) -> None:
    saver = make_saver(
        tmp_path,
        directories_filename_pattern="[date]/[model_name]",
        samples_filename_pattern="[seed]-[steps]-[prompt_words]",
    )
    path = saver.save(image(), "txt2img", full_context(), None)
    assert path == day_dir(tmp_path) / "v1-5-pruned-emaonly" / "00000-42-20-a cat on a mat.png"


# --- sanitising --------------------------------------------------------------------------------------------


def test_sanitize_part_matches_a1111() -> None:
    raw = '  a <b>:"c"/d\\e|f?g*h#i\nj. . '
    assert sanitize_part(raw, replace_spaces=False) == "a _b___c__d_e_f_g_h_i_j"
    # Spaces become "_" before the ends are trimmed, so they stay (A1111 does the same).
    assert sanitize_part(raw) == "__a__b___c__d_e_f_g_h_i_j._._"
    assert sanitize_part("a b", replace_spaces=False) == "a b"
    assert sanitize_part("x" * 300) == "x" * 128


def test_prompt_cannot_leave_the_folder_or_add_levels(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, save_to_dirs=False)
    prompt = '../../etc/passwd: *evil* "x" <y>|z?\nline2\\back'
    path = saver.save(image(), "txt2img", NamingContext(seed=1, prompt=prompt), None)
    root = tmp_path / "outputs" / "txt2img-images"
    assert path.parent == root
    assert path.name == "00000-1-.._.._etc_passwd_ _evil_ _x_ _y__z__line2_back.png"
    assert all_files(tmp_path) == [path]


def test_folder_pattern_from_prompt_stays_inside(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, directories_filename_pattern="../[prompt_spaces]/..")
    for prompt in ("..", "../..", "/etc", ".hidden"):
        path = saver.save(image(), "txt2img", NamingContext(seed=1, prompt=prompt), None)
        root = (tmp_path / "outputs" / "txt2img-images").resolve()
        assert path.resolve().is_relative_to(root)
        assert not any(part.startswith(".") for part in path.relative_to(tmp_path).parts)
    assert sorted(p.parent.name for p in all_files(tmp_path)) == ["_", "_etc", "hidden", "txt2img-images"]


def test_long_prompt_is_cut(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, save_to_dirs=False)
    prompt = "masterpiece, best quality, " * 40
    path = saver.save(image(), "txt2img", NamingContext(seed=5, prompt=prompt), None)
    prompt_part = path.stem.split("-", 2)[2]
    assert prompt_part == sanitize_part(prompt, replace_spaces=False)
    assert len(prompt_part) <= 128
    assert len(path.name.encode()) <= 255


def test_long_non_ascii_pattern_fits_the_file_system(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, samples_filename_pattern="[prompt_spaces]-[prompt_spaces]-[prompt_spaces]")
    path = saver.save(image(), "txt2img", NamingContext(seed=5, prompt="猫" * 200), None)
    assert path.is_file()
    assert len(path.name.encode()) <= 255


def test_windows_reserved_names(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, directories_filename_pattern="[prompt_spaces]", save_images_add_number=False,
                       samples_filename_pattern="[prompt_spaces]")
    path = saver.save(image(), "txt2img", NamingContext(seed=5, prompt="CON"), None)
    assert path == tmp_path / "outputs" / "txt2img-images" / "CON_" / "CON_.png"
    path = saver.save(image(), "txt2img", NamingContext(seed=5, prompt="nul"), None)
    assert path.name == "nul_.png"


# --- infotext ----------------------------------------------------------------------------------------------


def test_png_has_infotext_in_parameters_chunk(tmp_path: Path) -> None:
    path = make_saver(tmp_path).save(image(), "txt2img", NamingContext(seed=42), INFOTEXT)
    with Image.open(path) as img:
        assert img.info["parameters"] == INFOTEXT


@pytest.mark.parametrize("fmt", ["jpg", "webp"])
def test_jpeg_and_webp_have_infotext_in_exif(tmp_path: Path, fmt: str) -> None:
    path = make_saver(tmp_path, samples_format=fmt).save(image(), "txt2img", NamingContext(seed=42), INFOTEXT)
    assert path.suffix == f".{fmt}"
    with Image.open(path) as img:
        assert read_image_info(img)[0] == INFOTEXT


def test_jpeg_falls_back_to_png_when_infotext_is_too_long(tmp_path: Path) -> None:
    long_text = "x" * 40_000
    path = make_saver(tmp_path, samples_format="jpg").save(image(), "txt2img", NamingContext(seed=42), long_text)
    assert path.name == "00000-42.png"
    with Image.open(path) as img:
        assert img.info["parameters"] == long_text
    assert all_files(tmp_path) == [path]


def test_enable_pnginfo_off_embeds_nothing(tmp_path: Path) -> None:
    saver = make_saver(tmp_path, enable_pnginfo=False)
    path = saver.save(image(), "txt2img", NamingContext(seed=42), INFOTEXT)
    with Image.open(path) as img:
        assert read_image_info(img)[0] is None


def test_save_txt_writes_sidecar(tmp_path: Path) -> None:
    path = make_saver(tmp_path, save_txt=True).save(image(), "txt2img", NamingContext(seed=42), INFOTEXT)
    assert path.with_suffix(".txt").read_text(encoding="utf-8") == INFOTEXT + "\n"
    assert not make_saver(tmp_path).save(image(), "txt2img", NamingContext(seed=42), INFOTEXT).with_suffix(
        ".txt"
    ).exists()


# --- hooks -------------------------------------------------------------------------------------------------


def test_hooks_fire_in_order_and_can_edit_infotext(tmp_path: Path) -> None:
    hooks = HookRegistry()
    calls: list[tuple[str, Path, bool]] = []

    def before(event: ImageSaveEvent) -> None:
        calls.append(("before", event.path, event.path.exists()))
        event.infotext = "edited by hook"
        event.image = image("blue")

    def after(event: ImageSaveEvent) -> None:
        calls.append(("after", event.path, event.path.exists()))

    hooks.register("before_image_saved", "ext", before)
    hooks.register("image_saved", "ext", after)
    path = make_saver(tmp_path, hooks).save(image(), "txt2img", NamingContext(seed=1), INFOTEXT)
    assert calls == [("before", path, False), ("after", path, True)]
    with Image.open(path) as img:
        assert img.info["parameters"] == "edited by hook"
        assert img.convert("RGB").getpixel((0, 0)) == (0, 0, 255)


def test_a_hook_that_breaks_the_event_does_not_break_the_save(tmp_path: Path) -> None:
    hooks = HookRegistry()

    def bad(event: ImageSaveEvent) -> None:
        event.image = "not an image"
        event.infotext = 42  # type: ignore[assignment]
        event.path = Path("/etc/evil.png")

    hooks.register("before_image_saved", "bad-ext", bad)
    path = make_saver(tmp_path, hooks).save(image(), "txt2img", NamingContext(seed=1), INFOTEXT)
    assert path == day_dir(tmp_path) / "00000-1.png"
    with Image.open(path) as img:
        assert img.info["parameters"] == INFOTEXT


# --- atomicity and concurrency -----------------------------------------------------------------------------


def test_threads_never_share_a_number(tmp_path: Path) -> None:
    saver = make_saver(tmp_path)
    results: list[Path] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        for i in range(5):
            path = saver.save(image(), "txt2img", NamingContext(seed=t * 100 + i), None)
            with lock:
                results.append(path)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    files = all_files(tmp_path)
    assert len(set(results)) == 40 and sorted(results) == files
    assert sorted(int(p.name[:5]) for p in files) == list(range(40))
    assert all(is_visible_output(p) for p in files)


def test_two_savers_on_one_folder_never_share_a_number(tmp_path: Path) -> None:
    savers = [make_saver(tmp_path), make_saver(tmp_path)]  # e.g. two processes: separate locks
    results: list[Path] = []

    def worker(t: int) -> None:
        for i in range(5):
            results.append(savers[t % 2].save(image(), "txt2img", NamingContext(seed=t * 100 + i), None))

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(int(p.name[:5]) for p in all_files(tmp_path)) == list(range(40))


def fail_with_enospc(*args: Any) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_full_disk_gives_clear_error_and_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = make_saver(tmp_path)
    monkeypatch.setattr(atomic.os, "fsync", fail_with_enospc)  # the temporary file exists when this fails
    with pytest.raises(UserError, match=r"the disk holding .*2024-05-01 is full; free space"):
        saver.save(image(), "txt2img", NamingContext(seed=1), INFOTEXT)
    assert all_files(tmp_path) == []


def test_full_disk_on_the_txt_removes_the_image(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saver = make_saver(tmp_path, save_txt=True)
    real_write_bytes = atomic.write_bytes

    def write_bytes(path: Path, data: bytes) -> None:
        if path.suffix == ".txt":
            fail_with_enospc()
        real_write_bytes(path, data)

    monkeypatch.setattr(atomic, "write_bytes", write_bytes)
    with pytest.raises(UserError, match="is full"):
        saver.save(image(), "txt2img", NamingContext(seed=1), INFOTEXT)
    assert all_files(tmp_path) == []


def test_other_os_errors_pass_through(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def denied(*args: Any) -> None:
        raise PermissionError(errno.EACCES, "denied")

    monkeypatch.setattr(atomic.os, "fsync", denied)
    with pytest.raises(PermissionError):
        make_saver(tmp_path).save(image(), "txt2img", NamingContext(seed=1), None)
    assert all_files(tmp_path) == []


def test_is_visible_output() -> None:
    assert is_visible_output(Path("00001-42.png"))
    assert not is_visible_output(Path(".00001-42.png.abcd1234.tmp"))
    assert not is_visible_output(Path(".00001.reserve"))
    assert not is_visible_output(Path("00001-42.tmp"))


# --- settings, formats and kinds ---------------------------------------------------------------------------


def test_works_with_the_real_settings_store(tmp_path: Path) -> None:
    store = Settings(tmp_path / "config.json", core_sections())
    saver = ImageSaver(tmp_path / "outputs", store.get, None, clock=lambda: FIXED_NOW)
    # grid_format, n_rows and friends are not registered: A1111 defaults apply.
    grid = saver.build_grid([image()] * 4)
    assert saver.save_grid(grid, "txt2img", NamingContext(seed=1), None).name == "grid-0000.png"


def test_bad_format_and_kind_are_refused(tmp_path: Path) -> None:
    saver = make_saver(tmp_path)
    with pytest.raises(UserError, match="cannot save images as 'bmp'"):
        saver.save(image(), "txt2img", NamingContext(seed=1), None, extension="bmp")
    with pytest.raises(ValueError, match="bad output kind"):
        saver.save(image(), "../txt2img", NamingContext(seed=1), None)


# --- grids -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("count", "cols", "rows"), [(1, 1, 1), (2, 2, 1), (3, 2, 2), (4, 2, 2), (5, 3, 2), (9, 3, 3)])
def test_grid_layout(count: int, cols: int, rows: int) -> None:
    tiles = [image(c, (16, 8)) for c in ["red", "green", "blue"] * 3][:count]
    grid = make_grid(tiles)
    assert grid.size == (cols * 16, rows * 8)
    assert grid.getpixel((0, 0)) == (255, 0, 0)
    if count == 5:  # the empty last cell stays black
        assert grid.getpixel((2 * 16 + 1, 8 + 1)) == (0, 0, 0)


def test_grid_row_rules() -> None:
    assert grid_rows(6, n_rows=3) == 3
    assert grid_rows(8, n_rows=0, batch_size=4) == 4  # one row per batch
    assert grid_rows(2, n_rows=5) == 2  # never more rows than images
    assert grid_rows(8, prevent_empty_spots=True) == 2  # 8 = 2 x 4, no empty cell
    assert grid_rows(7, prevent_empty_spots=True) == 1
    assert make_grid([image()] * 6, rows=3).size == (16, 24)
    with pytest.raises(ValueError):
        make_grid([])


def test_grid_file_names(tmp_path: Path) -> None:
    saver = make_saver(tmp_path)
    grid = make_grid([image()] * 4)
    first = saver.save_grid(grid, "txt2img", NamingContext(seed=42, prompt="a cat"), INFOTEXT)
    second = saver.save_grid(grid, "txt2img", NamingContext(seed=43, prompt="a cat"), INFOTEXT)
    folder = day_dir(tmp_path, "txt2img-grids")
    assert (first, second) == (folder / "grid-0000.png", folder / "grid-0001.png")
    with Image.open(first) as img:
        assert img.info["parameters"] == INFOTEXT
    extended = make_saver(tmp_path, grid_extended_filename=True)
    assert extended.save_grid(grid, "img2img", NamingContext(seed=42), None).name == "grid-0000-42.png"


def test_wants_grid(tmp_path: Path) -> None:
    saver = make_saver(tmp_path)
    assert not saver.wants_grid(1) and saver.wants_grid(2)
    assert not make_saver(tmp_path, grid_save=False).wants_grid(4)
