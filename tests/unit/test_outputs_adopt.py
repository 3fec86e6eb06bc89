"""Filing a cluster worker's saved files into the server's outputs tree (`modules.engine.outputs.adopt`): the
worker numbers from 00000 in an empty folder, the server gives each file the next free number of its own folder
(an image and its .txt keep one number), grids get the next grid number, and a name that could leave the outputs
folder is refused before anything is written."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from modules.engine.outputs import ImageSaver, NamingContext
from modules.engine.outputs.adopt import adopt_files
from modules.errors import UserError

DAY = "txt2img-images/2026-11-22"
GRIDS = "txt2img-grids/2026-11-22"


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def hidden_under(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*")]


def prefill(folder: Path, *names: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"already here")


def test_worker_numbers_become_the_next_numbers_of_the_server_folder(tmp_path: Path) -> None:
    prefill(tmp_path / DAY, "00000-1.png", "00001-2.png", "00007-9.png", "notes.md")
    placed = adopt_files(tmp_path, [
        (f"{DAY}/00000-100.png", b"image 100"),
        (f"{DAY}/00000-100.txt", b"infotext 100"),
        (f"{DAY}/00001-101.png", b"image 101"),
        (f"{DAY}/00001-101.txt", b"infotext 101"),
    ])
    folder = tmp_path / DAY
    assert placed == {
        f"{DAY}/00000-100.png": folder / "00008-100.png",
        f"{DAY}/00000-100.txt": folder / "00008-100.txt",
        f"{DAY}/00001-101.png": folder / "00009-101.png",
        f"{DAY}/00001-101.txt": folder / "00009-101.txt",
    }
    assert (folder / "00008-100.png").read_bytes() == b"image 100"
    assert (folder / "00008-100.txt").read_bytes() == b"infotext 100"
    assert (folder / "00009-101.png").read_bytes() == b"image 101"
    # What was there is untouched.
    assert (folder / "00000-1.png").read_bytes() == b"already here"
    assert (folder / "00007-9.png").read_bytes() == b"already here"
    assert hidden_under(tmp_path) == []


def test_an_empty_or_new_folder_starts_at_zero(tmp_path: Path) -> None:
    placed = adopt_files(tmp_path, [(f"{DAY}/00000-5.png", b"a"), ("extras-images/00000.png", b"b")])
    assert placed == {f"{DAY}/00000-5.png": tmp_path / DAY / "00000-5.png",
                      "extras-images/00000.png": tmp_path / "extras-images" / "00000.png"}
    assert files_under(tmp_path) == ["extras-images/00000.png", f"{DAY}/00000-5.png"]


def test_a_second_adoption_continues_the_numbering(tmp_path: Path) -> None:
    # Two parts of a job come back from two workers, each numbered from 00000.
    first = adopt_files(tmp_path, [(f"{DAY}/00000-100.png", b"a"), (f"{DAY}/00001-101.png", b"b")])
    second = adopt_files(tmp_path, [(f"{DAY}/00000-102.png", b"c"), (f"{DAY}/00001-103.png", b"d")])
    assert [p.name for p in first.values()] == ["00000-100.png", "00001-101.png"]
    assert [p.name for p in second.values()] == ["00002-102.png", "00003-103.png"]
    assert (tmp_path / DAY / "00003-103.png").read_bytes() == b"d"


def test_grids_get_the_next_grid_number(tmp_path: Path) -> None:
    prefill(tmp_path / GRIDS, "grid-0000.png", "grid-0003.png", "00005-1.png")
    placed = adopt_files(tmp_path, [(f"{GRIDS}/grid-0000.png", b"grid"), (f"{GRIDS}/grid-0000.txt", b"text")])
    assert placed == {f"{GRIDS}/grid-0000.png": tmp_path / GRIDS / "grid-0004.png",
                      f"{GRIDS}/grid-0000.txt": tmp_path / GRIDS / "grid-0004.txt"}
    assert (tmp_path / GRIDS / "grid-0004.png").read_bytes() == b"grid"
    assert (tmp_path / GRIDS / "grid-0000.png").read_bytes() == b"already here"


def test_the_numbers_width_is_kept(tmp_path: Path) -> None:
    prefill(tmp_path / "videos", "000041-x.mp4")
    placed = adopt_files(tmp_path, [("videos/000000-7.mp4", b"v"), ("videos/000000-7.json", b"{}")])
    assert sorted(p.name for p in placed.values()) == ["000042-7.json", "000042-7.mp4"]


def test_a_name_without_a_number_keeps_it_or_gets_a_suffix_when_taken(tmp_path: Path) -> None:
    prefill(tmp_path / "extras-images", "photo.png")
    placed = adopt_files(tmp_path, [("extras-images/photo.png", b"new photo"), ("extras-images/other.png", b"o"),
                                    ("README", b"readme")])
    assert placed == {"extras-images/photo.png": tmp_path / "extras-images" / "photo-1.png",
                      "extras-images/other.png": tmp_path / "extras-images" / "other.png",
                      "README": tmp_path / "README"}
    assert (tmp_path / "extras-images" / "photo.png").read_bytes() == b"already here"
    assert (tmp_path / "extras-images" / "photo-1.png").read_bytes() == b"new photo"
    # Again: the next free suffix, and a name without an extension gets one too.
    again = adopt_files(tmp_path, [("extras-images/photo.png", b"third"), ("README", b"second readme")])
    assert again == {"extras-images/photo.png": tmp_path / "extras-images" / "photo-2.png",
                     "README": tmp_path / "README-1"}
    assert hidden_under(tmp_path) == []


def test_names_saved_without_a_number_keep_their_seed_or_date(tmp_path: Path) -> None:
    """With save_images_add_number off the worker names files by the pattern alone ("[seed]", "[date]"): a
    leading number there is the seed, not a counter, and must not be replaced by the server's counter."""
    prefill(tmp_path / DAY, "00003-1.png", "123456789.png")
    placed = adopt_files(tmp_path, [
        (f"{DAY}/123456789.png", b"same seed again"),
        (f"{DAY}/123456790-a fox.png", b"seed and prompt"),
        (f"{DAY}/2026-11-22.png", b"a date"),
    ])
    assert {rel: p.name for rel, p in placed.items()} == {
        f"{DAY}/123456789.png": "123456789-1.png",
        f"{DAY}/123456790-a fox.png": "123456790-a fox.png",
        f"{DAY}/2026-11-22.png": "2026-11-22.png",
    }
    assert (tmp_path / DAY / "123456789.png").read_bytes() == b"already here"


