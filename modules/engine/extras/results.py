"""What an "extras" job returns: each processed image with its infotext and file, and the job's notes.

Pydantic models, so the job API (/studio/v1/jobs/{id}) can return a finished extras job as JSON: images dump as
base64 PNG through `ImageValue`'s serializer, paths as text.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from modules.engine.extras.infotext import to_html
from modules.engine.image_input import ImageValue


class ExtrasImage(BaseModel):
    """One processed image."""

    name: str = Field("", description="the source's file name, when it had one")
    infotext: str = Field("", description="what Extras did (A1111's postprocessing infotext)")
    saved_infotext: str = Field("", description="the infotext written into the file: the source's parameters "
                                "plus the postprocessing pairs")
    image: ImageValue = Field(None, description="the result; None for a folder batch that does not show results")
    path: Path | None = Field(None, description="where it was saved; None when not saved")


class ExtrasResult(BaseModel):
    images: list[ExtrasImage] = Field(default_factory=list, description="in the order of the sources; skipped "
                                      "sources are missing (see notes)")
    notes: list[str] = Field(default_factory=list, description="images skipped, faces not found, and so on")

    @property
    def info(self) -> str:
        """The last image's postprocessing infotext, which is what A1111's Extras tab and API show."""
        return self.images[-1].infotext if self.images else ""

    @property
    def html_info(self) -> str:
        return to_html(self.info)

    @property
    def shown(self) -> list[ExtrasImage]:
        """The images that carry pixels (a folder batch may keep only the files)."""
        return [item for item in self.images if item.image is not None]
