"""The one way a constructor of nerf_lab says that a parameter does not fit.

Each constraint on a parameter lives in the constructor that uses it, stated once as
`require(condition, parameter, value, expected)`. The error names the parameter and what it
accepts; the config layer (`instantiate_checked` in `nerf_lab.records.config`) turns the
parameter into the config key the user wrote (`NeRFField(depth=0)` built from `model.depth=0`
→ "model.depth=0 is not allowed: expected an integer >= 1 (layers in the trunk)").
"""

from __future__ import annotations

import math
from typing import Any


class ParameterError(ValueError):
    """`parameter` (a dotted path below the object that raised it) got `value`; `expected`
    says in words what it accepts."""

    def __init__(self, parameter: str, value: Any, expected: str) -> None:
        self.parameter, self.value, self.expected = parameter, value, expected
        super().__init__(f"{parameter}={value!r} is not allowed: expected {expected}")

    def within(self, name: str) -> ParameterError:
        """The same error as seen from the object that holds this one under `name`."""
        return ParameterError(f"{name}.{self.parameter}", self.value, self.expected)


def require(condition: bool, parameter: str, value: Any, expected: str) -> None:
    """Raise `ParameterError(parameter, value, expected)` unless `condition`."""
    if not condition:
        raise ParameterError(parameter, value, expected)


def is_int(value: Any) -> bool:
    """An int and not a bool (True is an int to Python, not a count to a user)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_box(value: Any) -> bool:
    """[[x, y, z]_min, [x, y, z]_max] of finite numbers with min < max on every axis."""
    return (
        isinstance(value, (list, tuple)) and len(value) == 2
        and all(isinstance(c, (list, tuple)) and len(c) == 3 and all(is_number(x) for x in c) for c in value)
        and all(lo < hi for lo, hi in zip(*value))
    )


BOX_EXPECTED = "[[x, y, z]_min, [x, y, z]_max] with min < max"
