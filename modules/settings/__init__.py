"""Typed settings: option definitions grouped in sections, stored in config.json."""

from modules.settings.options import Option, Section
from modules.settings.store import Settings

__all__ = ["Option", "Section", "Settings"]
