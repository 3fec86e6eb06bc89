"""Prompt editing, alternation and `AND` composition, with AUTOMATIC1111's semantics.

A prompt such as ``a [dog:cat:0.5] in [rain|snow]`` is turned into a *schedule*: a list of
``(end_at_step, prompt_text)`` pairs saying which plain prompt conditions the model up to which step.

The syntax (A1111 ``modules/prompt_parser.py``, v1.10):

* ``[from:to:when]`` swaps ``from`` for ``to`` after step ``when``; ``[to:when]`` adds ``to``;
  ``[from::when]`` removes ``from``. They nest.
* ``[a|b|c]`` alternates, one option per step.
* Brackets that are not editing or alternation -- ``(x)``, ``(x:1.2)``, ``[x]`` -- are kept verbatim here;
  they are emphasis, handled later by :mod:`modules.engine.prompts.attention`.
* A prompt that does not fit the grammar at all (a ``|`` outside ``[...]``, a trailing backslash) is used
  unchanged for every step, exactly like A1111's fallback when lark fails.

A1111 parses with a ``lark`` Earley grammar; this module is a hand-written recursive-descent parser for the
same language, checked against lark on random prompts. Outside any group, ``[ ] ( ) :`` may be literal text,
which makes the grammar ambiguous; a ``[`` that opens a well-formed edit is always read as the edit here.
lark agrees except in one corner it resolves by set iteration order, so differently from run to run
(``PYTHONHASHSEED``): an edit directly followed by such a stray character, as in ``[a:3])``, which A1111
sometimes reads as plain text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple


class ScheduledPrompt(NamedTuple):
    """One entry of a schedule: ``prompt`` conditions the model while the step index is ``<= end_at_step``."""

    end_at_step: int
    prompt: str


@dataclass(frozen=True)
class _Edit:
    """``[before:after:when]``; ``before`` is None for the ``[after:when]`` form."""

    before: tuple[_Node, ...] | None
    after: tuple[_Node, ...]
    when: str  # kept as typed: whether it contains "." decides fraction vs step number


@dataclass(frozen=True)
class _Alternation:
    """``[a|b|c]``: option ``(step - 1) % len(options)`` is used at ``step``."""

    options: tuple[tuple[_Node, ...], ...]


_Node = str | _Edit | _Alternation
_Seq = tuple[_Node, ...]

# lark's common.SIGNED_NUMBER (ASCII digits only), optionally surrounded by whitespace, then the closing "]".
_WHEN_TAIL = re.compile(r"\s*([+-]?(?:[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?|\.[0-9]+(?:[eE][+-]?[0-9]+)?))\s*\]")
# Characters with a meaning inside the grammar; everything else (whitespace included) is plain text.
_SPECIAL = frozenset("\\[]():|")
# Outside any bracket these may stand alone as literal text (A1111's `/[][():]/+` in the start rule).
_STRAY = frozenset("[]():")

# A1111's `re_AND` / `re_weight`: sub-prompts split on the word AND, each with an optional trailing `:weight`.
# `re_weight` is r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$"; run by `re` it tries every prefix and rescans
# the blanks after each, so 30 KB of spaces inside a prompt took five seconds. `_split_weight` gives its groups
# by looking at the end of the text instead.
_AND = re.compile(r"\bAND\b")
_WEIGHT_NUMBER = re.compile(r"[-+]?(?:\d+\.?|\d*\.\d+)")


class _NoParse(Exception):
    """The prompt is outside the grammar; A1111 then uses it unchanged."""


class _Parser:
    """Recursive-descent parser for the editing grammar.

    Every method is a pure function of the start position, so results are memoised: the top level retries
    from the next character after a failed ``[``, and without the memo nested failures would cost O(n^2).
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self._prompt_memo: dict[int, tuple[_Seq, int]] = {}
        self._group_memo: dict[int, tuple[_Seq, int] | None] = {}

    def parse(self) -> _Seq:
        """Parse the whole text; raises :class:`_NoParse` if it is outside the grammar."""
        text, pos, out = self.text, 0, []
        while pos < len(text):
            seq, end = self.prompt(pos)
            if end > pos:
                out.extend(seq)
                pos = end
            elif text[pos] in _STRAY:
                out.append(text[pos])
                pos += 1
            else:
                raise _NoParse
        return tuple(out)

    def prompt(self, pos: int) -> tuple[_Seq, int]:
        """Longest run of plain text and well-formed groups starting at ``pos`` (possibly empty)."""
        if pos not in self._prompt_memo:
            self._prompt_memo[pos] = self._prompt(pos)
        return self._prompt_memo[pos]

    def _prompt(self, pos: int) -> tuple[_Seq, int]:
        text, out = self.text, []
        while pos < len(text):
            char = text[pos]
            if char not in _SPECIAL:
                start = pos
                while pos < len(text) and text[pos] not in _SPECIAL:
                    pos += 1
                out.append(text[start:pos])
            elif char == "\\":
                # An escape is kept verbatim (emphasis parsing reads it later); lark's `\\.` excludes newline.
                if pos + 1 >= len(text) or text[pos + 1] == "\n":
                    break
                out.append(text[pos : pos + 2])
                pos += 2
            elif char in "([":
                group = self.group(pos)
                if group is None:
                    break
                seq, pos = group
                out.extend(seq)
            else:
                break
        return tuple(out), pos

    def group(self, pos: int) -> tuple[_Seq, int] | None:
        """Parse the bracketed group opening at ``pos``; None when it is not well formed."""
        if pos not in self._group_memo:
            self._group_memo[pos] = self._paren(pos) if self.text[pos] == "(" else self._bracket(pos)
        return self._group_memo[pos]

    def _at(self, pos: int) -> str:
        return self.text[pos] if pos < len(self.text) else ""

    def _paren(self, pos: int) -> tuple[_Seq, int] | None:
        # `(x)` or `(x:y)`: emphasis, kept as literal text at this stage.
        inner, end = self.prompt(pos + 1)
        if self._at(end) == ")":
            return ("(", *inner, ")"), end + 1
        if self._at(end) == ":":
            weight, close = self.prompt(end + 1)
            if self._at(close) == ")":
                return ("(", *inner, ":", *weight, ")"), close + 1
        return None

    def _bracket(self, pos: int) -> tuple[_Seq, int] | None:
        first, end = self.prompt(pos + 1)
        sep = self._at(end)
        if sep == "]":
            return ("[", *first, "]"), end + 1
        if sep == "|":
            options = [first]
            while self._at(end) == "|":
                option, end = self.prompt(end + 1)
                options.append(option)
            if self._at(end) != "]":
                return None
            return (_Alternation(tuple(options)),), end + 1
        if sep != ":":
            return None
        tail = _WHEN_TAIL.match(self.text, end + 1)
        if tail:  # `[to:when]`
            return (_Edit(None, first, tail.group(1)),), tail.end()
        second, end = self.prompt(end + 1)
        if self._at(end) == ":" and (tail := _WHEN_TAIL.match(self.text, end + 1)):
            return (_Edit(first, second, tail.group(1)),), tail.end()
        return None


@dataclass(frozen=True)
class _Timeline:
    """How a typed ``when`` maps to a step, for the first pass or the hires-fix pass."""

    steps: int
    int_offset: int
    float_offset: float
    use_old_scheduling: bool

    def resolve(self, when: str) -> int:
        """The step after which an edit switches; values < 1 never switch before step 1 (always "after")."""
        value = float(when)
        if self.use_old_scheduling:
            value = value * self.steps if value < 1 else value
        elif "." in when:
            value = (value - self.float_offset) * self.steps
        else:
            value = value - self.int_offset
        # Clamp before int(): A1111's int() would raise on an overflowing "1e999"; clamping keeps the result.
        return min(self.steps, int(max(-1.0, min(value, float(self.steps)))))


def _collect_steps(seq: _Seq, timeline: _Timeline, found: set[int]) -> None:
    # Every edit anywhere in the tree adds its switch step, even inside a branch that is never active,
    # as A1111's lark Visitor does; alternation needs every step.
    for node in seq:
        if isinstance(node, _Edit):
            step = timeline.resolve(node.when)
            if step >= 1:
                found.add(step)
            if node.before is not None:
                _collect_steps(node.before, timeline, found)
            _collect_steps(node.after, timeline, found)
        elif isinstance(node, _Alternation):
            found.update(range(1, timeline.steps + 1))
            for option in node.options:
                _collect_steps(option, timeline, found)


def _render(seq: _Seq, step: int, timeline: _Timeline, out: list[str]) -> None:
    for node in seq:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Edit):
            if step <= timeline.resolve(node.when):
                if node.before is not None:
                    _render(node.before, step, timeline, out)
            else:
                _render(node.after, step, timeline, out)
        else:
            _render(node.options[(step - 1) % len(node.options)], step, timeline, out)


