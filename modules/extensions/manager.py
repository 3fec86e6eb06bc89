"""What the Extensions tab and the extension routes can do: list, enable, disable, install, update, remove.

Every changing action goes through the access policy first, so the UI and every route refuse in the same
words when the app is shared on the network. Changes apply on the next start, and the status says so.
"""

from __future__ import annotations

from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from modules.access import AccessPolicy
from modules.errors import NotFound, UserError
from modules.extensions.install import ExtensionInstaller
from modules.extensions.loader import ExtensionRecord
from modules.extensions.registry import ExtensionRegistry
from modules.settings import Settings

RESTART_NOTE = "Restart the app to apply."


class ExtensionManager:
    def __init__(self, registry: ExtensionRegistry, settings: Settings, access: AccessPolicy,
                 installer: ExtensionInstaller) -> None:
        self.registry = registry
        self.settings = settings
        self.access = access
        self.installer = installer

    # -- reading -------------------------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        """Everything the Extensions tab and GET /studio/v1/extensions show."""
        disabled = set(self.settings.get("disabled_extensions"))
        rows = self.registry.statuses()
        for row in rows:
            wanted = row["id"] not in disabled
            row["enabled_next_start"] = wanted
            row["restart_needed"] = wanted != row["enabled"]
        return {
            "extensions": rows,
            "management_allowed": self.access.extension_management_allowed,
            "management_message": None if self.access.extension_management_allowed
            else self.access.refusal("Installing, updating, enabling and disabling extensions"),
        }

    # -- changing ------------------------------------------------------------------------------------------

    def set_enabled(self, extension_id: str, enabled: bool) -> str:
        self.access.check_extension_management("Enabling and disabling extensions")
        record = self._record(extension_id)
        disabled = [x for x in self.settings.get("disabled_extensions") if x != record.id]
        if not enabled:
            disabled.append(record.id)
        self.settings.update({"disabled_extensions": sorted(disabled)})
        return f"{record.name} will be {'enabled' if enabled else 'disabled'}. {RESTART_NOTE}"

    def set_enabled_ids(self, enabled_ids: set[str]) -> str:
        """Enable exactly `enabled_ids` among installed extensions (the tab's checkbox list)."""
        self.access.check_extension_management("Enabling and disabling extensions")
        known = {r.id for r in self.registry.records}
        unknown = enabled_ids - known
        if unknown:
            raise NotFound(f"no installed extension with id {', '.join(sorted(unknown))}")
        self.settings.update({"disabled_extensions": sorted(known - enabled_ids)})
        return f"Saved. {RESTART_NOTE}"

    def install_from_url(self, url: str, branch: str | None = None, folder_name: str | None = None) -> str:
        self.access.check_extension_management("Installing extensions")
        url = url.strip()
        if not url:
            raise UserError("give the git URL of the extension to install", field="url")
        manifest = self.installer.install_from_git(url, branch or None, folder_name or None)
        return f"Installed {manifest.name} {manifest.version}. {RESTART_NOTE}"

    def install_from_archive(self, archive: Path) -> str:
        self.access.check_extension_management("Installing extensions")
        manifest = self.installer.install_from_archive(archive)
        return f"Installed {manifest.name} {manifest.version}. {RESTART_NOTE}"

    def install_from_folder(self, folder: Path) -> str:
        self.access.check_extension_management("Installing extensions")
        manifest = self.installer.install_from_folder(folder)
        return f"Installed {manifest.name} {manifest.version}. {RESTART_NOTE}"

    def check_for_updates(self, extension_id: str) -> dict[str, Any]:
        self.access.check_extension_management("Checking extensions for updates")
        record = self._user_record(extension_id, "checked for updates")
        return _as_dict(self.installer.check_for_updates(record.folder))

    def update(self, extension_id: str) -> dict[str, Any]:
        self.access.check_extension_management("Updating extensions")
        record = self._user_record(extension_id, "updated")
        status = _as_dict(self.installer.update(record.folder))
        status["message"] = f"{status.get('message', '')} {RESTART_NOTE}".strip()
        return status

    def uninstall(self, extension_id: str) -> str:
        self.access.check_extension_management("Removing extensions")
        record = self._user_record(extension_id, "removed")
        self.installer.uninstall(record.folder)
        return f"Removed {record.name}. {RESTART_NOTE}"

    def _record(self, extension_id: str) -> ExtensionRecord:
        record = self.registry.get(extension_id)
        if record is None:
            raise NotFound(f"no installed extension with id '{extension_id}'", field="id")
        return record

    def _user_record(self, extension_id: str, verb: str) -> ExtensionRecord:
        record = self._record(extension_id)
        if record.builtin:
            raise UserError(f"{record.name} is built in; it is {verb} with the app itself", field="id")
        return record


def _as_dict(status: Any) -> dict[str, Any]:
    return asdict(status) if is_dataclass(status) else dict(status)
