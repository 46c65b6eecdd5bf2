"""Reading fields of objects that may be malformed: a missing part and a wrong-typed one read alike,
so the planner reports what it needs instead of raising on what it does not."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def as_mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a mapping, else an empty one."""
    return value if isinstance(value, Mapping) else {}


def field_at(obj: Any, *path: str) -> Any:
    """``obj[path[0]][path[1]]...``, or None where a part is missing or not a mapping."""
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj
