"""Mounting the Gradio UI on the FastAPI app, with the UI login when --gradio-auth is set."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr

from modules.ui.login_guard import UI_AUTH_MESSAGE
from modules.ui.shell import CSS, build_ui

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modules.services import Services


def mount_ui(app: FastAPI, services: Services) -> FastAPI:
    blocks = build_ui(services).queue(default_concurrency_limit=4, max_size=64)
    logins = services.ui_logins
    return gr.mount_gradio_app(
        app, blocks, path="/",
        auth=(lambda user, password: logins.check(user, password)) if logins else None,
        auth_message=UI_AUTH_MESSAGE if logins else None,
        ssr_mode=False,
        footer_links=["api"] if services.api_enabled else [],
        # Gradio may serve files from these folders and no others (besides its own uploads and static files).
        allowed_paths=[str(services.paths.outputs)],
        show_error=True,
        css=CSS,
        # The same ceiling as REST bodies: an upload (an image for PNG Info, an extension archive) over it is
        # refused by Gradio before it is stored.
        max_file_size=services.settings.get("api_max_request_mb") * 1024 * 1024,
    )
