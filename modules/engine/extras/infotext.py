"""The postprocessing infotext A1111 writes for Extras, and how it joins the source image's own parameters.

A1111 writes `Postprocess upscale by: 4, Postprocess upscaler: R-ESRGAN 4x+, GFPGAN visibility: 1` into a PNG
chunk named "extras" beside the source's untouched "parameters". The image saver writes one infotext only, so
the source's parameters are kept and the postprocessing pairs join their last line, where every A1111-style reader
(PNG Info, "send to txt2img", A1111 itself) still finds the prompt and settings, and now also what Extras did.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from typing import Any

from modules.engine.infotext import find_params, format_value, quote

# A1111's parser takes the last line as parameters only when it holds at least this many pairs.
_MIN_PARAMS = 3


def postprocess_text(info: Mapping[str, Any]) -> str:
    """`Key: value, ...` in the order the steps ran, valued and quoted as A1111 writes them."""
    parts = []
    for key, value in info.items():
        if value is None:
            continue
        text = format_value(value)
        parts.append(key if text == key else f"{key}: {quote(text)}")
    return ", ".join(parts)


def saved_text(source: str | None, postprocess: str) -> str:
    """The infotext to save: the source's parameters with the postprocessing pairs added, or those pairs alone."""
    source = (source or "").strip()
    if not source:
        return postprocess
    last = source.rsplit("\n", 1)[-1]
    if len(find_params(last)) >= _MIN_PARAMS:
        return f"{source}, {postprocess}"
    return f"{source}\n{postprocess}"


def to_html(text: str) -> str:
    """A1111's `plaintext_to_html`: lines escaped and joined with <br>, in one paragraph (the API's html_info)."""
    return "<p>" + "<br>\n".join(html.escape(line) for line in text.split("\n")) + "</p>"
