"""File-name patterns for saved images, as A1111's `FilenameGenerator` (modules/images.py, v1.10) reads them.

A pattern is literal text with `[token]` or `[token<arg>...]` parts, e.g. `[seed]-[prompt_spaces]` or
`[datetime<%Y-%m-%d_%H%M><Asia/Tokyo>]`. Token names are case-insensitive. As in A1111:

- an unknown token, or one whose value is unknown (None), stays in the name as the literal `[token]`;
- a token that A1111 "skips" (e.g. `[batch_number]` when the batch has one image) also removes the literal
  text just before it, so `[seed]-[batch_number]` gives `1234`, not `1234-`;
- prompt-derived values are sanitised and cut to 128 characters (`--filenames-max-length`).

Unlike A1111, every token value is also stripped of path separators and characters Windows forbids, so no
prompt, sampler or model name can ever add a folder level or leave the outputs folder (see `paths.py`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from types import MappingProxyType
from zoneinfo import ZoneInfo

from PIL import Image

log = logging.getLogger(__name__)

# A1111's `invalid_filename_chars` (1.10 added `#`, which breaks URLs), plus every other control character:
# a NUL would make the OS call fail and the rest are invisible in a file browser.
INVALID_FILENAME_CHARS = '#<>:"/\\|?*' + "".join(chr(c) for c in range(32)) + "\x7f"
_TO_UNDERSCORE: Mapping[int, str] = MappingProxyType({ord(c): "_" for c in INVALID_FILENAME_CHARS})

# A1111's `--filenames-max-length` default; it bounds each sanitised part (a prompt), not the whole name.
MAX_PART_LENGTH = 128
DEFAULT_TIME_FORMAT = "%Y%m%d%H%M%S"
DEFAULT_MAX_PROMPT_WORDS = 8

_PATTERN_RE = re.compile(r"(.*?)(?:\[([^\[\]]+)\]|$)")
_PATTERN_ARG_RE = re.compile(r"(.*)<([^>]*)>$")
_NON_LETTERS_RE = re.compile(r"[\s" + re.escape(string.punctuation) + r"]+")


class Skip(Enum):
    """A1111's NOTHING_AND_SKIP_PREVIOUS_TEXT: the token and the literal text just before it both vanish."""

    WITH_PREVIOUS_TEXT = "skip"


TokenValue = str | int | float | None | Skip


@dataclass(frozen=True)
class NamingContext:
    """What the caller knows about the image being saved; A1111 reads the same facts from `p`.

    Fields left None make their token stay literal (A1111 does the same when `p` lacks them), except where
    A1111 skips the token (scheduler, denoising) or uses a fallback (seed "", vae "NoneType", basename "img").
    `scheduler` should be the resolved label ("Karras"), as A1111 resolves "Automatic" before naming.
    """

    seed: int | None = None
    prompt: str | None = None
    negative_prompt: str = ""
    steps: int | None = None
    cfg_scale: float | None = None
    width: int | None = None
    height: int | None = None
    sampler: str | None = None
    scheduler: str | None = None
    model_name: str | None = None
    model_hash: str | None = None
    vae_filename: str | None = None
    styles: tuple[str, ...] = ()
    style_prompts: tuple[str, ...] = ()
    batch_size: int = 1
    batch_index: int = 0
    n_iter: int = 1
    iteration: int = 0
    all_seeds: tuple[int, ...] = ()
    clip_skip: int = 1
    denoising_strength: float | None = None
    job_timestamp: str | None = None
    user: str | None = None
    basename: str | None = None

    @property
    def batch_number(self) -> int | None:
        """1-based position in the batch, or None when the batch has one image (A1111 then skips it)."""
        return None if self.batch_size == 1 else self.batch_index + 1

    @property
    def generation_number(self) -> int | None:
        """1-based position in the whole job, or None for a one-image job (A1111 then skips it)."""
        if self.n_iter == 1 and self.batch_size == 1:
            return None
        return self.iteration * self.batch_size + self.batch_index + 1


def sanitize_part(text: str, replace_spaces: bool = True, max_length: int = MAX_PART_LENGTH) -> str:
    """A1111's `sanitize_filename_part`: forbidden characters become `_`, leading spaces go, the text is cut to
    `max_length`, then trailing spaces and dots go (Windows drops them silently)."""
    if replace_spaces:
        text = text.replace(" ", "_")
    text = text.translate(_TO_UNDERSCORE)
    return text.lstrip(" ")[:max_length].rstrip(" .")


