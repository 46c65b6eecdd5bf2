"""The bounded readers (kmm_dtk.core.untrusted): each hostile shape is refused with one line naming the
input and the problem, nothing else ever escapes them (property tests over arbitrary and adversarial
input), and well-formed input within the bounds reads exactly as json.loads / yaml.safe_load_all read it."""

from __future__ import annotations

import json

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kmm_dtk.core.untrusted import DEFAULT_LIMITS, Limits, UntrustedInputError, load_json, load_yaml_all

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
WHAT = "input.yaml"


def refused(load, data, *fragments: str, limits: Limits = DEFAULT_LIMITS) -> UntrustedInputError:
    with pytest.raises(UntrustedInputError) as caught:
        load(data, what=WHAT, limits=limits)
    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert message.startswith(f"{WHAT}: ") and "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return caught.value


def billion_laughs(levels: int = 9, fanout: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * fanout) + "]"]
    for n in range(1, levels + 1):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * fanout) + "]")
    return "\n".join(lines) + "\n"


# -- the hostile cases, one by one ------------------------------------------------------------------

@pytest.mark.parametrize("data, fragment", [
    ("[" * 65 + "]" * 65, "nesting deeper than 64 levels"),
    ("[" * 1_000_000, "nesting deeper than 64 levels"),  # unclosed: json's C scanner would recurse
    ('{"a": ' * 200_000 + "1" + "}" * 200_000, "nesting deeper than 64 levels"),
    ("1" * 5000, "integer of 5000 digits (at most 100)"),
    ('{"n": -' + "9" * 101 + "}", "integer of 101 digits (at most 100)"),
    ("[NaN]", "NaN is not a JSON number"),
    ('{"a": Infinity}', "Infinity is not a JSON number"),
    ("[-Infinity]", "-Infinity is not a JSON number"),
    ('"\\ud800"', "lone surrogate"),
    ('["\\udc00\\ud800"]', "lone surrogate"),
    ("{not json", "not valid JSON: Expecting property name"),
    (b"\xff\xfe\xfd", "not valid JSON"),
    (b'"\xed\xa0\x80"', "not valid JSON"),  # a surrogate encoded in UTF-8
])
def test_hostile_json_is_refused_in_one_line(data, fragment):
    refused(load_json, data, fragment)


def test_json_size_bound_counts_bytes():
    refused(load_json, '"' + "x" * 100 + '"', "document larger than 64 bytes", limits=Limits(max_bytes=64))
    refused(load_json, '"' + "é" * 40 + '"', "document larger than 64 bytes", limits=Limits(max_bytes=64))
    assert load_json('"' + "x" * 62 + '"', what=WHAT, limits=Limits(max_bytes=64)) == "x" * 62


def test_json_at_the_bounds_is_read():
    assert load_json("[" * 64 + "]" * 64, what=WHAT) == json.loads("[" * 64 + "]" * 64)
    assert load_json("9" * 100, what=WHAT) == int("9" * 100)
    # Brackets and escaped quotes inside strings are text, not nesting.
    text = json.dumps({"a": "[" * 500 + '\\"' + "{" * 500, "b": ['"]]]]', "\\"]})
    assert load_json(text, what=WHAT) == json.loads(text)
    assert load_json('"\\ud83d\\ude00"', what=WHAT) == "\U0001F600"  # a surrogate pair is one character


