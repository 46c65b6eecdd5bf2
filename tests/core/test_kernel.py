"""The Kernel value type: each field on real RHEL 8, 9 and 10 kernels, round trips, and strings that
are not kernels (nodes report whatever they like: reading one never fails)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kmm_dtk.core.kernel import DEFAULT_PLATFORM, PLATFORMS, Kernel, platform_of_arch

AMD64, ARM64 = ("linux", "amd64"), ("linux", "arm64")
PPC64LE, S390X = ("linux", "ppc64le"), ("linux", "s390x")


@pytest.mark.parametrize("text, version_release, arch, variant, realtime, base, platform", [
    # RHEL 8 (OCP 4.6 - 4.12): real-time kernels say "rt" in the release
    ("4.18.0-305.49.1.el8_4.x86_64", "4.18.0-305.49.1.el8_4", "x86_64", "", False,
     "4.18.0-305.49.1.el8_4.x86_64", AMD64),
    ("4.18.0-305.49.1.rt7.121.el8_4.x86_64", "4.18.0-305.49.1.rt7.121.el8_4", "x86_64", "rt", True,
     "4.18.0-305.49.1.rt7.121.el8_4.x86_64", AMD64),
    ("4.18.0-372.16.1.el8_6.aarch64", "4.18.0-372.16.1.el8_6", "aarch64", "", False,
     "4.18.0-372.16.1.el8_6.aarch64", ARM64),
    ("4.18.0-372.16.1.el8_6.aarch64+64k", "4.18.0-372.16.1.el8_6", "aarch64", "64k", False,
     "4.18.0-372.16.1.el8_6.aarch64", ARM64),
    ("4.18.0-372.73.1.el8_6.s390x", "4.18.0-372.73.1.el8_6", "s390x", "", False,
     "4.18.0-372.73.1.el8_6.s390x", S390X),
    ("4.18.0-372.73.1.el8_6.ppc64le", "4.18.0-372.73.1.el8_6", "ppc64le", "", False,
     "4.18.0-372.73.1.el8_6.ppc64le", PPC64LE),
    # RHEL 9 (OCP 4.13 and later): "+rt" and "+64k" suffixes; early 9.2 RT builds had both spellings
    ("5.14.0-570.12.1.el9_6.x86_64", "5.14.0-570.12.1.el9_6", "x86_64", "", False,
     "5.14.0-570.12.1.el9_6.x86_64", AMD64),
    ("5.14.0-284.30.1.el9_2.x86_64+rt", "5.14.0-284.30.1.el9_2", "x86_64", "rt", True,
     "5.14.0-284.30.1.el9_2.x86_64+rt", AMD64),
    ("5.14.0-284.25.1.rt14.310.el9_2.x86_64", "5.14.0-284.25.1.rt14.310.el9_2", "x86_64", "rt", True,
     "5.14.0-284.25.1.rt14.310.el9_2.x86_64", AMD64),
    ("5.14.0-427.40.1.el9_4.aarch64+64k", "5.14.0-427.40.1.el9_4", "aarch64", "64k", False,
     "5.14.0-427.40.1.el9_4.aarch64", ARM64),
    ("5.14.0-427.40.1.el9_4.aarch64+rt", "5.14.0-427.40.1.el9_4", "aarch64", "rt", True,
     "5.14.0-427.40.1.el9_4.aarch64+rt", ARM64),
    ("5.14.0-570.27.1.el9_6.s390x", "5.14.0-570.27.1.el9_6", "s390x", "", False,
     "5.14.0-570.27.1.el9_6.s390x", S390X),
    ("5.14.0-570.27.1.el9_6.ppc64le", "5.14.0-570.27.1.el9_6", "ppc64le", "", False,
     "5.14.0-570.27.1.el9_6.ppc64le", PPC64LE),
    # RHEL 10
    ("6.12.0-55.9.1.el10_0.x86_64+rt", "6.12.0-55.9.1.el10_0", "x86_64", "rt", True,
     "6.12.0-55.9.1.el10_0.x86_64+rt", AMD64),
    ("6.12.0-211.4.el10nv.aarch64+64k", "6.12.0-211.4.el10nv", "aarch64", "64k", False,
     "6.12.0-211.4.el10nv.aarch64", ARM64),
])
def test_fields_of_real_kernels(text, version_release, arch, variant, realtime, base, platform):
    kernel = Kernel.parse(text)
    assert str(kernel) == kernel.text == text
    assert kernel.version_release == version_release
    assert kernel.arch == arch
    assert kernel.variant == variant
    assert kernel.realtime is realtime
    assert kernel.flavour == (arch, variant)
    assert kernel.base == base
    assert kernel.platform == platform


@pytest.mark.parametrize("kernel,flavour", [
    ("5.14.0-427.40.1.el9_4.x86_64", ("x86_64", "")),
    ("5.14.0-427.40.1.el9_4.aarch64+64k", ("aarch64", "64k")),
    ("5.14.0-427.40.1.el9_4.x86_64+rt", ("x86_64", "rt")),
    ("4.18.0-372.16.1.rt7.173.el8_6.x86_64", ("x86_64", "rt")),
])
def test_kernel_flavour(kernel, flavour):
    assert Kernel.parse(kernel).flavour == flavour


@pytest.mark.parametrize("kernel,expected", [
    ("4.18.0-372.16.1.rt7.173.el8_6.x86_64", True),
    ("5.14.0-284.25.1.rt14.310.el9_2.x86_64", True),
    ("6.12.0-55.9.1.el10_0.x86_64+rt", True),
    ("5.14.0-427.40.1.el9_4.x86_64", False),
    ("5.14.0-427.40.1.el9_4.x86_64+64k", False),
    ("4.18.0-305.49.1.el8_4.x86_64", False),
])
def test_is_realtime(kernel, expected):
    assert Kernel.parse(kernel).realtime is expected


def test_a_value_equal_by_its_text():
    a, b = Kernel.parse("5.14.0-570.12.1.el9_6.x86_64"), Kernel("5.14.0-570.12.1.el9_6.x86_64")
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Kernel.parse("5.14.0-570.12.1.el9_6.x86_64+rt")
    with pytest.raises(AttributeError):
        a.arch = "aarch64"  # type: ignore[misc]


def test_architecture_table():
    assert platform_of_arch("x86_64") == AMD64 == DEFAULT_PLATFORM
    assert platform_of_arch("aarch64") == ARM64
    assert platform_of_arch("ppc64le") == PPC64LE
    assert platform_of_arch("s390x") == S390X
    assert platform_of_arch("riscv64") == DEFAULT_PLATFORM


# -- strings that are not kernels ----------------------------------------------------------------


@pytest.mark.parametrize("text, version_release, arch, variant, base", [
    ("", "", "", "", ""),
    ("weird", "", "weird", "", "weird"),
    ("5.14.0", "5.14", "0", "", "5.14.0"),
    ("x86_64", "", "x86_64", "", "x86_64"),
    ("+64k", "", "", "64k", ""),
    ("5.14.0-1.el9.x86_64+", "5.14.0-1.el9", "x86_64", "", "5.14.0-1.el9.x86_64"),  # a bare "+"
    ("5.14.0-1.el9.x86_64+debug", "5.14.0-1.el9", "x86_64", "debug", "5.14.0-1.el9.x86_64"),
    ("a.b.c+x+y", "a.b", "c", "x+y", "a.b.c"),
])
def test_strings_that_are_not_kernels_are_read_without_failing(text, version_release, arch, variant, base):
    kernel = Kernel.parse(text)
    assert str(kernel) == text
    assert (kernel.version_release, kernel.arch, kernel.variant, kernel.base) == (version_release, arch, variant, base)
    assert not kernel.realtime


@pytest.mark.parametrize("text", ["", "weird", "5.14.0-1.el9.riscv64", "5.14.0-1.el9.amd64"])
def test_an_unknown_architecture_pulls_amd64(text):
    assert Kernel.parse(text).platform == DEFAULT_PLATFORM


@pytest.mark.parametrize("value", [None, 5, b"5.14.0-1.el9.x86_64"])
def test_only_strings_are_kernels(value):
    with pytest.raises(TypeError, match="a kernel is a string"):
        Kernel.parse(value)


# -- properties ------------------------------------------------------------------------------------

numbers = st.integers(min_value=0, max_value=999).map(str)
versions = st.tuples(numbers, numbers, numbers).map(".".join)
dists = st.sampled_from(["el8_4", "el8_6", "el9_2", "el9_4", "el9_6", "el10_0", "el10nv"])
releases = st.tuples(st.lists(numbers, min_size=1, max_size=3).map(".".join), dists).map(".".join)


@st.composite
def real_kernels(draw: st.DrawFn) -> tuple[str, str, str, str, bool]:
    """(text, version-release, arch, suffix, realtime) of a kernel built from its parts."""
    version, release, arch = draw(versions), draw(releases), draw(st.sampled_from(sorted(PLATFORMS)))
    rt_in_release = draw(st.booleans())
    if rt_in_release:  # RHEL 8 spelling: 4.18.0-305.49.1.rt7.121.el8_4
        head, _, dist = release.rpartition(".")
        release = f"{head}.rt{draw(numbers)}.{draw(numbers)}.{dist}"
    suffix = draw(st.sampled_from(["", "64k"] if rt_in_release else ["", "rt", "64k"]))
    version_release = f"{version}-{release}"
    text = f"{version_release}.{arch}" + (f"+{suffix}" if suffix else "")
    return text, version_release, arch, suffix, rt_in_release or suffix == "rt"


@given(real_kernels())
def test_a_kernel_built_from_its_parts_reads_back_as_those_parts(parts):
    text, version_release, arch, suffix, realtime = parts
    kernel = Kernel.parse(text)
    assert str(kernel) == text and Kernel.parse(str(kernel)) == kernel
    assert (kernel.version_release, kernel.arch, kernel.suffix) == (version_release, arch, suffix)
    assert kernel.realtime is realtime
    assert kernel.variant == ("rt" if realtime else suffix)
    assert kernel.platform == PLATFORMS[arch]
    assert kernel.base == (f"{version_release}.{arch}" if suffix == "64k" else text)
    assert Kernel.parse(kernel.base).flavour == (arch, "rt" if realtime else "")


@given(st.text())
def test_any_string_reads_and_round_trips(text):
    kernel = Kernel.parse(text)
    assert str(kernel) == text and Kernel.parse(str(kernel)) == kernel and hash(kernel) == hash(Kernel(text))
    head, plus, suffix = text.partition("+")
    assert head == (f"{kernel.version_release}.{kernel.arch}" if "." in head else kernel.arch)
    assert kernel.suffix == suffix and text == head + plus + kernel.suffix
    assert "." not in kernel.arch and "+" not in kernel.arch
    assert kernel.variant in ("rt", kernel.suffix)
    assert text.startswith(kernel.base)
    assert kernel.platform in PLATFORMS.values()