def _schedule_one(prompt: str, timeline: _Timeline) -> list[ScheduledPrompt]:
    try:
        tree = _Parser(prompt).parse()
    except (_NoParse, RecursionError):
        # RecursionError: hundreds of nested brackets; treat like any other unparseable prompt.
        return [ScheduledPrompt(timeline.steps, prompt)]
    steps = {timeline.steps}
    _collect_steps(tree, timeline, steps)
    schedule = []
    for step in sorted(steps):
        out: list[str] = []
        _render(tree, step, timeline, out)
        schedule.append(ScheduledPrompt(step, "".join(out)))
    return schedule


def merge_repeats(schedule: Sequence[ScheduledPrompt]) -> list[ScheduledPrompt]:
    """Drop entries whose text equals the next entry's; the conditioning at every step is unchanged.

    A1111 keeps such entries (``[fe|||]male`` lists ``male`` at steps 2, 3 and 4) and encodes each one;
    merging them saves text-encoder calls.
    """
    merged: list[ScheduledPrompt] = []
    for entry in schedule:
        if merged and merged[-1].prompt == entry.prompt:
            merged[-1] = entry
        else:
            merged.append(entry)
    return merged


def get_learned_conditioning_prompt_schedules(
    prompts: Sequence[str],
    base_steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
    *,
    merge: bool = False,
) -> list[list[ScheduledPrompt]]:
    """Schedules for a batch of prompts, as A1111's function of the same name returns them.

    Args:
        prompts: Prompts with editing/alternation syntax (extra networks and ``AND`` already split off).
        base_steps: Steps of the first pass (A1111 passes the sampler's total steps here).
        hires_steps: Steps of the hires-fix second pass, or None for the first pass. With it, a ``when``
            containing ``.`` counts fractions of *both* passes (``1.5`` = half way through hires) and a
            whole number counts steps from the start of the first pass (``25`` with 20 base steps = step 5
            of hires). This is A1111's current behaviour.
        use_old_scheduling: A1111's "Use old prompt editing timelines" compatibility option: ``when < 1``
            is a fraction, anything else a step number, and the hires pass reuses ``base_steps``.
        merge: Also apply :func:`merge_repeats` (not done by A1111; the result is equivalent).

    Returns:
        One schedule per prompt, sorted by ``end_at_step``; the last entry ends at the pass's step count.
        The rounding is A1111's: ``[x:0.55]`` with 10 steps switches after step ``int(5.5) == 5``.
    """
    if hires_steps is None or use_old_scheduling:
        timeline = _Timeline(base_steps, 0, 0.0, use_old_scheduling)
    else:
        timeline = _Timeline(hires_steps, base_steps, 1.0, use_old_scheduling)
    cache: dict[str, list[ScheduledPrompt]] = {}
    result = []
    for prompt in prompts:
        if prompt not in cache:
            schedule = _schedule_one(prompt, timeline)
            cache[prompt] = merge_repeats(schedule) if merge else schedule
        result.append(list(cache[prompt]))
    return result


