"""Settings → "Model downloads": the catalogue files that are not in their model folder yet, and a Download
button for them. Files already present are not offered; a download runs on the download queue with its progress
shown here, and a failure says which file to fetch by hand and where to put it."""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.errors import UserError
from modules.jobs import JobState

if TYPE_CHECKING:
    from modules.downloads.catalogue import CatalogueEntry
    from modules.services import Services

POLL_S = 0.5


def label(entry: CatalogueEntry) -> str:
    size = f", {entry.size / 1e6:.0f} MB" if entry.size else ""
    note = f" — {entry.licence_note}" if entry.licence_note else ""
    return f"{entry.name} ({entry.filename} → models/{entry.folder}{size}){note}"


def missing_choices(services: Services) -> list[tuple[str, str]]:
    """(label, id) of every catalogue file missing from its folder."""
    return [(label(entry), entry.id) for entry in services.downloads.missing()]


def download(services: Services, ids: list[str]) -> Iterator[tuple[str, Any]]:
    """Download the chosen files one after another, yielding (status text, choices update)."""
    if not ids:
        yield "Choose the files to download.", gr.update()
        return
    done: list[str] = []
    for entry_id in ids:
        try:
            job = services.download_jobs.submit("download", {"id": entry_id})
        except UserError as e:
            yield f"⚠️ {html.escape(e.message)}", gr.update()
            return
        while not job.wait(POLL_S):
            yield html.escape(f"{entry_id}: {job.progress.text or 'starting'}"), gr.update()
        if job.state is not JobState.DONE:
            yield f"⚠️ {html.escape(job.error or 'cancelled')}", gr.update(choices=missing_choices(services), value=[])
            return
        done.append(entry_id)
    yield (f"Downloaded: {html.escape(', '.join(done))}.",
           gr.update(choices=missing_choices(services), value=[]))


def build(services: Services) -> None:
    with gr.Accordion("Model downloads", open=False, elem_id="settings_downloads"):
        gr.Markdown("Known model files that are not in their folder yet. Each is checked against its published "
                    "size and checksum before it lands in the folder.")
        choices = gr.CheckboxGroup(choices=missing_choices(services), label="Missing files",
                                   elem_id="settings_downloads_missing")
        with gr.Row():
            refresh = gr.Button("🔄", elem_id="settings_downloads_refresh", scale=0, min_width=48)
            start = gr.Button("Download", elem_id="settings_downloads_start")
        status = gr.Markdown(elem_id="settings_downloads_status")
    refresh.click(lambda: gr.update(choices=missing_choices(services), value=[]), None, choices,
                  api_visibility="private")
    def on_download(ids: list[str] | None) -> Iterator[tuple[str, Any]]:
        yield from download(services, ids or [])

    start.click(on_download, choices, [status, choices], api_visibility="private")
