"""What a generation job returns: the images, their parameters, and A1111's `info` for the API."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class GeneratedImage:
    image: Any  # PIL.Image.Image
    seed: int
    subseed: int
    infotext: str
    path: Path | None = None


@dataclass
class GenerationResult:
    images: list[GeneratedImage] = field(default_factory=list)
    grid: GeneratedImage | None = None
    info: dict[str, Any] = field(default_factory=dict)  # A1111's Processed.js() fields
    notes: list[str] = field(default_factory=list)

    @property
    def infotexts(self) -> list[str]:
        return [g.infotext for g in self.images]
