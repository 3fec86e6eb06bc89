"""Emphasis syntax: ``(x)``, ``[x]``, ``(x:1.5)`` and ``BREAK``, with AUTOMATIC1111's exact semantics.

:func:`parse_prompt_attention` mirrors A1111's ``prompt_parser.parse_prompt_attention`` (v1.10), including its
quirks, because users tune weights against A1111's numbers:

* ``(x)`` multiplies by 1.1 and ``[x]`` by ``1 / 1.1`` (not a division by 1.1: the floats differ in the last
  bit); nested brackets multiply in closing order, so ``((x:1.3))`` is ``1.3 * 1.1 * 1.1``.
* Brackets still open at the end apply to everything after them (round ones first, then square ones); a
  closing bracket with nothing to close is literal text, as is ``:1.2)`` without an open ``(``.
* ``\\(``, ``\\)``, ``\\[``, ``\\]`` and ``\\\\`` are literal characters; a backslash before anything else is
  dropped.
* ``BREAK`` as a separate word becomes the marker ``("BREAK", -1.0)``. Emphasis around it is applied to the
  marker too, so ``(BREAK)`` yields ``("BREAK", -1.1)``, which is then *not* a chunk break but the word BREAK
  with a negative weight -- A1111 behaves exactly so.
* Adjacent pieces with equal weights are merged; an empty prompt gives ``[("", 1.0)]``.
"""

from __future__ import annotations

import re

from modules.errors import UserError

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
BREAK_TEXT = "BREAK"
BREAK_WEIGHT = -1.0
# Every open bracket rescales each piece written after it, so the work grows as pieces x open brackets: 100 KB of
# "[[[[:::" kept a CPU busy for two minutes per request (and per keystroke in the token counter). Real prompts
# nest a dozen deep at most, and 1.1**64 is already a weight no model can use, so deeper nesting is refused.
MAX_OPEN_BRACKETS = 64

# `:weight)` closing an open "(": the number is loose on purpose (A1111 accepts "1." and ".5" and fails on "1.2.3").
_WEIGHT_CLOSE = re.compile(r":\s*([+-]?[.\d]+)\s*\)")
# A1111 splits on r"\s*\bBREAK\b\s*"; run by `re` that regex retries its leading \s* at every blank of a long run,
# which made 20 KB of spaces take nine seconds. `_split_breaks` finds the same splits by looking for the word
# and then widening over the blanks around it.
_BREAK_WORD = re.compile(r"\bBREAK\b")
_ESCAPABLE = frozenset("()[]\\")
# Characters that end a run of plain text.
_TEXT_STOP = frozenset("\\()[]:")


def is_break(piece: tuple[str, float]) -> bool:
    """True for the marker that :func:`parse_prompt_attention` emits for a standalone ``BREAK``."""
    return piece[0] == BREAK_TEXT and piece[1] == BREAK_WEIGHT


class _Pieces:
    """The growing list of ``[text, weight]`` pieces, with the open-bracket stacks that index into it."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.weights: list[float] = []
        self.round_opens: list[int] = []
        self.square_opens: list[int] = []

    def add(self, text: str, weight: float = 1.0) -> None:
        self.texts.append(text)
        self.weights.append(weight)

    def add_text(self, text: str) -> None:
        """Plain text, where each standalone BREAK becomes a marker piece between the parts around it."""
        for index, part in enumerate(_split_breaks(text)):
            if index:
                self.add(BREAK_TEXT, BREAK_WEIGHT)
            self.add(part)

    def scale_from(self, start: int, factor: float) -> None:
        # Multiplying in place, piece by piece, reproduces A1111's float rounding exactly.
        for index in range(start, len(self.weights)):
            self.weights[index] *= factor

    def merged(self) -> list[tuple[str, float]]:
        if not self.texts:
            return [("", 1.0)]
        result = [(self.texts[0], self.weights[0])]
        for text, weight in zip(self.texts[1:], self.weights[1:]):
            if weight == result[-1][1]:
                result[-1] = (result[-1][0] + text, weight)
            else:
                result.append((text, weight))
        return result


def _split_breaks(text: str) -> list[str]:
    r"""`re.split(r"\s*\bBREAK\b\s*", text)` in linear time: the blanks before and after each BREAK go with it."""
    parts: list[str] = []
    start = 0
    for match in _BREAK_WORD.finditer(text):
        left, right = match.start(), match.end()
        while left > start and text[left - 1].isspace():  # str.isspace is what \s matches in a str pattern
            left -= 1
        while right < len(text) and text[right].isspace():
            right += 1
        parts.append(text[start:left])
        start = right
    parts.append(text[start:])
    return parts


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into ``(text, weight)`` pieces according to its emphasis brackets.

    >>> parse_prompt_attention("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]

    Raises:
        UserError: ``(x:w)`` where ``w`` is not a number, e.g. ``(x:1.2.3)`` (A1111 fails there too), or more
            than ``MAX_OPEN_BRACKETS`` brackets open at once.
    """
    pieces = _Pieces()
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            # An escapable character is kept literally; any other escaped character keeps only itself.
            escaped = text[pos + 1 : pos + 2]
            if escaped and escaped in _ESCAPABLE:
                pieces.add(escaped)
                pos += 2
            else:
                pieces.add("")
                pos += 1
        elif char in "([":
            if len(pieces.round_opens) + len(pieces.square_opens) >= MAX_OPEN_BRACKETS:
                raise UserError(f"The prompt has more than {MAX_OPEN_BRACKETS} emphasis brackets open at once "
                                f"(at character {pos + 1}); close them or escape literal ones as \\( and \\[.",
                                field="prompt")
            (pieces.round_opens if char == "(" else pieces.square_opens).append(len(pieces.texts))
            pos += 1
        elif char == ":":
            close = _WEIGHT_CLOSE.match(text, pos)
            if close and pieces.round_opens:
                pieces.scale_from(pieces.round_opens.pop(), _parse_weight(close.group(1), close.group(0)))
                pos = close.end()
            elif close:
                pieces.add_text(close.group(0))
                pos = close.end()
            else:
                pieces.add_text(":")
                pos += 1
        elif char == ")" and pieces.round_opens:
            pieces.scale_from(pieces.round_opens.pop(), ROUND_MULTIPLIER)
            pos += 1
        elif char == "]" and pieces.square_opens:
            pieces.scale_from(pieces.square_opens.pop(), SQUARE_MULTIPLIER)
            pos += 1
        elif char in ")]":
            pieces.add_text(char)
            pos += 1
        else:
            end = pos
            while end < len(text) and text[end] not in _TEXT_STOP:
                end += 1
            pieces.add_text(text[pos:end])
            pos = end

    for start in pieces.round_opens:
        pieces.scale_from(start, ROUND_MULTIPLIER)
    for start in pieces.square_opens:
        pieces.scale_from(start, SQUARE_MULTIPLIER)
    return pieces.merged()


def _parse_weight(number: str, tag: str) -> float:
    try:
        return float(number)
    except ValueError:
        raise UserError(f"'{number}' in '{tag}' is not a valid emphasis weight.", field="prompt") from None
