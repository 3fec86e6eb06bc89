"""Extensions: what is installed and how it loaded, enable/disable, updates, and installing new ones."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr

from modules.errors import UserError

if TYPE_CHECKING:
    from modules.extensions.manager import ExtensionManager
    from modules.services import Services

HEADERS = ["Extension", "Id", "Version", "Source", "State", "Load ms", "Next start", "Error"]


def table_rows(overview: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for e in overview["extensions"]:
        state = e["state"] + (" (restart needed)" if e["restart_needed"] else "")
        rows.append([e["name"], e["id"], e["version"] or "", "built-in" if e["builtin"] else "user", state,
                     e["load_ms"], "enabled" if e["enabled_next_start"] else "disabled", e["error"] or ""])
    return rows


def _run(action, *args: Any) -> str:  # type: ignore[no-untyped-def]
    """Call a manager action and turn its outcome or refusal into the message shown under the buttons."""
    try:
        result = action(*args)
    except UserError as e:
        return f"⚠️ {html.escape(e.message)}"
    if isinstance(result, dict):
        return html.escape(str(result.get("message") or result))
    return html.escape(str(result))


def build(services: Services) -> None:
    manager = services.extension_manager
    overview = manager.overview()
    if overview["management_message"]:
        gr.Markdown(f"⚠️ {html.escape(overview['management_message'])}", elem_id="extensions_access_notice")
    with gr.Tabs():
        with gr.Tab("Installed", elem_id="extensions_installed"):
            _installed(manager, overview)
        with gr.Tab("Install from URL", elem_id="extensions_install_url"):
            _install_from_url(manager)
        with gr.Tab("Install from file", elem_id="extensions_install_file"):
            _install_from_file(manager)


def _installed(manager: ExtensionManager, overview: dict[str, Any]) -> None:
    table = gr.Dataframe(value=table_rows(overview), headers=HEADERS, interactive=False, wrap=True,
                         elem_id="extensions_table")
    ids = [e["id"] for e in overview["extensions"]]
    enabled = gr.CheckboxGroup(choices=ids, value=[e["id"] for e in overview["extensions"] if e["enabled_next_start"]],
                               label="Enabled at next start", elem_id="extensions_enabled")
    with gr.Row():
        apply = gr.Button("Apply (takes effect on restart)", variant="primary", elem_id="extensions_apply")
        refresh = gr.Button("Refresh", elem_id="extensions_refresh")
    user_ids = [e["id"] for e in overview["extensions"] if not e["builtin"]]
    with gr.Row():
        target = gr.Dropdown(choices=user_ids, label="User extension", elem_id="extensions_target")
        check = gr.Button("Check for updates", elem_id="extensions_check")
        update = gr.Button("Update", elem_id="extensions_update")
    message = gr.Markdown(elem_id="extensions_message")
    for e in overview["extensions"]:
        if e["traceback"]:
            with gr.Accordion(f"{e['name']}: {e['state']}", open=False):
                gr.Code(e["traceback"], language=None, label="Traceback")

    def on_refresh() -> list[list[Any]]:
        return table_rows(manager.overview())

    apply.click(lambda chosen: _run(manager.set_enabled_ids, set(chosen or [])), enabled, message,
                api_visibility="private").then(on_refresh, None, table, api_visibility="private")
    refresh.click(on_refresh, None, table, api_visibility="private")
    check.click(lambda ext: _run(manager.check_for_updates, ext or ""), target, message, api_visibility="private")
    update.click(lambda ext: _run(manager.update, ext or ""), target, message, api_visibility="private")


def _install_from_url(manager: ExtensionManager) -> None:
    url = gr.Textbox(label="URL of the extension's git repository", elem_id="extensions_url")
    with gr.Row():
        branch = gr.Textbox(label="Branch (optional)", elem_id="extensions_branch")
        folder = gr.Textbox(label="Folder name (optional)", elem_id="extensions_folder")
    button = gr.Button("Install", variant="primary", elem_id="extensions_install")
    message = gr.Markdown(elem_id="extensions_install_message")
    button.click(lambda u, b, f: _run(manager.install_from_url, u or "", b or None, f or None), [url, branch, folder],
                 message, api_visibility="private")


def _install_from_file(manager: ExtensionManager) -> None:
    archive = gr.File(label="Extension archive (.zip, .tar.gz)", file_types=[".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz"],
                      type="filepath", elem_id="extensions_archive")
    archive_button = gr.Button("Install archive", elem_id="extensions_install_archive")
    local = gr.Textbox(label="Or a folder on this server", elem_id="extensions_local_folder")
    local_button = gr.Button("Install folder", elem_id="extensions_install_folder")
    message = gr.Markdown(elem_id="extensions_file_message")
    archive_button.click(lambda p: _run(manager.install_from_archive, Path(p)) if p else "Choose an archive first.",
                         archive, message, api_visibility="private")
    local_button.click(lambda p: _run(manager.install_from_folder, Path(p)) if p else "Give a folder path first.",
                       local, message, api_visibility="private")
