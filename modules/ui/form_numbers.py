"""Numbers from form components as request fields.

Sliders hand over floats, so whole-number fields are rounded here. A browser never sends NaN or infinity, but a
crafted call of the same event can, and `int(round(nan))` raised a ValueError that reached the page as a bare
traceback; such a value is refused by name instead, like every other mistake in the form.
"""

from __future__ import annotations

import math
from typing import Any

from modules.errors import UserError


def whole_number(value: Any, field: str) -> Any:
    """`value` rounded to an int when it is a float; anything else is returned for the request model to check.

    Raises:
        UserError: `value` is NaN or infinite.
    """
    if not isinstance(value, float):
        return value
    if not math.isfinite(value):
        raise UserError(f"{field} must be a finite number, not {value}", field=field)
    return int(round(value))
