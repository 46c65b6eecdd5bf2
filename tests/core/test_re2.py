"""KMM kernel-mapping regexps: Go RE2 syntax compiled with RE2 itself (kmm_dtk.core.re2).

Every expectation in the "matches as Go would" tables was checked against Go's regexp.MatchString
(go1.26) when the tests were written.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from kmm_dtk.core.re2 import Re2Error, compile_re2

K96 = "5.14.0-570.27.1.el9_6.x86_64"
K94_RT = "5.14.0-427.68.1.el9_4.x86_64+rt"
K96_64K = "5.14.0-570.73.1.el9_6.aarch64+64k"
K84 = "4.18.0-305.49.1.el8_4.x86_64"
K84_RT = "4.18.0-305.49.1.rt7.121.el8_4.x86_64"
K10 = "6.12.0-211.4.el10nv.aarch64+64k"
K96_UPPER = "5.14.0-570.27.1.EL9_6.X86_64"
KERNELS = [K96, K94_RT, K96_64K, K84, K84_RT, K10, K96_UPPER]

ARABIC_INDIC = "\u0665.\u0661\u0664.\u0660"  # "5.14.0" in Arabic-Indic digits


def matching(pattern: str, texts=KERNELS) -> list[str]:
    regex = compile_re2(pattern)
    return [t for t in texts if regex.search(t) is not None]


@pytest.mark.parametrize(
    "pattern, expected",
    [
        # KMM documentation and examples.
        (r"^.+\.el9_\d+\.x86_64$", [K96]),
        (r"^.+$", KERNELS),
        (r".*", KERNELS),
        (r"^5\.14\.0-570\..*$", [K96, K96_64K, K96_UPPER]),
        (r"el9_[4-6]", [K96, K94_RT, K96_64K]),
        (r"x86_64|aarch64", [K96, K94_RT, K96_64K, K84, K84_RT, K10]),
        (r"^(?:el8|el9)", []),  # anchored: kernels start with a digit
        (r"el8", [K84, K84_RT]),  # unanchored, like Go's MatchString
        (r"\.rt\d+\.", [K84_RT]),
        (r"^\d{1,3}\.", KERNELS),
        (r"a{2,1000}", [K96_64K, K10]),
        (r"^[^]a]+$", [K96, K94_RT, K84, K84_RT, K96_UPPER]),
        (r"\b5\b", [K96, K94_RT, K96_64K, K96_UPPER]),
        # Flags at the start, and scoped flag groups anywhere.
        (r"(?i)^.+\.el9_\d+\.x86_64$", [K96, K96_UPPER]),
        (r"(?i:EL9)_6", [K96, K96_64K, K96_UPPER]),
        (r"(?i)AARCH64\+64K$", [K96_64K, K10]),
        # Named groups, both spellings.
        (r"^(?<major>\d+)\.(?P<minor>\d+)", KERNELS),
        # \z is RE2's end of text.
        (r"^.+\+rt\z", [K94_RT]),
        (r"\+64k\z", [K96_64K, K10]),
        # POSIX classes.
        (r"^[[:digit:]]+\.[[:digit:]]+", KERNELS),
        (r"[[:alpha:]]+_[[:digit:]]", []),
        (r"[[:upper:]]", [K96_UPPER]),
        (r"^[[:digit:].x_-]+$", []),
        (r"^[[:alnum:]._+-]+$", KERNELS),
    ],
)
def test_accepted_patterns_match_as_go_would(pattern, expected):
    assert matching(pattern) == expected


def test_named_groups_capture():
    m = compile_re2(r"^(?<major>\d+)\.(?P<minor>\d+)").search(K96)
    assert m.group("major") == "5"
    assert m.group("minor") == "14"


@pytest.mark.parametrize("pattern, arabic, ascii_text", [
    (r"^\d+$", "\u0665\u0667\u0660", "570"),
    (r"\d", ARABIC_INDIC, "5.14.0"),
    (r"^[[:digit:]]", ARABIC_INDIC, "5.14.0"),
    (r"^\w+\.\w+\.\w+$", ARABIC_INDIC, "5.14.0"),
])
def test_digit_and_word_classes_are_ascii_only(pattern, arabic, ascii_text):
    assert compile_re2(pattern).search(arabic) is None
    assert compile_re2(pattern).search(ascii_text) is not None


def test_word_class_is_ascii_only():
    assert compile_re2(r"^\w+$").search("\u00e9l9") is None  # 'é'
    assert compile_re2(r"^\w+$").search("el9_6") is not None


def test_dot_does_not_match_newline_unless_s():
    assert compile_re2(r"a.b").search("a\nb") is None
    assert compile_re2(r"(?s)a.b").search("a\nb") is not None


def test_leading_close_bracket_is_a_literal_in_a_class():
    assert compile_re2(r"^[]a]+$").search("]a]") is not None
    assert compile_re2(r"^[^]]+$").search("a]") is None


def test_compile_is_cached():
    assert compile_re2(r"^.+\.el9_\d+\.x86_64$") is compile_re2(r"^.+\.el9_\d+\.x86_64$")


@pytest.mark.parametrize(
    "pattern, reason",
    [  # every one of these is refused by Go's regexp.Compile too
        (r"^.+(?=\.x86_64)", "invalid perl operator: (?="),
        (r"^(?!.*\+rt).+$", "invalid perl operator: (?!"),
        (r"(?<=el)9", "invalid perl operator: (?<="),
        (r"(?<!rt\d)\.el9", "invalid perl operator: (?<!"),
        (r"(el9)_\1", "invalid escape sequence: \\1"),
        (r"(?P<n>el9)(?P=n)", "invalid perl operator: (?P"),
        (r"x86_64\Z", "invalid escape sequence: \\Z"),
        (r"a++", "bad repetition operator: ++"),
        (r"\d*+", "bad repetition operator: *+"),
        (r"el9?+", "bad repetition operator: ?+"),
        (r"(?x)^5 \.14", "invalid perl operator: (?x"),
        (r"a{1001}", "invalid repetition size: {1001}"),
        (r"\d{1,1001}", "invalid repetition size: {1,1001}"),
        (r"\d{1001,}", "invalid repetition size: {1001,}"),
        (r"[[:foo:]]", "invalid character class range: [:foo:]"),
        (r"\C", "invalid escape sequence: \\C"),
        (r"[a-z", "missing ]"),
        (r"el9\\" + "\\", "trailing \\"),
        (r"(?#comment)el9", "invalid perl operator: (?#"),
        (r"(?>el9)", "invalid perl operator: (?>"),
    ],
)
def test_rejected_patterns_give_a_reason(pattern, reason):
    with pytest.raises(Re2Error) as excinfo:
        compile_re2(pattern)
    assert reason in str(excinfo.value)


@pytest.mark.parametrize(
    "pattern, text, matches",
    [  # Go accepts all of these; Python's re would refuse or misread several
        (r"\p{Greek}", "\u03b1", True),
        (r"^\PL+$", "5.14", True),
        (r"^\Qx86_64+\E$", "x86_64+", True),
        (r"(?U)^a+", "aaa", True),
        (r"^5\.14(?i)\.EL9", "5.14.el9", True),
        (r"^\x{41}$", "A", True),
        (r"^[[:^digit:]]+$", "el", True),
        (r"(?i)(?s)^A.B$", "a\nb", True),
    ],
)
def test_go_syntax_python_lacks_is_accepted(pattern, text, matches):
    assert (compile_re2(pattern).search(text) is not None) is matches


@pytest.mark.parametrize("pattern", [r"(el9", r"el9)", r"*a", r"x{2}{3}", r"[z-a]"])
def test_python_compile_errors_become_re2_errors(pattern):
    with pytest.raises(Re2Error) as excinfo:
        compile_re2(pattern)
    assert str(excinfo.value)


def test_rejection_reason_names_the_construct():
    with pytest.raises(Re2Error, match=r"\(\?="):
        compile_re2(r"^5\.14(?=\.)")


def test_re2_error_is_a_value_error():
    assert issubclass(Re2Error, ValueError)


def test_repeat_count_1000_is_allowed():
    assert compile_re2(r"^a{1000}$").search("a" * 1000) is not None


# -- where Python's re would diverge from Go; RE2 does not ---------------------------------------

def test_huge_repeat_count_is_a_re2_error():
    # C++ RE2 would read it as literal text; Go refuses it, and so do we.
    with pytest.raises(Re2Error, match="invalid repetition size"):
        compile_re2("a{" + "9" * 5000 + "}")


def test_non_utf8_pattern_is_a_re2_error():
    with pytest.raises(Re2Error, match="UTF-8"):
        compile_re2("\ud800")


@pytest.mark.parametrize(
    "pattern, text, go_matches",
    [
        (r"^.+\.x86_64$", K96 + "\n", False),  # '$' is end of text without (?m)
        (r"^x{,3}$", "xx", False),  # 'x{,3}' is literal text in RE2
        (r"^x{,3}$", "x{,3}", True),
        (r"^\s$", "\v", False),  # RE2's \s is [\t\n\f\r ]
        (r"^.+\.x86_64\z", K96 + "\n", False),
        (r"(?m)^.+\.x86_64$", K96 + "\n", True),
    ],
)
def test_accepted_patterns_do_not_silently_change_meaning(pattern, text, go_matches):
    assert (compile_re2(pattern).search(text) is not None) is go_matches


def test_matching_is_linear_time_like_re2():
    # Exponential for a backtracking engine; the subprocess bounds the damage if that regresses.
    code = textwrap.dedent(f"""
        from kmm_dtk.core.re2 import compile_re2
        print(compile_re2(r"^(.|.)*X$").search({K96_64K!r} * 4) is None)
    """)
    try:
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("matching did not finish within 20 s")
    assert result.stdout.strip() == "True"
