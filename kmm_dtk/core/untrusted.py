"""Bounded readers for JSON and YAML that nobody vouches for: cluster dumps, auth files, pull
Secrets, registry answers.

Python's own readers trust their input: deep nesting raises RecursionError, a 5,000-digit integer
raises ValueError from ``int``, a YAML alias to its own parent builds a cyclic list, and a few
hundred bytes of nested aliases ("billion laughs") expand to more nodes than any caller can walk.
Every reader here refuses such input up front with one ``UntrustedInputError`` (a ValueError)
whose message is one line naming the input and the problem.

Default bounds (``Limits()``), which each caller may replace:

- ``max_bytes`` 16 MiB per document or stream;
- ``max_depth`` 64 levels of nesting (for YAML, counted with aliases expanded);
- ``max_int_digits`` 100 digits per integer (JSON ``NaN``/``Infinity`` are refused too);
- ``max_alias_nodes`` 100,000 nodes added by expanding YAML aliases, per document (counted with
  memoisation, so the count is linear in the document; an alias inside its own anchor is refused);
- ``max_documents`` 10,000 YAML documents per stream.
"""

from __future__ import annotations

import itertools
import json
import operator
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.events import AliasEvent, Event, MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import Resolver

# libyaml's parser when present: events at C speed, composed and checked here in Python. Imported
# from yaml._yaml, where it is defined; yaml.cyaml only re-imports it, without exporting it.
try:
    from yaml._yaml import CParser as _CParser
    _HAVE_LIBYAML = True
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    _HAVE_LIBYAML = False

__all__ = ["Limits", "UntrustedInputError", "load_json", "load_yaml_all", "DEFAULT_LIMITS"]


@dataclass(frozen=True)
class Limits:
    """What a reader accepts; see the module docstring for the defaults and why they exist."""

    max_bytes: int = 16 << 20
    max_depth: int = 64
    max_int_digits: int = 100
    max_alias_nodes: int = 100_000
    max_documents: int = 10_000


DEFAULT_LIMITS = Limits()


class UntrustedInputError(ValueError):
    """Input refused; ``str()`` is ``"<what>: <problem>"`` on one line. ``syntax`` is True when the
    text is simply not JSON/YAML (as opposed to well-formed but over a bound), ``detail`` then holds
    the parser's own words."""

    def __init__(self, what: str, problem: str, *, syntax: bool = False, detail: str = "") -> None:
        self.what = what
        self.problem = " ".join(problem.split())  # one line, whatever a parser said
        self.syntax = syntax
        self.detail = " ".join(detail.split())
        super().__init__(f"{what}: {self.problem}")