@pytest.mark.parametrize("data, fragment", [
    ("a: &a [*a]\n", "recursive YAML alias"),
    ("a: &a {b: *a}\n", "recursive YAML alias"),
    ("a: &a [[[1, *a]]]\n", "recursive YAML alias"),
    (billion_laughs(), "YAML aliases expand to more than 100000 nodes"),
    (billion_laughs(levels=30, fanout=2), "YAML aliases expand to more than 100000 nodes"),
    ("[" * 65 + "]" * 65, "nesting deeper than 64 levels"),
    ("[" * 100_000, "nesting deeper than 64 levels"),
    ("".join(" " * i + "- \n" for i in range(70)), "nesting deeper than 64 levels"),
    ("a: &a " + "[" * 40 + "1" + "]" * 40 + "\nb: " + "[" * 40 + "*a" + "]" * 40 + "\n", "nesting deeper than 64"),
    ("n: " + "1" * 5000 + "\n", "integer of 5000 digits (at most 100)"),
    ("n: !!int " + "7" * 101 + "\n", "integer of 101 digits"),
    ("n: 0b" + "1" * 4000 + "\n", "integer of 4000 digits"),
    ("---\n" * (DEFAULT_LIMITS.max_documents + 1), "more than 10000 YAML documents"),
    ("a: !!bool maybe\n", "invalid YAML"),
    ("a: !!timestamp 2024-13-01\n", "invalid YAML"),
    ("? [1]\n: x\n", "found unhashable key"),
    ("a: !!python/object/apply:os.system [id]\n", "could not determine a constructor"),
    ("a: [1, 2\n", "invalid YAML at line 2, column 1"),
    ("a: \x00\n", "invalid YAML"),
    ('a: "\\ud800"\n', "invalid YAML"),
    ("\ud800", "lone surrogate"),
])
def test_hostile_yaml_is_refused_in_one_line(data, fragment):
    refused(load_yaml_all, data, fragment)


def test_yaml_within_the_bounds_reads_as_safe_load_all():
    text = ("base: &base {selector: {role: worker}}\nm1: {<<: *base, name: a}\nm2: [*base, *base]\n"
            "---\n---\ndata: {1: x, true: y, null: z, 2024-01-01: d}\nn: " + "9" * 100 + "\n")
    assert load_yaml_all(text, what=WHAT) == list(yaml.safe_load_all(text))
    assert load_yaml_all("[" * 64 + "]" * 64, what=WHAT) == [yaml.safe_load("[" * 64 + "]" * 64)]
    few = billion_laughs(levels=4, fanout=9)  # 9**5 nodes: within 100,000
    assert load_yaml_all(few, what=WHAT) == [yaml.safe_load(few)]
    assert load_yaml_all("", what=WHAT) == []


def test_yaml_bounds_can_be_raised_by_the_caller():
    limits = Limits(max_alias_nodes=10**9, max_depth=200)
    assert load_yaml_all(billion_laughs(levels=5, fanout=9), what=WHAT, limits=limits)
    assert load_yaml_all("[" * 150 + "]" * 150, what=WHAT, limits=limits)
    refused(load_yaml_all, billion_laughs(levels=3), "more than 10 nodes", limits=Limits(max_alias_nodes=10))


# -- properties ---------------------------------------------------------------------------------------

@SETTINGS
@given(st.one_of(st.text(), st.binary(), st.text(alphabet='[]{}",:0123456789-.eEtrufalsnNIiy \\u\n', max_size=200)))
def test_load_json_raises_only_its_own_error(data):
    try:
        doc = load_json(data, what=WHAT)
    except UntrustedInputError as err:
        assert str(err).startswith(f"{WHAT}: ") and "\n" not in str(err)
        return
    assert doc == json.loads(data)


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.text(),
              st.floats(allow_nan=False, allow_infinity=False)),
    lambda children: st.one_of(st.lists(children, max_size=5),
                               st.dictionaries(st.text(max_size=8), children, max_size=5)),
    max_leaves=40,
)


@SETTINGS
@given(json_values, st.booleans(), st.sampled_from([None, 2]))
def test_json_within_the_bounds_round_trips(value, ascii_only, indent):
    text = json.dumps(value, ensure_ascii=ascii_only, indent=indent)
    assert load_json(text, what=WHAT) == json.loads(text)
    assert load_json(text.encode(), what=WHAT) == json.loads(text)


