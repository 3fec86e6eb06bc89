"""Running the app: binding, TLS, printing the URL, the share tunnel and --autolaunch."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
import webbrowser
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from modules.services import Services

from modules.extensions.hooks import AppStarted

log = logging.getLogger(__name__)


def bind_host(args) -> str:  # type: ignore[no-untyped-def]
    if args.server_name:
        return args.server_name
    return "0.0.0.0" if args.listen else "127.0.0.1"


def serve(app: FastAPI, services: Services) -> int:
    import uvicorn

    args = services.args
    host = bind_host(args)
    problem = _port_problem(host, args.port)
    if problem:
        print(f"error: {problem}")
        return 1
    config = uvicorn.Config(app, host=host, port=args.port, ssl_keyfile=args.tls_keyfile,
                            ssl_certfile=args.tls_certfile, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    threading.Thread(target=_after_start, args=(server, services, host), daemon=True, name="after-start").start()
    server.run()
    return 0


def local_url(services: Services, host: str) -> str:
    scheme = "https" if services.args.tls_certfile else "http"
    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"{scheme}://{shown}:{services.args.port}"


def _after_start(server, services: Services, host: str) -> None:  # type: ignore[no-untyped-def]
    while not server.started:
        if server.should_exit:
            return
        time.sleep(0.05)
    url = local_url(services, host)
    # The same wording as Gradio's launch(), which scripts and A1111 users look for.
    print(f"Running on local URL:  {url}", flush=True)
    if host in ("0.0.0.0", "::"):
        print(f"Shared on your network at port {services.args.port} (for example http://{_lan_name()}:{services.args.port})",
              flush=True)
    if services.args.share:
        _open_share_link(services, host)
    services.hooks.fire("app_started", AppStarted(url=url))
    if services.args.autolaunch:
        webbrowser.open(url)


def _port_problem(host: str, port: int) -> str | None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return f"cannot listen on {host}:{port} ({e.strerror}); is another copy running? Use --port to pick another port"
    return None


def _lan_name() -> str:
    return socket.gethostname()


def _open_share_link(services: Services, host: str) -> None:
    if not services.ui_logins:
        print("warning: --share without --gradio-auth: anyone with the link can use this app", flush=True)
    try:
        from gradio.networking import setup_tunnel

        # A long random token: share links must not be guessable (A1111 #513).
        url = setup_tunnel("127.0.0.1" if host == "0.0.0.0" else host, services.args.port,
                           secrets.token_urlsafe(32), None, None)
    except Exception as e:  # noqa: BLE001 - the tunnel needs the internet; the app works without it
        print(f"Could not open a share link ({type(e).__name__}: {e}). The app is still running locally.", flush=True)
        return
    print(f"Running on public URL: {url}", flush=True)
