"""The app: FastAPI with the REST adapters, and the Gradio UI mounted at "/". Built by `main()`, never at import.

Gradio is imported only when the UI is built, and torch only when a job first needs it, so the page is
served within seconds of start.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse

from modules import commands, server
from modules.api import controlnet as controlnet_api
from modules.api import downloads as downloads_api
from modules.api import errors as api_errors
from modules.api import jobs as jobs_api
from modules.api import sdapi
from modules.api import studio as studio_api
from modules.api.limits import BodyLimitMiddleware
from modules.auth import BasicAuthMiddleware
from modules.cli import CliError
from modules.engine.memory import share_heap_between_threads
from modules.origins import OriginGuardMiddleware, OriginPolicy
from modules.services import Services, build_services
from modules.ui.login_guard import UI_AUTH_MESSAGE, UiLoginMiddleware

log = logging.getLogger(__name__)


def create_app(services: Services) -> FastAPI:
    api_docs = services.api_enabled
    app = FastAPI(title="SD Studio", docs_url="/docs" if api_docs else None, redoc_url=None,
                  openapi_url="/openapi.json" if api_docs else None)
    api_errors.install(app)
    # Routes go in before the UI is mounted at "/": a route added after that mount is shadowed by it.
    app.include_router(studio_api.router(services))
    app.include_router(jobs_api.router(services.jobs, services.settings.get))
    app.include_router(downloads_api.router(services.downloads, services.download_jobs))
    if services.api_enabled:  # /sdapi/v1 only with --api or --nowebui, as in A1111
        app.include_router(sdapi.router(services))
        app.include_router(controlnet_api.router(services))
    _add_extension_routes(app, services)
    if services.args.nowebui:
        _add_api_only_root(app)
    else:
        from modules.ui.mount import mount_ui  # gradio is imported here, not at start

        app = mount_ui(app, services)
    _add_middleware(app, services)
    services.jobs.start()
    services.download_jobs.start()
    return app


def _add_extension_routes(app: FastAPI, services: Services) -> None:
    taken = {(getattr(r, "path", ""), m) for r in app.routes for m in (getattr(r, "methods", None) or ())}
    for record, route in services.extensions.routes():
        clash = [m for m in route.methods if (route.path, m) in taken]
        if clash:
            services.extensions.fail(record, f"route {' '.join(clash)} {route.path} is already taken")
            continue
        try:
            app.add_api_route(route.path, route.endpoint, methods=list(route.methods), tags=[f"ext:{record.id}"])
        except Exception as e:  # noqa: BLE001 - a bad endpoint signature is the extension's fault
            services.extensions.fail(record, f"route {route.path} could not be added: {e}")
            continue
        taken.update((route.path, m) for m in route.methods)


def _add_api_only_root(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def root() -> JSONResponse:
        return JSONResponse({"app": "SD Studio", "ui": "off (--nowebui)", "docs": "/docs"})


def _add_middleware(app: FastAPI, services: Services) -> None:
    # Starlette runs the middleware added last first, so the order below is innermost to outermost.
    args = services.args
    app.add_middleware(BodyLimitMiddleware,
                       limit_bytes=lambda: services.settings.get("api_max_request_mb") * 1024 * 1024)
    if services.ui_logins and not args.nowebui:
        # Gradio leaves some of its routes open even with a login (cancel, heartbeat, stream, ...).
        app.add_middleware(UiLoginMiddleware, auth_message=UI_AUTH_MESSAGE)
    # An unauthenticated request never reaches a route.
    app.add_middleware(BasicAuthMiddleware, credentials=services.api_logins)
    origins = OriginPolicy.from_args(args)
    if origins.opens_cors:
        # Outside auth: browsers send CORS preflights without credentials, so a 401 there would break every
        # allowed origin's use of --api-auth. CORS answers preflights itself and only adds headers otherwise.
        app.add_middleware(CORSMiddleware, allow_origins=sorted(origins.allowed),
                           allow_origin_regex=args.cors_allow_origins_regex,
                           allow_methods=["*"], allow_headers=["*"], allow_credentials=True)
    # Outermost: a page from another site cannot make a user's browser act on the app (see modules.origins).
    app.add_middleware(OriginGuardMiddleware, policy=origins)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    share_heap_between_threads()  # before any worker thread exists; see its docstring
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    if commands.is_command(argv):
        return commands.run(argv, env)
    try:
        services = build_services(argv, env)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _keep_temporaries_in(services.paths.tmp)
    return server.serve(create_app(services), services)


def _keep_temporaries_in(folder: Path) -> None:
    """Point every temporary file of the server process (and of the git, pip and ffmpeg it starts) at the data
    dir's tmp/: Gradio's upload cache (tempfile's dir + "/gradio"), request bodies Starlette spools to disk, the
    decoders' scratch copies. In the shared /tmp other users of the machine could read uploaded images."""
    folder.mkdir(parents=True, exist_ok=True)
    tempfile.tempdir = str(folder)
    os.environ["TMPDIR"] = str(folder)
