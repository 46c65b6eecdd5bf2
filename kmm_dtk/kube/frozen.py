"""Read-only dicts and lists for cached objects.

Cached objects are shared by every reader thread; a reader that mutated one would corrupt the
cache for all. Freezing once at insert makes reads free (no copy per read). ``FrozenDict`` and
``FrozenList`` subclass ``dict`` and ``list`` (no extra per-object memory, ``isinstance`` and
``json.dumps`` keep working) and refuse every mutating method; ``thaw`` gives a private copy.
"""

from __future__ import annotations

from typing import Any, NoReturn


def _readonly(self: Any, *args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: cached objects are shared; thaw() a copy to modify")


class FrozenDict(dict[str, Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _readonly

    def __copy__(self) -> FrozenDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenDict:
        return self

    def __reduce__(self) -> tuple[type[dict[str, Any]], tuple[dict[str, Any]]]:  # pickle/copy as a plain dict
        return (dict, (dict(self),))


class FrozenList(list[Any]):
    __slots__ = ()
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _readonly
    __iadd__ = __imul__ = _readonly

    def __copy__(self) -> FrozenList:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> FrozenList:
        return self

    def __reduce__(self) -> tuple[type[list[Any]], tuple[list[Any]]]:
        return (list, (list(self),))


EMPTY = FrozenDict()


def freeze(value: Any) -> Any:
    """Deeply freeze JSON-shaped data (dicts, lists, scalars)."""
    if isinstance(value, dict):
        if type(value) is FrozenDict:
            return value
        return FrozenDict((k, freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        if type(value) is FrozenList:
            return value
        return FrozenList(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """A deep, plain, mutable copy."""
    if isinstance(value, dict):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value
