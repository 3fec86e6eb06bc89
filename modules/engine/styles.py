"""Prompt styles from styles.csv (`name,prompt,negative_prompt`), applied as A1111 applies them: a style
with `{prompt}` wraps the prompt, otherwise it is appended after a comma."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from modules.errors import UserError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Style:
    name: str
    prompt: str
    negative_prompt: str


class StyleStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def all(self) -> list[Style]:
        """Read fresh each time: users edit styles.csv by hand while the app runs."""
        if not self.path.is_file():
            return []
        try:
            with self.path.open(newline="", encoding="utf-8-sig") as f:
                return [Style(row.get("name", "").strip(), row.get("prompt") or "", row.get("negative_prompt") or "")
                        for row in csv.DictReader(f) if row.get("name", "").strip()]
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            log.warning("styles.csv could not be read: %s", e)
            return []

    def apply(self, prompt: str, negative: str, names: list[str]) -> tuple[str, str]:
        if not names:
            return prompt, negative
        styles = {s.name: s for s in self.all()}
        missing = [n for n in names if n not in styles]
        if missing:
            raise UserError(f"unknown style {', '.join(missing)}; styles in {self.path.name}: "
                            f"{', '.join(styles) or 'none'}", field="styles")
        for name in names:
            prompt = _merge(styles[name].prompt, prompt)
            negative = _merge(styles[name].negative_prompt, negative)
        return prompt, negative


def _merge(style: str, text: str) -> str:
    if "{prompt}" in style:
        return style.replace("{prompt}", text)
    if not style:
        return text
    if not text:
        return style
    return f"{text}, {style}"
