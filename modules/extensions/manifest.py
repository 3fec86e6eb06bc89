"""`extension.toml`: what an extension is, which API version it was written for, and what it needs.

Example::

    id = "hello"
    name = "Hello"
    version = "1.0.0"
    api_version = 1
    description = "Says hello"
    entry = "main:register"      # module inside the extension folder : function that receives the API
    requires = ["other-ext"]      # extension ids that must load first
    pip = ["numpy>=1.26"]         # installed when the extension is installed, never at UI build time
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from modules.errors import UserError

MANIFEST_NAME = "extension.toml"
# Versions of the extension API this app can hand out. An extension asking for another one is refused
# with a message, not loaded half-way.
SUPPORTED_API_VERSIONS = (1,)
ID_PATTERN = r"[a-z0-9][a-z0-9_-]{0,63}"


class ManifestError(UserError):
    """A missing or malformed manifest; the message names the file and the field."""


class Manifest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=f"^{ID_PATTERN}$")
    name: str = Field(min_length=1, max_length=100)
    version: str = Field(min_length=1, max_length=40)
    api_version: int
    description: str = Field(default="", max_length=2000)
    entry: str = Field(default="main:register", pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    requires: tuple[str, ...] = ()
    pip: tuple[str, ...] = ()

    @field_validator("api_version")
    @classmethod
    def _known_api(cls, v: int) -> int:
        if v not in SUPPORTED_API_VERSIONS:
            raise ValueError(f"api_version {v} is not supported; this app offers {list(SUPPORTED_API_VERSIONS)}")
        return v

    @field_validator("requires")
    @classmethod
    def _ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [x for x in v if not re.fullmatch(ID_PATTERN, x)]
        if bad:
            raise ValueError(f"not extension ids: {bad}")
        return v

    @field_validator("pip")
    @classmethod
    def _requirements(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for line in v:
            # Plain PEP 508 requirements only: no pip options (-e, --index-url) and no direct URLs,
            # so a manifest cannot point pip at an arbitrary server or a local path.
            if line.strip().startswith("-"):
                raise ValueError(f"pip option not allowed: {line!r}")
            try:
                req = Requirement(line)
            except InvalidRequirement as e:
                raise ValueError(f"not a requirement: {line!r} ({e})") from None
            if req.url:
                raise ValueError(f"direct URL requirements are not allowed: {line!r}")
        return v

    @property
    def entry_module(self) -> str:
        return self.entry.split(":", 1)[0]

    @property
    def entry_function(self) -> str:
        return self.entry.split(":", 1)[1]


def read_manifest(folder: Path) -> Manifest:
    """Parse `<folder>/extension.toml`, or raise ManifestError saying what is wrong."""
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"{folder.name}: no {MANIFEST_NAME} found in {folder}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ManifestError(f"{path}: cannot be read as TOML: {e}") from None
    try:
        return Manifest.model_validate(raw)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'manifest'}: {err['msg']}" for err in e.errors())
        raise ManifestError(f"{path}: {problems}") from None
