"""The extension API, version 1: the one object an extension's `register(api)` receives.

Extensions import nothing else from `modules`. Everything they may add goes through these methods and is
recorded as a contribution; the app applies contributions after every extension has registered, and a
contribution that cannot be applied (a clashing route, a duplicate setting) fails its extension alone.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modules.errors import NotFound, UserError
from modules.extensions.hooks import HOOKS, AppStarted, GenerateEvent, ImageSaveEvent
from modules.settings.options import Option

API_VERSION = 1


@dataclass(frozen=True)
class TabContribution:
    title: str
    build: Callable[[], Any]  # called inside the UI's gr.Blocks context; it creates the tab's components
    elem_id: str
    # With True, build() returns the gr.Image that "Send to <title>" buttons on txt2img and img2img fill.
    takes_images: bool = False


@dataclass(frozen=True)
class RouteContribution:
    path: str  # full path, always under /ext/<id>/
    endpoint: Callable[..., Any]
    methods: tuple[str, ...]


@dataclass(frozen=True)
class ModelKindContribution:
    name: str
    extensions: tuple[str, ...]
    allow_dirs: bool


@dataclass(frozen=True)
class JobTypeContribution:
    name: str
    request_model: type
    run: Callable[..., Any]
    runs_on_cluster: bool = False


@dataclass(frozen=True)
class DownloadContribution:
    """A file for the download manager's catalogue (the fields of `modules.downloads.CatalogueEntry`)."""

    fields: dict[str, Any]


@dataclass(frozen=True)
class CommandContribution:
    """`python launch.py <name> ...`: `configure(parser)` adds its arguments, `run(args, studio)` returns the
    exit status."""

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Any], int]


@dataclass(frozen=True)
class ScriptContribution:
    title: str
    apply: Callable[[list[Any], dict[str, Any]], dict[str, Any] | None]


@dataclass
class Contributions:
    """What one extension asked to add, in the order it asked."""

    tabs: list[TabContribution] = field(default_factory=list)
    settings: list[tuple[str, Sequence[Option]]] = field(default_factory=list)
    routes: list[RouteContribution] = field(default_factory=list)
    flags: list[tuple[tuple[str, ...], dict[str, Any]]] = field(default_factory=list)
    model_kinds: list[ModelKindContribution] = field(default_factory=list)
    job_types: list[JobTypeContribution] = field(default_factory=list)
    scripts: list[ScriptContribution] = field(default_factory=list)
    downloads: list[DownloadContribution] = field(default_factory=list)
    commands: list[CommandContribution] = field(default_factory=list)
    hooks: list[tuple[str, Callable[[Any], Any]]] = field(default_factory=list)


