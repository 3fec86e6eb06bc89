"""Settings survive a round trip, and a broken config.json never stops the app."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modules.errors import UserError
from modules.settings import Option, Section, Settings
from modules.settings.core import core_sections


def make(path: Path) -> Settings:
    s = Settings(path, core_sections())
    s.load()
    return s


def test_defaults_without_a_file(tmp_path: Path) -> None:
    s = make(tmp_path / "config.json")
    assert s.get("samples_format") == "png"
    assert s.warnings == []


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    s = make(path)
    assert s.update({"samples_format": "webp", "jpeg_quality": 95}) == ["samples_format", "jpeg_quality"]
    again = make(path)
    assert again.get("samples_format") == "webp" and again.get("jpeg_quality") == 95


def test_invalid_update_changes_nothing(tmp_path: Path) -> None:
    s = make(tmp_path / "config.json")
    with pytest.raises(UserError) as e:
        s.update({"jpeg_quality": 90, "samples_format": "bmp"})
    assert e.value.field == "samples_format" and "png, jpg, webp" in e.value.message
    assert s.get("jpeg_quality") == 80  # all or nothing


def test_unknown_setting_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="unknown setting"):
        make(tmp_path / "c.json").update({"no_such_key": 1})


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", "\xff\xfe garbage", ""])
def test_corrupt_file_is_backed_up_and_replaced_by_defaults(tmp_path: Path, content: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content.encode("latin-1"))
    s = make(path)
    assert s.get("samples_format") == "png"
    assert len(s.warnings) == 1 and "back to its default" in s.warnings[0]
    backups = list(tmp_path.glob("config.json.corrupt-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == content.encode("latin-1")
    assert json.loads(path.read_text())["samples_format"] == "png"  # a valid file again


def test_invalid_values_fall_back_individually(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"samples_format": "bmp", "jpeg_quality": 90, "some_extension_key": [1]}))
    s = make(path)
    assert s.get("samples_format") == "png" and s.get("jpeg_quality") == 90
    assert "samples_format" in s.warnings[0]
    assert list(tmp_path.glob("config.json.corrupt-*"))
    # A key of an extension that is not loaded today survives the rewrite.
    assert json.loads(path.read_text())["some_extension_key"] == [1]


def test_extension_section_picks_up_its_stored_values(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"hello_greeting": "hey"}))
    s = make(path)
    s.add_section(Section("ext-hello", "Hello", [Option("hello_greeting", "hi", "Greeting", "str")], owner="hello"))
    assert s.get("hello_greeting") == "hey"


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    s = make(tmp_path / "c.json")
    with pytest.raises(ValueError, match="already registered"):
        s.add_section(Section("x", "X", [Option("samples_format", "png", "dup", "str")]))


def test_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.json"
    s = make(path)
    s.update({"jpeg_quality": 70})
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError):
        s.update({"jpeg_quality": 71})
    assert path.read_bytes() == before  # the old file is intact
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]  # no temp file left
