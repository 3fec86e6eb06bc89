"""Extra-network tags such as ``<lora:name:0.8>``, found and removed from a prompt the way A1111 does.

A tag is ``<kind:arg1:arg2...>`` (A1111's regex ``<(\\w+):([^>]+)>``). Every tag is removed from the prompt
text, whatever its kind, before the prompt is encoded. Arguments of the form ``key=value`` are named, the
others positional (A1111's ``ExtraNetworkParams``).

LoRA (``lora`` and its A1111 alias ``lyco``): ``<lora:name:te[:unet[:dyn]]>`` or named ``te=``, ``unet=``,
``dyn=``. ``te`` defaults to 1.0, ``unet`` to ``te``, ``dyn`` to None; a named value overrides a positional
one. Hypernetworks: ``<hypernet:name:multiplier>``. Any other kind is kept generic for whoever handles it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from modules.errors import UserError

_TAG = re.compile(r"<(\w+):([^>]+)>")
LORA_KINDS = frozenset({"lora", "lyco"})
HYPERNET_KIND = "hypernet"


@dataclass(frozen=True)
class ExtraNetwork:
    """One tag from the prompt.

    Attributes:
        kind: The word before the first colon (``lora``, ``hypernet``...).
        name: The network's name: the first positional argument.
        args: The raw ``:``-separated arguments after ``name``, in order (named ones included as ``k=v``).
        te_multiplier: Strength on the text encoder (LoRA), or the hypernetwork multiplier; 1.0 by default.
        unet_multiplier: Strength on the UNet (LoRA; defaults to ``te_multiplier``), or the hypernetwork
            multiplier.
        dyn_dim: LoRA ``dyn``: how many ranks of a dynamic LoRA to use; None means all.
        named: The ``key=value`` arguments.
        tag: The tag as written, for messages and infotext.
    """

    kind: str
    name: str
    args: list[str]
    te_multiplier: float = 1.0
    unet_multiplier: float = 1.0
    dyn_dim: int | None = None
    named: dict[str, str] = field(default_factory=dict)
    tag: str = ""


def _tag_area(prompt: str) -> int:
    """Where tags can end: just after the last ">". `_TAG` run over text with no ">" ahead scans to the end from
    every "<", so 100 KB of "<lora:" took seconds per call; past the last ">" no tag can match anyway."""
    return prompt.rfind(">") + 1


def remove_extra_networks(prompt: str) -> str:
    """The prompt without its tags, never raising (for the live token counter while the user types)."""
    end = _tag_area(prompt)
    return _TAG.sub("", prompt[:end]) + prompt[end:]


def extract_extra_networks(prompt: str) -> tuple[str, list[ExtraNetwork]]:
    """Remove every ``<kind:args>`` tag from ``prompt`` and parse it.

    Returns:
        The prompt without tags (nothing else is changed, whitespace included) and the tags in order.

    Raises:
        UserError: A LoRA or hypernetwork tag with a missing name or a value that is not a finite number
            (``dyn`` must be an integer); the message quotes the tag.
    """
    networks = [_parse_tag(match.group(0), match.group(1), match.group(2))
                for match in _TAG.finditer(prompt, 0, _tag_area(prompt))]
    return remove_extra_networks(prompt), networks


def _parse_tag(tag: str, kind: str, body: str) -> ExtraNetwork:
    items = body.split(":")
    positional: list[str] = []
    named: dict[str, str] = {}
    for item in items:
        # split("=", 2) as A1111: "a=b=c" has three parts and therefore counts as positional.
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0]] = parts[1]
        else:
            positional.append(item)

    if kind in LORA_KINDS:
        return _parse_lora(tag, kind, items, positional, named)
    if kind == HYPERNET_KIND:
        multiplier = _number(tag, "multiplier", items[1]) if len(items) > 1 else 1.0
        return ExtraNetwork(kind, items[0], items[1:], multiplier, multiplier, None, named, tag)
    return ExtraNetwork(kind, items[0], items[1:], named=named, tag=tag)


def _parse_lora(
    tag: str, kind: str, items: list[str], positional: list[str], named: dict[str, str]
) -> ExtraNetwork:
    if not positional:
        raise UserError(f"{tag} has no LoRA name.", field="prompt")
    name = positional[0]
    te = _number(tag, "te", positional[1]) if len(positional) > 1 else 1.0
    if "te" in named:
        te = _number(tag, "te", named["te"])
    unet = _number(tag, "unet", positional[2]) if len(positional) > 2 else te
    if "unet" in named:
        unet = _number(tag, "unet", named["unet"])
    dyn = _integer(tag, "dyn", positional[3]) if len(positional) > 3 else None
    if "dyn" in named:
        dyn = _integer(tag, "dyn", named["dyn"])
    args = list(items)
    args.remove(name)  # the first occurrence is the one used as the name
    return ExtraNetwork(kind, name, args, te, unet, dyn, named, tag)


def _number(tag: str, what: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise UserError(f"In {tag}, {what} must be a number, not '{text}'.", field="prompt")
    return value


def _integer(tag: str, what: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise UserError(f"In {tag}, {what} must be a whole number, not '{text}'.", field="prompt") from None
