"""The one registry of extensions at run time: their records, and applying what they contributed.

Each `apply_*` step takes one kind of contribution from every loaded extension. A contribution that cannot be
applied fails its own extension (status and traceback shown in the Extensions tab) and the others go on.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from modules.cli import ExtraFlag
from modules.downloads.catalogue import Catalogue, CatalogueEntry
from modules.extensions.api import CommandContribution, RouteContribution, ScriptContribution, TabContribution
from modules.extensions.hooks import HookRegistry
from modules.extensions.loader import ExtensionRecord
from modules.jobs import JobQueue, JobType
from modules.model_registry import ModelKind, ModelRegistry
from modules.settings import Section, Settings

T = TypeVar("T")


class ExtensionRegistry:
    def __init__(self, records: Sequence[ExtensionRecord], hooks: HookRegistry) -> None:
        self.records = list(records)
        self.hooks = hooks
        self._flags: list[ExtraFlag] = []
        self._scripts: dict[str, tuple[ExtensionRecord, ScriptContribution]] = {}

    def get(self, extension_id: str) -> ExtensionRecord | None:
        return next((r for r in self.records if r.id == extension_id), None)

    def loaded(self) -> list[ExtensionRecord]:
        return [r for r in self.records if r.state == "loaded"]

    def fail(self, record: ExtensionRecord, message: str, tb: str | None = None) -> None:
        record.fail(message, tb)
        self.hooks.disable(record.id, message)

    def statuses(self) -> list[dict[str, Any]]:
        """Records as JSON, with hook failures that happened since start folded in."""
        hook_failures = self.hooks.failures()
        for record in self.records:
            failure = hook_failures.get(record.id)
            if failure and record.state == "loaded":
                record.fail(failure.message, failure.traceback or None)
        return [r.to_json() for r in self.records]

    # -- applying contributions ----------------------------------------------------------------------------

    def extra_flags(self) -> list[ExtraFlag]:
        self._flags = [
            ExtraFlag(names, options, record.id)
            for record in self.loaded()
            for names, options in record.api.contributions.flags  # type: ignore[union-attr]
        ]
        return self._flags

    def bind_flags(self, args: Any) -> None:
        """Give every extension the parsed flags, and fail those whose flags could not be added."""
        for flag in self._flags:
            record = self.get(flag.owner)
            if record and flag.notes:
                self.fail(record, "; ".join(flag.notes))
        for record in self.loaded():
            record.api.bind_flags(args)  # type: ignore[union-attr]

    def apply_settings(self, settings: Settings) -> None:
        for record, index, (label, options) in self._each(lambda c: c.settings):
            section_id = f"ext-{record.id}" + (f"-{index}" if index else "")
            self._guard(record, "settings", lambda: settings.add_section(
                Section(section_id, label, options, owner=record.id)))

    def apply_model_kinds(self, models: ModelRegistry, model_folder: Callable[[str], Path]) -> None:
        for record, _, kind in self._each(lambda c: c.model_kinds):
            self._guard(record, "model kind", lambda: models.add_kind(ModelKind(
                name=kind.name, folders=(model_folder(kind.name),), extensions=kind.extensions,
                allow_dirs=kind.allow_dirs, owner=record.id)))

    def apply_hooks(self) -> None:
        for record, _, (hook, callback) in self._each(lambda c: c.hooks):
            self._guard(record, "hook", lambda: self.hooks.register(hook, record.id, callback))

    def apply_job_types(self, jobs: JobQueue) -> None:
        for record, _, job in self._each(lambda c: c.job_types):
            self._guard(record, "job type", lambda: jobs.register(
                JobType(job.name, job.request_model, job.run, owner=record.id,
                        remote=(lambda _request: True) if job.runs_on_cluster else None)))

    def apply_downloads(self, catalogue: Catalogue) -> None:
        for record, _, download in self._each(lambda c: c.downloads):
            self._guard(record, "download entry", lambda: catalogue.add(CatalogueEntry(**download.fields)))

    def bind_studio(self, studio: Any) -> None:
        for record in self.loaded():
            record.api.bind_studio(studio)  # type: ignore[union-attr]

    def commands(self) -> dict[str, tuple[ExtensionRecord, CommandContribution]]:
        """`python launch.py <name>` tools by name; a name taken by an earlier extension fails the later one."""
        found: dict[str, tuple[ExtensionRecord, CommandContribution]] = {}
        for record, _, command in self._each(lambda c: c.commands):
            owner = found.get(command.name)
            if owner is not None and owner[0] is not record:
                self.fail(record, f"its command '{command.name}' is already provided by {owner[0].id}")
                continue
            found[command.name] = (record, command)
        return found

    def apply_scripts(self) -> None:
        """Index always-on scripts by lower-cased title; a title taken by an earlier extension fails the later one."""
        self._scripts = {}
        for record, _, script in self._each(lambda c: c.scripts):
            key = script.title.lower()
            owner = self._scripts.get(key)
            if owner is not None and owner[0] is not record:
                self.fail(record, f"its always-on script '{script.title}' is already provided by {owner[0].id}")
                continue
            self._scripts[key] = (record, script)

    def alwayson_scripts(self) -> dict[str, tuple[ExtensionRecord, ScriptContribution]]:
        """Always-on scripts by lower-cased title, of extensions that are still loaded."""
        return {key: entry for key, entry in self._scripts.items() if entry[0].state == "loaded"}

    def routes(self) -> list[tuple[ExtensionRecord, RouteContribution]]:
        return [(record, route) for record, _, route in self._each(lambda c: c.routes)]

    def tabs(self) -> list[tuple[ExtensionRecord, TabContribution]]:
        return [(record, tab) for record, _, tab in self._each(lambda c: c.tabs)]

    def _each(self, pick: Callable[[Any], list[T]]) -> Iterator[tuple[ExtensionRecord, int, T]]:
        for record in self.loaded():
            for index, item in enumerate(pick(record.api.contributions)):  # type: ignore[union-attr]
                if record.state == "loaded":  # an earlier item may have failed the extension
                    yield record, index, item

    def _guard(self, record: ExtensionRecord, what: str, apply: Callable[[], Any]) -> None:
        try:
            apply()
        except Exception as e:  # noqa: BLE001 - any failure here is the extension's, not the app's
            self.fail(record, f"its {what} could not be added: {e}", traceback.format_exc())