def scrub(text: str) -> str:
    """Forbidden characters (path separators included) to `_`, nothing else changed."""
    return text.translate(_TO_UNDERSCORE)


class FilenameGenerator:
    """Expands a name pattern for one image at one moment (`now` is shared by [date] and [datetime])."""

    def __init__(
        self,
        context: NamingContext,
        image: Image.Image | None,
        now: datetime,
        max_prompt_words: int = DEFAULT_MAX_PROMPT_WORDS,
        max_part_length: int = MAX_PART_LENGTH,
    ) -> None:
        self.context = context
        self.image = image
        self.now = now
        self.max_prompt_words = max_prompt_words
        self.max_part_length = max_part_length

    def apply(self, pattern: str) -> str:
        """The pattern with its tokens replaced; values never contain a path separator."""
        result = ""
        for match in _PATTERN_RE.finditer(pattern):
            text, token = match.groups()
            if token is None:
                result += text
                continue
            name, args = _split_args(token)
            value = self._value(name, args)
            if value is Skip.WITH_PREVIOUS_TEXT:
                continue
            if value is None:
                # A1111 keeps an unknown token as literal text, without its <args>.
                result += f"{text}[{name}]"
            else:
                result += text + scrub(str(value))
        return result

    def _value(self, name: str, args: tuple[str, ...]) -> TokenValue:
        token = TOKENS.get(name.lower())
        if token is None:
            return None
        try:
            return token(self, args)
        except Exception:  # noqa: BLE001 - a bad [token<arg>] must not stop the save; A1111 logs it too.
            log.warning("could not add [%s] to a file name", name, exc_info=True)
            return None

    # --- helpers the tokens share ------------------------------------------------------------------------

    def part(self, text: str | None, replace_spaces: bool = True) -> str | None:
        return None if text is None else sanitize_part(text, replace_spaces, self.max_part_length)

    def prompt_words(self) -> str | None:
        words = [w for w in _NON_LETTERS_RE.split(self.context.prompt or "") if w] or ["empty"]
        return self.part(" ".join(words[: self.max_prompt_words]), replace_spaces=False)

    def prompt_no_styles(self) -> str | None:
        """The prompt with the caller's style prompts taken out again, A1111's way (text replace)."""
        prompt = self.context.prompt
        if prompt is None:
            return None
        for style in self.context.style_prompts:
            if not style:
                continue
            for piece in style.split("{prompt}"):
                prompt = prompt.replace(piece, "").replace(", ,", ",").strip().strip(",")
            prompt = prompt.replace(style, "").strip().strip(",").strip()
        return self.part(prompt, replace_spaces=False)

    def has_prompt(self, args: tuple[str, ...]) -> str | None:
        """`[hasprompt<word|default>...]`: each word found in the prompt, or its default when absent."""
        if self.context.prompt is None:
            return None
        lower = self.context.prompt.lower()
        out = ""
        for arg in args:
            if not arg:
                continue
            expected, _, default = arg.partition("|")
            out += expected.lower() if expected.lower() in lower else default
        return self.part(out)

    def datetime_text(self, args: tuple[str, ...]) -> str | None:
        """`[datetime]`, `[datetime<fmt>]`, `[datetime<fmt><Time/Zone>]`; a bad zone means local time."""
        fmt = args[0] if args and args[0] else DEFAULT_TIME_FORMAT
        moment = self.now.astimezone(_zone(args[1]) if len(args) > 1 else None)
        try:
            text = moment.strftime(fmt)
        except (ValueError, TypeError):
            text = moment.strftime(DEFAULT_TIME_FORMAT)
        return self.part(text, replace_spaces=False)

    def image_hash(self, args: tuple[str, ...]) -> str | None:
        if self.image is None:
            return None
        length = int(args[0]) if args and args[0] else None
        return hashlib.sha256(self.image.tobytes()).hexdigest()[:length]

    def size(self, axis: int) -> int | None:
        """The saved image's size, as A1111 (so a hires-fixed image is named by its final size)."""
        if self.image is not None:
            return self.image.size[axis]
        return self.context.width if axis == 0 else self.context.height

    def scheduler(self, with_sampler: bool) -> TokenValue:
        ctx = self.context
        if ctx.scheduler is None or ctx.sampler is None:
            return Skip.WITH_PREVIOUS_TEXT
        text = ctx.scheduler.capitalize()
        return self.part(f"{ctx.sampler} {text}" if with_sampler else text, replace_spaces=False)


