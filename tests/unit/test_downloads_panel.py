"""Settings → Model downloads offers only the catalogue files that are missing from their folders."""

from __future__ import annotations

from pathlib import Path

from modules.services import build_services
from modules.ui.downloads_panel import download, missing_choices


def test_only_missing_files_are_offered(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path)], {})
    offered = dict((entry_id, text) for text, entry_id in missing_choices(services))
    entry = services.downloads.catalogue.get("realesrgan-x4plus")
    assert entry.id in offered and f"models/{entry.folder}" in offered[entry.id]
    target = services.paths.model_folder(entry.folder) / entry.filename
    target.write_bytes(b"already here")
    assert entry.id not in {entry_id for _, entry_id in missing_choices(services)}
    assert len(missing_choices(services)) == len(offered) - 1


def test_nothing_chosen_says_so(tmp_path: Path) -> None:
    services = build_services(["--data-dir", str(tmp_path)], {})
    assert [text for text, _ in download(services, [])] == ["Choose the files to download."]