def test_what_a_worker_saved_keeps_its_name_apart_from_the_number(tmp_path: Path) -> None:
    """The files the studio's own ImageSaver writes in a worker's empty folder, filed on the server."""
    clock = lambda: datetime(2026, 11, 22, 12, 0)  # noqa: E731
    staging = tmp_path / "worker"
    settings = {"save_txt": True, "directories_filename_pattern": "[date]", "samples_filename_pattern": "[seed]"}
    worker = ImageSaver(staging, settings.__getitem__, clock=clock)
    for seed in (5000, 5001):
        worker.save(Image.new("RGB", (8, 8)), "txt2img", NamingContext(seed=seed), f"seed {seed}")
    worker.save_grid(Image.new("RGB", (16, 8)), "txt2img", NamingContext(seed=5000), "grid")
    sent = [(p.relative_to(staging).as_posix(), p.read_bytes()) for p in sorted(staging.rglob("*")) if p.is_file()]
    assert [rel for rel, _ in sent] == [f"{GRIDS}/grid-0000.png", f"{GRIDS}/grid-0000.txt", f"{DAY}/00000-5000.png",
                                        f"{DAY}/00000-5000.txt", f"{DAY}/00001-5001.png", f"{DAY}/00001-5001.txt"]

    server = tmp_path / "server"
    prefill(server / DAY, "00011-1.png")
    prefill(server / GRIDS, "grid-0002.png")
    placed = adopt_files(server, sent)
    assert files_under(server) == sorted([f"{GRIDS}/grid-0002.png", f"{GRIDS}/grid-0003.png", f"{GRIDS}/grid-0003.txt",
                                          f"{DAY}/00011-1.png",
                                          f"{DAY}/00012-5000.png", f"{DAY}/00012-5000.txt", f"{DAY}/00013-5001.png",
                                          f"{DAY}/00013-5001.txt"])
    assert (server / DAY / "00013-5001.txt").read_text() == "seed 5001\n"
    assert placed[f"{DAY}/00001-5001.png"].read_bytes() == (staging / DAY / "00001-5001.png").read_bytes()