def nested(depth: int, kinds: list[bool]) -> object:
    value: object = 1
    for level in range(depth):
        value = {"k[": value, "s": "]}"} if kinds[level % len(kinds)] else ["[", value]
    return value


@SETTINGS
@given(st.integers(0, 130), st.lists(st.booleans(), min_size=1, max_size=8))
def test_json_and_yaml_nesting_is_refused_exactly_past_the_bound(depth, kinds):
    value = nested(depth, kinds)
    for load, text in ((load_json, json.dumps(value)), (load_yaml_all, yaml.safe_dump(value, default_flow_style=True)),
                       (load_yaml_all, yaml.safe_dump(value))):
        if depth > DEFAULT_LIMITS.max_depth:
            refused(load, text, "nesting deeper than 64 levels")
        else:
            loaded = load(text, what=WHAT)
            assert (loaded if load is load_json else loaded[0]) == value


@SETTINGS
@given(st.integers(1, 400), st.booleans())
def test_integer_length_is_refused_exactly_past_the_bound(digits, negative):
    text = ("-" if negative else "") + "1" * digits
    for load in (load_json, load_yaml_all):
        if digits > DEFAULT_LIMITS.max_int_digits:
            refused(load, text, f"integer of {digits} digits")
        else:
            assert load(text, what=WHAT) in (int(text), [int(text)])


@SETTINGS
@given(st.lists(st.integers(1, 12), min_size=1, max_size=12))
def test_alias_expansion_is_counted_not_performed(fanouts):
    """Layered anchors, each layer repeating the previous one ``fanout`` times: refused exactly when the
    nodes the aliases add exceed the bound, and never expanded to find out."""
    lines = ["l0: &l0 leaf"]
    expanded, composed = 1, 1
    for n, fanout in enumerate(fanouts, start=1):
        lines.append(f"l{n}: &l{n} [" + ", ".join([f"*l{n - 1}"] * fanout) + "]")
        expanded, composed = 1 + fanout * expanded, composed + 1
    text = "\n".join(lines) + "\n"
    # The document: a mapping, its keys, and each layer as written (aliases expand in place).
    total = 1 + len(lines) + sum(1 + f * size for f, size in zip(fanouts, _sizes(fanouts), strict=True)) + 1
    written = 1 + len(lines) + 1 + len(fanouts)
    if total - written > DEFAULT_LIMITS.max_alias_nodes:
        refused(load_yaml_all, text, "YAML aliases expand to more than")
    else:
        assert load_yaml_all(text, what=WHAT) == list(yaml.safe_load_all(text))


def _sizes(fanouts: list[int]) -> list[int]:
    """Expanded size of each layer's child (the layer below it)."""
    sizes, size = [], 1
    for fanout in fanouts:
        sizes.append(size)
        size = 1 + fanout * size
    return sizes


@SETTINGS
@given(st.one_of(st.text(), st.binary(),
                 st.text(alphabet="&*ab:[]{}-?!, \n\"'#|>%@`0123456789.e<", max_size=200)))
def test_load_yaml_all_raises_only_its_own_error(data):
    try:
        docs = load_yaml_all(data, what=WHAT)
    except UntrustedInputError as err:
        assert str(err).startswith(f"{WHAT}: ") and "\n" not in str(err)
        return
    assert isinstance(docs, list)


yaml_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.text(),
              st.floats(allow_nan=False), st.dates()),
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-9, 9), st.booleans()), children, max_size=5)),
    max_leaves=40,
)


@SETTINGS
@given(st.lists(yaml_values, min_size=1, max_size=3), st.booleans())
def test_yaml_within_the_bounds_round_trips(documents, flow):
    text = yaml.safe_dump_all(documents, default_flow_style=flow, allow_unicode=True)
    loaded = load_yaml_all(text, what=WHAT)
    assert loaded == list(yaml.safe_load_all(text))
    assert len(loaded) == len(documents)  # (not == documents: PyYAML reads a written "\x85" as a line break)