class ExtensionAPI:
    """Handed to `register(api)`. Read-only views of the app plus methods that record contributions."""

    version = API_VERSION
    # Re-exported so that extensions need no import from `modules`.
    Option = Option
    UserError = UserError  # raise it (or NotFound) with a message for the user: the UI and the API show it
    NotFound = NotFound
    AppStarted = AppStarted
    GenerateEvent = GenerateEvent
    ImageSaveEvent = ImageSaveEvent
    hooks = tuple(HOOKS)

    def __init__(self, extension_id: str, folder: Path, settings_get: Callable[[str], Any],
                 model_folder: Callable[[str], Path]) -> None:
        self.id = extension_id
        self.folder = folder
        self.log = logging.getLogger(f"ext.{extension_id}")
        self.contributions = Contributions()
        self._settings_get = settings_get
        self._model_folder = model_folder
        self._args: argparse.Namespace | None = None
        self._studio: Any = None

    # -- read-only views -----------------------------------------------------------------------------------

    def setting(self, key: str) -> Any:
        """Current value of a setting (core or any extension's)."""
        return self._settings_get(key)

    def model_folder(self, kind: str) -> Path:
        return self._model_folder(kind)

    @property
    def flags(self) -> argparse.Namespace:
        """Parsed command-line flags; available from the app_started hook on, not during register()."""
        if self._args is None:
            raise RuntimeError("flags are parsed after every extension has registered; read them in a hook")
        return self._args

    def bind_flags(self, args: argparse.Namespace) -> None:
        self._args = args

    @property
    def studio(self) -> Any:
        """The running app's services for extensions (`modules.extensions.studio.Studio`): the job queue, the
        device, face restoration and upscaling, output folders and downloads. Bound once the app is built, so
        use it in tabs, routes, jobs and commands, not during register()."""
        if self._studio is None:
            raise RuntimeError("the studio is bound after every extension has registered; use it at run time")
        return self._studio

    def bind_studio(self, studio: Any) -> None:
        self._studio = studio

    # -- contributions -------------------------------------------------------------------------------------

    def add_tab(self, title: str, build: Callable[[], Any], elem_id: str | None = None,
                takes_images: bool = False) -> None:
        """Add a UI tab. `build()` runs inside the tab and creates its gradio components.

        With `takes_images`, txt2img and img2img get a "Send to <title>" button and `build()` must return the
        gr.Image component it fills.
        """
        elem_id = elem_id or f"tab_ext_{self.id}_{len(self.contributions.tabs)}"
        self.contributions.tabs.append(TabContribution(title, build, elem_id, takes_images))

    def add_settings(self, label: str, options: Sequence[Option]) -> None:
        """Add a settings section, shown in the Settings tab and stored in config.json."""
        self.contributions.settings.append((label, tuple(options)))

    def add_api_route(self, path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",)) -> str:
        """Add a REST route at `/ext/<id><path>`; returns the full path. It is covered by --api-auth."""
        if not path.startswith("/"):
            raise ValueError(f"route path must start with '/': {path!r}")
        full = f"/ext/{self.id}{path}"
        self.contributions.routes.append(RouteContribution(full, endpoint, tuple(m.upper() for m in methods)))
        return full

    def add_cli_flag(self, *names: str, **options: Any) -> None:
        """Add a command-line flag (argparse arguments). Read its value from `api.flags` in a hook."""
        if not names or not all(n.startswith("--") for n in names):
            raise ValueError(f"extension flags must be long options starting with '--': {names}")
        self.contributions.flags.append((names, options))

    def add_model_kind(self, name: str, extensions: Sequence[str], allow_dirs: bool = False) -> Path:
        """Add a model folder `models/<name>`, scanned for files with these extensions. Returns the folder."""
        self.contributions.model_kinds.append(
            ModelKindContribution(name, tuple(e.lower() for e in extensions), allow_dirs))
        return self._model_folder(name)

    def add_job_type(self, name: str, request_model: type, run: Callable[..., Any],
                     runs_on_cluster: bool = False) -> None:
        """Add a kind of job the queue can run: a pydantic request model and the function that runs it.

        `runs_on_cluster`: with --cluster, the job may run on any worker of the farm. Say so only when the request
        carries its inputs (no server paths) and the job saves through `api.studio` (outputs come back).
        """
        self.contributions.job_types.append(JobTypeContribution(name, request_model, run, runs_on_cluster))

    def add_download(self, **fields: Any) -> None:
        """Add a file to the download manager's catalogue: id, name, url, size, sha256, folder, filename,
        description and optionally licence_note (see `modules.downloads.CatalogueEntry`)."""
        self.contributions.downloads.append(DownloadContribution(dict(fields)))

    def add_command(self, name: str, help: str, configure: Callable[[argparse.ArgumentParser], None],
                    run: Callable[[argparse.Namespace, Any], int]) -> None:
        """Add `python launch.py <name> ...`: a command-line tool that runs with the app's services (no server).

        `configure(parser)` adds the arguments; `run(args, studio)` does the work and returns the exit status.
        """
        if not name.isidentifier() or name.startswith("_"):
            raise ValueError(f"command names are plain words: {name!r}")
        self.contributions.commands.append(CommandContribution(name, help, configure, run))

    def add_alwayson_script(self, title: str,
                            apply: Callable[[list[Any], dict[str, Any]], dict[str, Any] | None]) -> None:
        """Answer A1111's `alwayson_scripts: {"<title>": {"args": [...]}}` in /sdapi/v1 requests.

        `apply(args, request)` gets the script's args and the generation request's fields (A1111 names), and
        returns the fields to change (or None). Raise ValueError with a message for bad args: the client gets a
        400 with it. Titles match case-insensitively, as in A1111.
        """
        if not title.strip():
            raise ValueError("an always-on script needs a title")
        self.contributions.scripts.append(ScriptContribution(title.strip(), apply))

    def on(self, hook: str, callback: Callable[[Any], Any]) -> None:
        """Register `callback(payload)` on a named hook; see `api.hooks` for the names."""
        if hook not in HOOKS:
            raise ValueError(f"unknown hook '{hook}'; hooks are: {', '.join(HOOKS)}")
        self.contributions.hooks.append((hook, callback))