def prompt_schedule(
    prompt: str,
    steps: int,
    hires_steps: int | None = None,
    use_old_scheduling: bool = False,
    *,
    merge: bool = False,
) -> list[ScheduledPrompt]:
    """Schedule of a single prompt; see :func:`get_learned_conditioning_prompt_schedules`."""
    return get_learned_conditioning_prompt_schedules([prompt], steps, hires_steps, use_old_scheduling, merge=merge)[0]


def prompt_at_step(schedule: Sequence[ScheduledPrompt], step: int) -> str:
    """The prompt in force at the 0-based sampling step ``step``, chosen as A1111's ``reconstruct_cond_batch``.

    The first entry with ``step <= end_at_step`` wins, so ``a [b:3]`` uses ``a`` for steps 0-3 (four steps)
    and ``[x|y]`` gives x, x, y, x, y... A step past the last entry falls back to the first entry, like A1111.
    """
    for entry in schedule:
        if step <= entry.end_at_step:
            return entry.prompt
    return schedule[0].prompt


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Split a prompt on the word ``AND`` into ``(sub_prompt, weight)`` pairs (A1111 composable diffusion).

    Each part may end with ``:weight`` (``a cat :1.2 AND a dog:-0.5``); the default weight is 1.0. Trailing
    whitespace is dropped and leading whitespace kept, as A1111's ``get_multicond_prompt_list`` does.
    """
    parts = []
    for sub_prompt in _AND.split(prompt):
        text, weight = _split_weight(sub_prompt)
        parts.append((text, float(weight) if weight is not None else 1.0))
    return parts


def _split_weight(sub_prompt: str) -> tuple[str, str | None]:
    """`re_weight`'s two groups: the text without trailing blanks and without a final `:number`, and the number.

    The weight can only follow the last colon (a number holds none), and str.isspace is what \\s matches.
    """
    head = sub_prompt.rstrip()
    colon = head.rfind(":")
    if colon >= 0:
        number = head[colon + 1 :].lstrip()
        if _WEIGHT_NUMBER.fullmatch(number):
            return head[:colon].rstrip(), number
    return head, None