class _Refused(Exception):
    """Raised deep inside a parse; turned into UntrustedInputError once ``what`` is known."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem


# -- common bounds ----------------------------------------------------------------------------------


def _check_size(data: str | bytes | bytearray, what: str, limits: Limits) -> None:
    size = len(data)
    if isinstance(data, str) and size * 4 > limits.max_bytes >= size:
        size = len(data.encode("utf-8", "surrogatepass"))  # exact only when it can matter
    if size > limits.max_bytes:
        raise UntrustedInputError(what, f"document larger than {limits.max_bytes} bytes")


def _too_many_digits(digits: int, limits: Limits) -> _Refused:
    return _Refused(f"integer of {digits} digits (at most {limits.max_int_digits})")


def _too_deep(limits: Limits) -> _Refused:
    return _Refused(f"nesting deeper than {limits.max_depth} levels")


# -- JSON -------------------------------------------------------------------------------------------

# Every byte but quotes and brackets, deleted by bytes.translate (C speed, no per-token Python).
_KEEP = b'"[]{}'
_DROP = bytes(b for b in range(256) if b not in _KEEP)
_TO_PARENS = bytes.maketrans(b"[]{}", b"()()")
# Strings left after removing empty ones: those holding brackets, or one left open at the end.
_STRING = re.compile(rb'"[^"]*(?:"|\Z)')
_RUN = re.compile(rb"\(+|\)+")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = "not valid Unicode text (a lone surrogate)"


def _json_depth(raw: bytes) -> int:
    """How deep the brackets of JSON text (UTF-8) nest, brackets inside strings aside: the highest
    point of the bracket sequence's running count, found mostly with C-speed bytes operations.

    Dropping a ")(" keeps that highest point (the position before the ")" is as high as both), so
    passes of that shrink the sequence; what is left is walked run by run.
    """
    skeleton = raw.replace(b"\\\\", b"").replace(b'\\"', b"")  # escapes pair up left to right
    skeleton = skeleton.translate(None, _DROP)
    # Dropping two adjacent quotes keeps every later quote's parity (open/close): "" can go.
    skeleton = skeleton.replace(b'""', b"")
    if b'"' in skeleton:
        skeleton = _STRING.sub(b"", skeleton)
    skeleton = skeleton.translate(_TO_PARENS)
    for _ in range(64):  # passes while most runs are short; a run walked costs more than a byte copied
        if skeleton.count(b")(") * 16 < len(skeleton):
            break
        skeleton = skeleton.replace(b")(", b"")
    lengths = list(map(len, _RUN.findall(skeleton)))  # runs of "(" and of ")" alternate
    closers = slice(0 if skeleton.startswith(b")") else 1, None, 2)
    lengths[closers] = map(operator.neg, lengths[closers])
    return max(itertools.accumulate(lengths, initial=0))


def _decode_json(data: str | bytes | bytearray, what: str) -> tuple[str, bytes]:
    """(text for json.loads, its UTF-8 for the pre-scan), as json.loads would decode bytes."""
    if isinstance(data, str):
        try:
            return data, data.encode("utf-8")
        except UnicodeEncodeError:
            raise UntrustedInputError(what, _LONE_SURROGATE, syntax=True, detail=_LONE_SURROGATE) from None
    raw = bytes(data)
    encoding = json.detect_encoding(raw)
    try:
        text = raw.decode(encoding)  # strict: json.loads would let lone surrogates through
    except UnicodeDecodeError as err:
        raise UntrustedInputError(what, f"not valid JSON: not {encoding} text", syntax=True,
                                  detail=f"not {encoding} text ({err.reason})") from None
    return text, raw if encoding == "utf-8" else text.encode("utf-8")


def _lone_surrogate(doc: Any) -> bool:
    """Whether a parsed document holds a string with a lone surrogate (json.loads turns ``\\ud800``
    into one; nothing can encode or print it later). Only walked when the text has such an escape."""
    stack = [doc]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def load_json(data: str | bytes | bytearray, *, what: str, limits: Limits = DEFAULT_LIMITS) -> Any:
    """``json.loads(data)`` within ``limits``; ``UntrustedInputError`` otherwise, naming ``what``."""
    _check_size(data, what, limits)
    text, raw = _decode_json(data, what)
    if _json_depth(raw) > limits.max_depth:
        raise UntrustedInputError(what, _too_deep(limits).problem)

    def parse_int(digits: str) -> int:
        count = len(digits) - digits.startswith("-")
        if count > limits.max_int_digits:
            raise _too_many_digits(count, limits)
        return int(digits)

    def parse_constant(name: str) -> Any:
        raise _Refused(f"{name} is not a JSON number")

    try:
        doc = json.loads(text, parse_int=parse_int, parse_constant=parse_constant)
    except _Refused as err:
        raise UntrustedInputError(what, err.problem) from None
    except json.JSONDecodeError as err:
        detail = f"{err.msg} at line {err.lineno} column {err.colno}"
        raise UntrustedInputError(what, f"not valid JSON: {detail}", syntax=True, detail=detail) from None
    except RecursionError:  # not expected after the pre-scan; never let it out
        raise UntrustedInputError(what, _too_deep(limits).problem) from None
    if _SURROGATE_ESCAPE.search(raw) and _lone_surrogate(doc):
        raise UntrustedInputError(what, _LONE_SURROGATE)
    return doc


# -- YAML -------------------------------------------------------------------------------------------

_INT_TAG = "tag:yaml.org,2002:int"
_NOT_DIGITS = re.compile(r"^[-+]?(?:0[xXoObB])?|[_:]")  # sign, base prefix, separators (YAML 1.1)


class _BoundedComposer(Composer):
    """PyYAML's composer with a depth bound while composing (its recursion is the danger) and a
    check of each document's node graph before anything is constructed from it."""

    limits: Limits = DEFAULT_LIMITS

    if TYPE_CHECKING:  # supplied by the parser mixed in next to this class (CParser or Parser)
        def check_event(self, *choices: type[Event]) -> bool: ...

    def _start_bounds(self, limits: Limits) -> None:
        Composer.__init__(self)
        self.limits = limits
        self._depth = 0
        self._composed = 0
        self._documents = 0

    def compose_document(self) -> Node | None:
        self._documents += 1
        if self._documents > self.limits.max_documents:
            raise _Refused(f"more than {self.limits.max_documents} YAML documents")
        self._composed = 0
        node = super().compose_document()
        if node is not None:  # always a node in practice; the stubs allow None
            _check_graph(node, self._composed, self.limits)
        return node

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        if self.check_event(AliasEvent):
            return super().compose_node(parent, index)
        self._composed += 1
        if not self.check_event(SequenceStartEvent, MappingStartEvent):
            return super().compose_node(parent, index)  # a scalar: no recursion
        if self._depth >= self.limits.max_depth:
            raise _too_deep(self.limits)
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _check_graph(root: Node, composed: int, limits: Limits) -> None:
    """Depth, integer length and alias expansion of one composed document, iteratively.

    Aliases make the node graph a DAG (or, for an alias inside its own anchor, a cycle): sizes and
    heights are memoised per node, so this is linear in the nodes composed, however far they expand.
    """
    ceiling = composed + limits.max_alias_nodes  # expanded nodes allowed in the whole document
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    visiting: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            height[key] = 1 + max((height[id(c)] for c in children), default=0)
            visiting.discard(key)
            if height[key] > limits.max_depth:
                raise _too_deep(limits)
            if size[key] > ceiling:
                raise _Refused(f"YAML aliases expand to more than {limits.max_alias_nodes} nodes")
            continue
        if key in size:
            continue
        if key in visiting:
            raise _Refused("recursive YAML alias (an alias inside its own anchor)")
        if isinstance(node, ScalarNode):
            if node.tag == _INT_TAG:
                digits = len(_NOT_DIGITS.sub("", node.value.strip()))
                if digits > limits.max_int_digits:
                    raise _too_many_digits(digits, limits)
            size[key], height[key] = 1, 0  # depth counts collections, as JSON's brackets do
            continue
        visiting.add(key)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in visiting:
                raise _Refused("recursive YAML alias (an alias inside its own anchor)")
            if id(child) not in size:
                stack.append((child, False))