def _split_args(token: str) -> tuple[str, tuple[str, ...]]:
    """`datetime<%Y><UTC>` -> ("datetime", ("%Y", "UTC")): A1111 peels `<arg>` groups off the end."""
    args: list[str] = []
    while (match := _PATTERN_ARG_RE.match(token)) is not None:
        token, arg = match.groups()
        args.insert(0, arg)
    return token, tuple(args)


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):
        # zoneinfo raises ZoneInfoNotFoundError (a KeyError) or ValueError for malformed keys.
        return None


def _string_hash(text: str, args: tuple[str, ...]) -> str:
    length = int(args[0]) if args and args[0] else 8
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def _vae_stem(filename: str | None) -> str:
    """A1111's [vae_filename]: the file name up to its first dot (or the second part of a dotfile)."""
    if not filename:
        return "NoneType"
    parts = filename.replace("\\", "/").rsplit("/", 1)[-1].split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "" else parts[0]


def _skip_if_none(value: TokenValue) -> TokenValue:
    return Skip.WITH_PREVIOUS_TEXT if value is None else value


def _seed_first(g: FilenameGenerator) -> TokenValue:
    ctx = g.context
    return ctx.seed if ctx.batch_size == 1 or not ctx.all_seeds else ctx.all_seeds[0]


def _seed_last(g: FilenameGenerator) -> TokenValue:
    ctx = g.context
    return Skip.WITH_PREVIOUS_TEXT if ctx.batch_size == 1 or not ctx.all_seeds else ctx.all_seeds[-1]


def _styles(g: FilenameGenerator) -> TokenValue:
    return g.part(", ".join(s for s in g.context.styles if s != "None") or "None", replace_spaces=False)


def _denoising(g: FilenameGenerator) -> TokenValue:
    # A1111 skips it when unset or 0 (txt2img without hires fix).
    return g.context.denoising_strength or Skip.WITH_PREVIOUS_TEXT


Token = Callable[[FilenameGenerator, tuple[str, ...]], TokenValue]

# Every token A1111 1.10 knows, except [full_prompt_hash]'s use of p.prompt (we hash this image's prompt).
TOKENS: Mapping[str, Token] = MappingProxyType({
    "basename": lambda g, a: g.context.basename or "img",
    "seed": lambda g, a: g.context.seed if g.context.seed is not None else "",
    "seed_first": lambda g, a: _seed_first(g),
    "seed_last": lambda g, a: _seed_last(g),
    "steps": lambda g, a: g.context.steps,
    "cfg": lambda g, a: g.context.cfg_scale,
    "width": lambda g, a: g.size(0),
    "height": lambda g, a: g.size(1),
    "styles": lambda g, a: _styles(g),
    "sampler": lambda g, a: g.part(g.context.sampler, replace_spaces=False),
    "scheduler": lambda g, a: g.scheduler(with_sampler=False),
    "sampler_scheduler": lambda g, a: g.scheduler(with_sampler=True),
    "model_hash": lambda g, a: g.context.model_hash,
    "model_name": lambda g, a: g.part(g.context.model_name, replace_spaces=False),
    "date": lambda g, a: g.now.strftime("%Y-%m-%d"),
    "datetime": lambda g, a: g.datetime_text(a),
    "job_timestamp": lambda g, a: g.context.job_timestamp or g.now.strftime(DEFAULT_TIME_FORMAT),
    "prompt_hash": lambda g, a: _string_hash(g.context.prompt or "", a),
    "negative_prompt_hash": lambda g, a: _string_hash(g.context.negative_prompt, a),
    "full_prompt_hash": lambda g, a: _string_hash(f"{g.context.prompt or ''} {g.context.negative_prompt}", a),
    "prompt": lambda g, a: g.part(g.context.prompt),
    "prompt_no_styles": lambda g, a: g.prompt_no_styles(),
    "prompt_spaces": lambda g, a: g.part(g.context.prompt, replace_spaces=False),
    "prompt_words": lambda g, a: g.prompt_words(),
    "batch_number": lambda g, a: _skip_if_none(g.context.batch_number),
    "batch_size": lambda g, a: g.context.batch_size,
    "generation_number": lambda g, a: _skip_if_none(g.context.generation_number),
    "hasprompt": lambda g, a: g.has_prompt(a),
    "clip_skip": lambda g, a: g.context.clip_skip,
    "denoising": lambda g, a: _denoising(g),
    "user": lambda g, a: g.context.user,
    "vae_filename": lambda g, a: _vae_stem(g.context.vae_filename),
    "none": lambda g, a: "",
    "image_hash": lambda g, a: g.image_hash(a),
})