def test_nothing_to_adopt_writes_nothing(tmp_path: Path) -> None:
    assert adopt_files(tmp_path, []) == {}
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", ["../x.png", "/abs.png", ".hidden/x.png", "a/../../x.png", f"{DAY}/../../../x.png",
                                 f"{DAY}/.00000.reserve", "", ".", "a/./../x.png"])
def test_an_unsafe_name_is_refused_and_nothing_is_written(tmp_path: Path, bad: str) -> None:
    outputs = tmp_path / "outputs"
    outputs.mkdir()
    # A good file before the bad one is not written either: the whole set is checked first.
    with pytest.raises(UserError) as refused:
        adopt_files(outputs, [(f"{DAY}/00000-1.png", b"good"), (bad, b"evil")])
    assert "unsafe" in refused.value.message or "outside" in refused.value.message
    assert files_under(tmp_path) == []
    assert not Path("/abs.png").exists()


def test_a_pair_that_shares_a_number_in_different_folders_is_numbered_per_folder(tmp_path: Path) -> None:
    prefill(tmp_path / DAY, "00002-x.png")
    placed = adopt_files(tmp_path, [(f"{DAY}/00000-1.png", b"a"), ("txt2img-images/2026-11-23/00000-1.png", b"b")])
    assert placed[f"{DAY}/00000-1.png"] == tmp_path / DAY / "00003-1.png"
    assert placed["txt2img-images/2026-11-23/00000-1.png"] == tmp_path / "txt2img-images/2026-11-23/00000-1.png"


def test_adoption_and_local_saves_never_share_a_number(tmp_path: Path) -> None:
    """Parts filed by several job threads while this machine saves too: every file keeps its own number."""
    saver = ImageSaver(tmp_path, {"directories_filename_pattern": "[date]"}.__getitem__,
                       clock=lambda: datetime(2026, 11, 22, 12, 0))
    errors: list[BaseException] = []

    def adopt(tag: int) -> None:
        try:
            for i in range(10):
                adopt_files(tmp_path, [(f"{DAY}/00000-{tag}{i}.png", b"x"), (f"{DAY}/00000-{tag}{i}.txt", b"t")])
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def save_locally() -> None:
        try:
            for i in range(10):
                saver.save(Image.new("RGB", (8, 8)), "txt2img", NamingContext(seed=900 + i), "p")
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=adopt, args=(t,)) for t in (1, 2, 3)] + [threading.Thread(target=save_locally)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    names = [p.name for p in (tmp_path / DAY).iterdir()]
    pngs = [n for n in names if n.endswith(".png")]
    assert len(pngs) == 40
    counters = sorted(n.split("-")[0] for n in pngs)
    assert counters == [f"{i:05}" for i in range(40)], "two files got one number"
    # Each adopted image kept its .txt beside it under the same number.
    for n in names:
        if n.endswith(".txt"):
            assert n[:-4] + ".png" in names
    assert len([n for n in names if n.endswith(".txt")]) == 30
    assert hidden_under(tmp_path) == []
