"""The model registry: scanning, A1111-style lookups and titles, and the persistent hash cache."""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest

from modules.model_registry import (
    HashCache,
    ModelKind,
    ModelRegistry,
    UnknownModelKind,
    core_kinds,
    legacy_hash,
    shorthash,
)
from modules.model_registry import hashes as hashes_module
from modules.paths import DataPaths

SD = "Stable-diffusion"


def make_paths(root: Path, **overrides: Path) -> DataPaths:
    return DataPaths(
        data=root,
        models=root / "models",
        embeddings=root / "embeddings",
        outputs=root / "outputs",
        extensions=root / "extensions",
        cache=root / "cache",
        tmp=root / "tmp",
        folder_overrides=tuple(overrides.items()),
    )


def write(path: Path, data: bytes = b"weights") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def paths(tmp_path: Path) -> DataPaths:
    paths = make_paths(tmp_path)
    paths.ensure()
    return paths


@pytest.fixture
def registry(paths: DataPaths, tmp_path: Path) -> ModelRegistry:
    return ModelRegistry(core_kinds(paths), HashCache(tmp_path / "cache" / "hashes.json"))


@pytest.fixture
def hash_calls(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every full read of a file for hashing, while still hashing for real."""
    calls: list[Path] = []
    real = hashes_module.file_sha256

    def counting(path: Path) -> str:
        calls.append(path)
        return real(path)

    monkeypatch.setattr(hashes_module, "file_sha256", counting)
    return calls


def sd_folder(paths: DataPaths) -> Path:
    return paths.model_folder(SD)


def names(registry: ModelRegistry, kind: str = SD) -> list[str]:
    return [m.name for m in registry.list(kind)]


# -- kinds -----------------------------------------------------------------------------------------------


def test_core_kinds_use_data_paths_and_overrides(tmp_path: Path) -> None:
    custom = tmp_path / "elsewhere" / "ckpts"
    kinds = {k.name: k for k in core_kinds(make_paths(tmp_path, **{SD: custom}))}
    assert list(kinds) == [SD, "VAE", "Lora", "ESRGAN", "GFPGAN", "ControlNet", "embeddings"]
    assert kinds[SD].folders == (custom,)
    assert kinds["VAE"].folders == (tmp_path / "models" / "VAE",)
    assert kinds["embeddings"].folders == (tmp_path / "embeddings",)
    assert kinds[SD].allow_dirs and kinds["ControlNet"].allow_dirs and not kinds["Lora"].allow_dirs
    assert all(k.owner == "core" for k in kinds.values())


def test_model_kind_normalises_and_validates(tmp_path: Path) -> None:
    kind = ModelKind("X", [tmp_path], [".PTH.TAR", ".Pth"], ["*.VAE.*"])  # type: ignore[arg-type]
    assert kind.extensions == (".pth.tar", ".pth") and kind.folders == (tmp_path,)
    assert kind.model_extension("Model.PTH.tar") == ".pth.tar"
    assert kind.model_extension(".pth") is None
    assert kind.is_excluded("a.vae.pth")
    with pytest.raises(ValueError, match="start with a dot"):
        ModelKind("X", (tmp_path,), ("pth",))


# -- scanning --------------------------------------------------------------------------------------------


def test_scan_finds_models_in_subfolders_with_names(registry: ModelRegistry, paths: DataPaths) -> None:
    root = sd_folder(paths)
    write(root / "a.safetensors", b"12345")
    write(root / "B.ckpt")
    write(root / "sdxl" / "juggernaut.safetensors")
    write(root / "sub" / "deeper" / "x.CKPT")
    write(root / "notes.txt")
    write(root / "a.yaml")

    models = registry.list(SD)

    assert [m.name for m in models] == ["a", "B", "sdxl/juggernaut", "sub/deeper/x"]
    first = models[0]
    assert first.kind == SD and first.filename == root / "a.safetensors" and first.filename.is_absolute()
    assert first.size == 5 and not first.is_dir and first.mtime > 0
    assert models[2].relative_filename == "sdxl/juggernaut.safetensors"


def test_vae_files_are_not_checkpoints(registry: ModelRegistry, paths: DataPaths) -> None:
    write(sd_folder(paths) / "model.safetensors")
    write(sd_folder(paths) / "model.vae.safetensors")
    write(sd_folder(paths) / "other.VAE.ckpt")
    write(paths.model_folder("VAE") / "sdxl_vae.safetensors")

    assert names(registry) == ["model"]
    assert names(registry, "VAE") == ["sdxl_vae"]


def test_diffusers_folder_counts_once(registry: ModelRegistry, paths: DataPaths) -> None:
    pipe = sd_folder(paths) / "sdxl-base"
    write(pipe / "model_index.json", b"{}")
    write(pipe / "unet" / "config.json", b"{}")
    write(pipe / "unet" / "diffusion_pytorch_model.safetensors", b"u" * 10)
    write(pipe / "vae" / "diffusion_pytorch_model.safetensors", b"v" * 20)
    write(paths.model_folder("ControlNet") / "canny" / "config.json", b"{}")
    write(paths.model_folder("ControlNet") / "canny" / "diffusion_pytorch_model.bin", b"c")
    # Lora does not allow folders: the files inside are listed one by one.
    write(paths.model_folder("Lora") / "pack" / "config.json", b"{}")
    write(paths.model_folder("Lora") / "pack" / "style.safetensors")

    [model] = registry.list(SD)
    assert model.name == "sdxl-base" and model.is_dir and model.filename == pipe
    assert model.size == 2 + 2 + 10 + 20
    assert model.relative_filename == "sdxl-base"
    assert names(registry, "ControlNet") == ["canny"]
    assert names(registry, "Lora") == ["pack/style"]


def add_sadtalker_kind(registry: ModelRegistry, paths: DataPaths) -> None:
    """The kind the SadTalker extension adds: its checkpoints include `.pth.tar` files."""
    registry.add_kind(ModelKind("SadTalker", (paths.model_folder("SadTalker"),),
                                (".safetensors", ".pth", ".tar", ".pth.tar"), owner="sadtalker"))


def test_multi_part_suffix_is_removed_whole(registry: ModelRegistry, paths: DataPaths) -> None:
    add_sadtalker_kind(registry, paths)
    folder = paths.model_folder("SadTalker")
    write(folder / "mapping_00109-model.pth.tar")
    write(folder / "SadTalker_V0.0.2_256.safetensors")
    write(folder / "epoch_20.pth")
    write(folder / "archive.tar")

    assert names(registry, "SadTalker") == ["archive", "epoch_20", "mapping_00109-model", "SadTalker_V0.0.2_256"]


def test_hidden_and_temporary_entries_are_never_listed(registry: ModelRegistry, paths: DataPaths) -> None:
    root = sd_folder(paths)
    write(root / "real.safetensors")
    write(root / ".hidden.safetensors")
    write(root / ".cache" / "inside.safetensors")
    write(root / "incoming.download" / "inside.safetensors")
    write(root / "half.tmp" / "model_index.json", b"{}")
    add_sadtalker_kind(registry, paths)
    write(paths.model_folder("SadTalker") / "big.tar.part")
    write(paths.model_folder("SadTalker") / "ok.tar")

    assert names(registry) == ["real"]
    assert names(registry, "SadTalker") == ["ok"]


def test_refresh_picks_up_new_and_removed_files(registry: ModelRegistry, paths: DataPaths) -> None:
    old = write(sd_folder(paths) / "old.safetensors")
    write(paths.model_folder("VAE") / "v.pt")
    assert names(registry) == ["old"]

    old.unlink()
    write(sd_folder(paths) / "new" / "model.ckpt")
    assert names(registry) == ["old"], "list() serves the cached scan until a refresh"

    assert [m.name for m in registry.refresh(SD)] == ["new/model"]
    assert names(registry) == ["new/model"]
    assert {(m.kind, m.name) for m in registry.refresh()} == {(SD, "new/model"), ("VAE", "v")}


def test_first_folder_wins_for_the_same_name(tmp_path: Path) -> None:
    first = write(tmp_path / "one" / "m.safetensors")
    write(tmp_path / "two" / "m.safetensors")
    write(tmp_path / "two" / "other.safetensors")
    registry = ModelRegistry([ModelKind("X", (tmp_path / "one", tmp_path / "two"), (".safetensors",))])

    assert [(m.name, m.filename) for m in registry.list("X")] == [
        ("m", first),
        ("other", tmp_path / "two" / "other.safetensors"),
    ]


def test_missing_folder_lists_nothing(tmp_path: Path) -> None:
    registry = ModelRegistry([ModelKind("X", (tmp_path / "absent",), (".pt",))])
    assert registry.list("X") == []


def test_symlinked_file_is_followed(registry: ModelRegistry, paths: DataPaths, tmp_path: Path) -> None:
    target = write(tmp_path / "shared" / "real.safetensors", b"abc")
    (sd_folder(paths) / "linked.safetensors").symlink_to(target)

    [model] = registry.list(SD)
    assert model.name == "linked" and model.size == 3
    assert registry.shorthash(model) == hashlib.sha256(b"abc").hexdigest()[:10]


@pytest.mark.timeout(10)
def test_symlink_cycle_does_not_hang(registry: ModelRegistry, paths: DataPaths) -> None:
    root = sd_folder(paths)
    write(root / "sub" / "m.safetensors")
    (root / "sub" / "up").symlink_to(root, target_is_directory=True)
    (root / "loop").symlink_to(root / "loop")  # a link to itself: stat() fails with ELOOP
    (root / "broken.safetensors").symlink_to(root / "nowhere.safetensors")

    assert names(registry) == ["sub/m"]


def test_unreadable_folder_is_skipped_with_a_warning(
    registry: ModelRegistry, paths: DataPaths, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    root = sd_folder(paths)
    write(root / "ok.safetensors")
    locked = root / "locked"
    write(locked / "secret.safetensors")
    real_scandir = os.scandir

    def scandir(path: Any) -> Any:
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with caplog.at_level(logging.WARNING):
        assert names(registry) == ["ok"]
    assert "locked" in caplog.text


# -- kinds registry ----------------------------------------------------------------------------------------


def test_duplicate_kind_raises(registry: ModelRegistry, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="already registered"):
        registry.add_kind(ModelKind(SD, (tmp_path,), (".safetensors",), owner="evil-ext"))
    assert [k.owner for k in registry.kinds() if k.name == SD] == ["core"]

    registry.add_kind(ModelKind("Wav2Lip", (tmp_path,), (".pth",), owner="lipsync"))
    assert registry.kinds()[-1].name == "Wav2Lip"


def test_unknown_kind_error_lists_valid_kinds(registry: ModelRegistry) -> None:
    for call in (lambda: registry.list("Checkpoints"), lambda: registry.refresh("Checkpoints"),
                 lambda: registry.find("Checkpoints", "x")):
        with pytest.raises(KeyError) as info:
            call()
        assert isinstance(info.value, UnknownModelKind)
        message = str(info.value)
        assert "Checkpoints" in message and "Stable-diffusion" in message and "embeddings" in message


# -- hashes, titles, lookup --------------------------------------------------------------------------------


def test_shorthash_and_title(registry: ModelRegistry, paths: DataPaths) -> None:
    data = b"not really a checkpoint" * 1000
    write(sd_folder(paths) / "sdxl" / "m.safetensors", data)
    [model] = registry.list(SD)
    expected = hashlib.sha256(data).hexdigest()

    assert registry.sha256(model) == expected
    assert registry.shorthash(model) == expected[:10] == shorthash(expected)
    assert registry.title(model) == f"sdxl/m.safetensors [{expected[:10]}]"


def test_title_without_compute_uses_only_the_cache(
    registry: ModelRegistry, paths: DataPaths, hash_calls: list[Path]
) -> None:
    write(sd_folder(paths) / "m.safetensors", b"data")
    [model] = registry.list(SD)

    assert registry.title(model, compute=False) == "m.safetensors"
    assert hash_calls == []
    registry.sha256(model)
    assert registry.title(model, compute=False) == f"m.safetensors [{hashlib.sha256(b'data').hexdigest()[:10]}]"


def test_find_by_name_filename_title_and_hash(registry: ModelRegistry, paths: DataPaths) -> None:
    big = bytes(range(256)) * 4500  # > 1 MiB + 64 KiB, so the legacy hash reads a full block
    target = write(sd_folder(paths) / "sdxl" / "Juggernaut.safetensors", big)
    write(sd_folder(paths) / "other.safetensors", b"other")
    sha = hashlib.sha256(big).hexdigest()
    legacy = hashlib.sha256(big[0x100000:0x110000]).hexdigest()[:8]

    queries = [
        "sdxl/Juggernaut",  # name
        "sdxl/Juggernaut.safetensors",  # A1111's name, with the extension
        "Juggernaut.safetensors",
        "Juggernaut",
        "sdxl_Juggernaut",  # A1111's model_name, as written in infotext
        "sdxl\\Juggernaut.safetensors",  # from a Windows infotext
        str(target),
        f"sdxl/Juggernaut [{sha[:10]}]",  # our title
        f"sdxl/Juggernaut.safetensors [{sha[:10]}]",  # A1111's title
        "sdxl/Juggernaut [0123456789]",  # stale hash in the title: the name still wins
        "SDXL/juggernaut",
        sha[:10],
        sha,
        sha[:12],
        legacy,
        f"renamed.safetensors [{sha[:10]}]",  # renamed file: the hash in the title finds it
    ]
    for query in queries:
        found = registry.find(SD, query)
        assert found is not None and found.filename == target, query

    assert registry.find(SD, "missing") is None
    assert registry.find(SD, "0000000000") is None
    assert registry.find(SD, "") is None
    other = registry.find(SD, "other")
    assert other is not None and other.name == "other"


def test_find_by_hash_uses_cache_before_computing(
    registry: ModelRegistry, paths: DataPaths, hash_calls: list[Path]
) -> None:
    for i in range(3):
        write(sd_folder(paths) / f"m{i}.safetensors", f"model {i}".encode())
    models = registry.list(SD)
    wanted = hashlib.sha256(b"model 2").hexdigest()[:10]

    assert registry.find(SD, wanted, compute_hashes=False) is None
    assert hash_calls == []
    assert registry.find(SD, wanted) == models[2]
    assert len(hash_calls) == 3
    assert registry.find(SD, wanted) == models[2]
    assert len(hash_calls) == 3, "the second lookup is served from the cache"


def test_legacy_hash_reads_64k_at_1mib(tmp_path: Path) -> None:
    data = os.urandom(0x100000 + 0x20000)
    assert legacy_hash(write(tmp_path / "big.ckpt", data)) == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    # A1111 reads whatever lies past the offset: a partial block, or nothing for a file under 1 MiB.
    partial = write(tmp_path / "partial.ckpt", data[: 0x100000 + 100])
    assert legacy_hash(partial) == hashlib.sha256(data[0x100000 : 0x100000 + 100]).hexdigest()[:8]
    assert legacy_hash(write(tmp_path / "small.ckpt", b"tiny")) == hashlib.sha256(b"").hexdigest()[:8]


def test_diffusers_folder_hash(registry: ModelRegistry, paths: DataPaths) -> None:
    pipe = sd_folder(paths) / "pipe"
    write(pipe / "model_index.json", b"{}")
    write(pipe / "vae" / "diffusion_pytorch_model.safetensors", b"vae")
    write(pipe / "unet" / "diffusion_pytorch_model.safetensors", b"unet")
    write(pipe / "text_encoder" / "model.bin", b"te")
    write(pipe / ".cache" / "x.safetensors", b"ignored")
    [model] = registry.list(SD)

    # Sorted by relative path: text_encoder/, unet/, vae/.
    parts = [hashlib.sha256(d).hexdigest() for d in (b"te", b"unet", b"vae")]
    expected = hashlib.sha256("".join(parts).encode()).hexdigest()
    assert registry.sha256(model) == expected
    assert registry.title(model) == f"pipe [{expected[:10]}]"
    assert registry.find(SD, expected[:10]) == model


def test_no_hashing_never_reads_file_contents(
    paths: DataPaths, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    write(sd_folder(paths) / "m.safetensors", b"x" * 2_000_000)
    write(sd_folder(paths) / "pipe" / "model_index.json", b"{}")
    write(sd_folder(paths) / "pipe" / "unet" / "w.safetensors")
    registry = ModelRegistry(core_kinds(paths), HashCache(tmp_path / "hashes.json"), hashing_enabled=False)
    real_open = builtins.open
    models_dir = str(paths.models)

    def guarded_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file).startswith(models_dir):
            raise AssertionError(f"read {file} with hashing disabled")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    models = registry.list(SD)
    assert [registry.title(m) for m in models] == ["m.safetensors", "pipe"]
    assert registry.sha256(models[0]) is None and registry.shorthash(models[0]) is None
    assert registry.find(SD, "m") == models[0]
    assert registry.find(SD, hashlib.sha256(b"x" * 2_000_000).hexdigest()[:10]) is None
    assert not (tmp_path / "hashes.json").exists()


# -- hash cache --------------------------------------------------------------------------------------------


def test_hash_cache_reused_until_size_or_mtime_changes(tmp_path: Path, hash_calls: list[Path]) -> None:
    cache = HashCache(tmp_path / "cache" / "hashes.json")
    model = write(tmp_path / "m.safetensors", b"first")

    assert cache.sha256(model) == hashlib.sha256(b"first").hexdigest()
    assert cache.sha256(model) == hashlib.sha256(b"first").hexdigest()
    assert len(hash_calls) == 1

    st = model.stat()
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert cache.sha256(model) == hashlib.sha256(b"first").hexdigest()
    assert len(hash_calls) == 2, "a new mtime means a new hash"

    st = model.stat()
    model.write_bytes(b"second, longer")
    os.utime(model, ns=(st.st_atime_ns, st.st_mtime_ns))  # same mtime, different size
    assert cache.sha256(model) == hashlib.sha256(b"second, longer").hexdigest()
    assert len(hash_calls) == 3
    assert cache.sha256(model) == hashlib.sha256(b"second, longer").hexdigest()
    assert len(hash_calls) == 3


def test_hash_cache_persists_across_instances(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache_file = tmp_path / "cache" / "hashes.json"
    model = write(tmp_path / "m.safetensors", b"weights")
    digest = HashCache(cache_file).sha256(model)

    saved = json.loads(cache_file.read_text())
    st = model.stat()
    assert saved == {str(model.resolve()): {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}}

    def no_reads(path: Path) -> str:
        raise AssertionError(f"{path} was hashed again")

    monkeypatch.setattr(hashes_module, "file_sha256", no_reads)
    fresh = HashCache(cache_file)
    assert fresh.sha256(model) == digest
    assert fresh.cached(model) == digest


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"x": {"size": "big"}}', "\xff\xfe"])
def test_corrupt_hash_cache_is_ignored_and_overwritten(
    tmp_path: Path, content: str, caplog: pytest.LogCaptureFixture
) -> None:
    cache_file = write(tmp_path / "hashes.json", content.encode("latin-1"))
    model = write(tmp_path / "m.safetensors", b"weights")

    with caplog.at_level(logging.WARNING):
        cache = HashCache(cache_file)
        assert cache.sha256(model) == hashlib.sha256(b"weights").hexdigest()
    assert "hash cache" in caplog.text

    saved = json.loads(cache_file.read_text())
    assert list(saved) == [str(model.resolve())]


def test_in_memory_cache_writes_nothing(tmp_path: Path, hash_calls: list[Path]) -> None:
    cache = HashCache(None)
    model = write(tmp_path / "m.pt", b"abc")
    assert cache.sha256(model) == cache.sha256(model)
    assert len(hash_calls) == 1
    assert list(tmp_path.iterdir()) == [model]


def test_concurrent_use_hashes_each_file_once(
    registry: ModelRegistry, paths: DataPaths, hash_calls: list[Path]
) -> None:
    for i in range(4):
        write(sd_folder(paths) / f"m{i}.safetensors", os.urandom(300_000))
    errors: list[BaseException] = []
    titles: list[list[str]] = []
    start = threading.Barrier(8)

    def work(refresh: bool) -> None:
        try:
            start.wait()
            models = registry.refresh(SD) if refresh else registry.list(SD)
            titles.append([registry.title(m) for m in models])
        except BaseException as e:  # noqa: BLE001 - surfaced by the assert below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i % 2 == 0,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == []
    assert len(titles) == 8 and all(t == titles[0] for t in titles)
    assert len(hash_calls) == 4
