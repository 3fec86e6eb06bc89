"""Settings values: loaded from config.json, validated, changed, and saved atomically.

A corrupt or invalid config.json never stops the app: the file is backed up beside itself, the bad values fall
back to defaults, and `warnings` says what happened so the UI can show it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from modules import atomic
from modules.errors import UserError
from modules.settings.options import InvalidValue, Option, Section

log = logging.getLogger(__name__)


class Settings:
    """All option definitions (core and extensions) and their current values."""

    def __init__(self, path: Path, sections: Iterable[Section] = ()) -> None:
        self.path = path
        self._sections: dict[str, Section] = {}
        self._options: dict[str, Option] = {}
        self._values: dict[str, Any] = {}
        # Keys we do not know (yet): an extension that is off today keeps its settings for tomorrow.
        self._unknown: dict[str, Any] = {}
        self._lock = threading.RLock()
        self.warnings: list[str] = []
        for section in sections:
            self.add_section(section)

    # -- definitions ---------------------------------------------------------------------------------------

    def add_section(self, section: Section) -> None:
        with self._lock:
            if section.id in self._sections:
                raise ValueError(f"settings section '{section.id}' is already registered")
            clashes = [o.key for o in section.options if o.key in self._options]
            if clashes:
                raise ValueError(f"settings keys already registered: {', '.join(clashes)}")
            self._sections[section.id] = section
            for opt in section.options:
                self._options[opt.key] = opt
                if opt.key in self._unknown:
                    self._values[opt.key] = self._checked_or_default(opt, self._unknown.pop(opt.key))

    def sections(self) -> list[Section]:
        return list(self._sections.values())

    def option(self, key: str) -> Option:
        try:
            return self._options[key]
        except KeyError:
            raise UserError(f"unknown setting '{key}'", field=key) from None

    # -- values --------------------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        opt = self.option(key)
        with self._lock:
            return self._values.get(key, opt.default)

    def __getitem__(self, key: str) -> Any:
        return self.get(key)

    def values(self, include_secret: bool = False) -> dict[str, Any]:
        with self._lock:
            return {
                key: self._values.get(key, opt.default)
                for key, opt in self._options.items()
                if include_secret or not opt.secret
            }

    def update(self, changes: Mapping[str, Any], save: bool = True) -> list[str]:
        """Validate every change first, then apply all of them, or none. Returns the keys that changed."""
        with self._lock:
            checked: dict[str, Any] = {}
            for key, value in changes.items():
                opt = self.option(key)
                try:
                    checked[key] = opt.validate(value)
                except InvalidValue as e:
                    raise UserError(str(e), field=key) from None
            changed = [k for k, v in checked.items() if self.get(k) != v]
            self._values.update(checked)
            if save and changed:
                self.save()
            return changed

    # -- persistence ---------------------------------------------------------------------------------------

    def load(self) -> None:
        """Read config.json. Missing file: defaults. Corrupt or invalid: back up, recover, warn."""
        if not self.path.exists():
            return
        try:
            raw = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(raw, dict):
                raise ValueError("the top level is not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            backup = self._backup()
            self._warn(f"{self.path.name} could not be read ({e}); it was saved as {backup.name} "
                       "and every setting is back to its default.")
            self.save()
            return
        bad: list[str] = []
        with self._lock:
            for key, value in raw.items():
                opt = self._options.get(key)
                if opt is None:
                    self._unknown[key] = value
                    continue
                try:
                    self._values[key] = opt.validate(value)
                except InvalidValue as e:
                    bad.append(str(e))
        if bad:
            backup = self._backup()
            self._warn(f"{self.path.name} had invalid values, which were reset to defaults "
                       f"(the original is saved as {backup.name}): " + "; ".join(bad))
            self.save()

    def save(self) -> None:
        """Write every option (defaults included, as A1111 does) plus keys of extensions not loaded now."""
        with self._lock:
            data = dict(self._unknown)
            data.update(self.values(include_secret=True))
            atomic.write_json(self.path, data)

    def _checked_or_default(self, opt: Option, value: Any) -> Any:
        try:
            return opt.validate(value)
        except InvalidValue as e:
            self._warn(f"setting reset to default: {e}")
            return opt.default

    def _backup(self) -> Path:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while backup.exists():
            backup = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        self.path.replace(backup)
        return backup

    def _warn(self, message: str) -> None:
        log.warning(message)
        self.warnings.append(message)