def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


if _HAVE_LIBYAML:
    class _Loader(_BoundedComposer, _CParser, SafeConstructor, Resolver):
        """libyaml's events, the bounded composer (first in the MRO, so CParser's own composer is
        never used), PyYAML's safe constructor."""

        def __init__(self, stream: bytes, limits: Limits) -> None:
            _CParser.__init__(self, stream)
            self._start_bounds(limits)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)
else:  # pragma: no cover
    from yaml.parser import Parser
    from yaml.reader import Reader
    from yaml.scanner import Scanner

    class _Loader(Reader, Scanner, Parser, _BoundedComposer, SafeConstructor, Resolver):  # type: ignore[no-redef]
        def __init__(self, stream: bytes, limits: Limits) -> None:
            Reader.__init__(self, stream)
            Scanner.__init__(self)
            Parser.__init__(self)
            self._start_bounds(limits)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)


def _yaml_problem(err: yaml.YAMLError) -> tuple[str, str]:
    """(problem, detail) in the words the CLI has always printed: where, then what."""
    mark = getattr(err, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    lines = str(err).splitlines()
    detail = getattr(err, "problem", None) or (lines[0] if lines else type(err).__name__)
    return f"invalid YAML{where}: {detail}", detail


# PyYAML's constructors raise built-in errors on explicitly tagged junk (``!!bool x`` is a KeyError,
# ``!!timestamp 2024-13-01`` a ValueError, ``!!timestamp x`` an AttributeError).
_CONSTRUCTOR_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError)


def load_yaml_all(data: str | bytes | bytearray, *, what: str, limits: Limits = DEFAULT_LIMITS) -> list[Any]:
    """Every document of a YAML stream (``yaml.safe_load_all``) within ``limits``; empty documents are
    None. ``UntrustedInputError`` otherwise, naming ``what``: nothing is returned from a stream with a
    refused document anywhere in it."""
    _check_size(data, what, limits)
    if isinstance(data, str):
        try:
            stream = data.encode("utf-8")
        except UnicodeEncodeError:
            raise UntrustedInputError(what, f"invalid YAML: {_LONE_SURROGATE}", syntax=True,
                                      detail=_LONE_SURROGATE) from None
    else:
        stream = bytes(data)
    loader = _Loader(stream, limits)
    documents: list[Any] = []
    try:
        while loader.check_node():  # what check_data() asks, without its untyped stub
            documents.append(loader.get_data())
    except _Refused as err:
        raise UntrustedInputError(what, err.problem) from None
    except yaml.YAMLError as err:
        problem, detail = _yaml_problem(err)
        if "maximum nesting depth" in detail:  # libyaml's own bound (1000 levels), met scanning ahead
            raise UntrustedInputError(what, _too_deep(limits).problem) from None
        raise UntrustedInputError(what, problem, syntax=True, detail=detail) from None
    except _CONSTRUCTOR_ERRORS as err:
        detail = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UntrustedInputError(what, f"invalid YAML: a value cannot be read as its type ({detail})",
                                  syntax=True, detail=detail) from None
    except RecursionError:  # not expected with the bounds above; never let it out
        raise UntrustedInputError(what, _too_deep(limits).problem) from None
    finally:
        loader.dispose()
    return documents
