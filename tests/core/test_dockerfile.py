"""The DTK placeholder in driver Dockerfiles (kmm_dtk.core.dockerfile)."""

from __future__ import annotations

import re

import pytest

from kmm_dtk.core.dockerfile import DTK_BUILD_ARG, DockerfileError, render, uses_placeholder

DTK = ("quay.io/openshift-release-dev/ocp-v4.0-art-dev@"
       "sha256:84edddb4322cfe50d8545c41014a8f5595a4260a20d9a269e144909c5949582b")
DASHED = re.compile(r"\$\{?DTK-AUTO")

# The design document's example, completed the way KMM's own examples are.
DESIGN = """\
ARG DTK-AUTO
FROM ${DTK-AUTO}
RUN gcc --version
"""

KMM_STYLE = """\
ARG DTK_AUTO
FROM ${DTK_AUTO} as builder
ARG KERNEL_FULL_VERSION
WORKDIR /usr/src
RUN git clone https://github.com/rh-ecosystem-edge/kernel-module-management.git
WORKDIR /usr/src/kernel-module-management/ci/kmm-kmod
RUN KERNEL_SRC_DIR=/lib/modules/${KERNEL_FULL_VERSION}/build make all

FROM registry.redhat.io/ubi9/ubi-minimal
ARG KERNEL_FULL_VERSION
RUN microdnf install -y kmod
COPY --from=builder /usr/src/kernel-module-management/ci/kmm-kmod/kmm_ci_a.ko /opt/lib/modules/${KERNEL_FULL_VERSION}/
RUN depmod -b /opt ${KERNEL_FULL_VERSION}
"""

NO_PLACEHOLDER = """\
FROM user.registry.com/org/user-base-image:tag
ARG KERNEL_FULL_VERSION
RUN gcc -o /opt/simple-kmod.ko simple-kmod.c
"""


def from_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.lstrip().upper().startswith("FROM")]


def assert_no_unresolved_dashed(text: str) -> None:
    for line in text.splitlines():
        if not line.lstrip().startswith("#"):
            assert not DASHED.search(line), line


def test_design_document_spelling():
    out = render(DESIGN, DTK)
    assert out.uses_dtk
    assert out.rewritten_from_lines == 1
    assert out.text == f"ARG {DTK_BUILD_ARG}\nFROM {DTK}\nRUN gcc --version\n"
    assert "DTK-AUTO" not in out.text


def test_kmm_spelling_multi_stage():
    out = render(KMM_STYLE, DTK)
    assert out.rewritten_from_lines == 1
    assert from_lines(out.text) == [f"FROM {DTK} as builder", "FROM registry.redhat.io/ubi9/ubi-minimal"]
    # Everything but the FROM line is untouched.
    assert out.text.replace(f"FROM {DTK} as builder", "FROM ${DTK_AUTO} as builder") == KMM_STYLE


@pytest.mark.parametrize(
    "line, expected",
    [
        ("FROM ${DTK_AUTO}", f"FROM {DTK}"),
        ("FROM ${DTK-AUTO}", f"FROM {DTK}"),
        ("FROM $DTK_AUTO", f"FROM {DTK}"),
        ("FROM $DTK-AUTO", f"FROM {DTK}"),
        ("FROM ${DTK_AUTO} AS builder", f"FROM {DTK} AS builder"),
        ("FROM $DTK-AUTO AS builder", f"FROM {DTK} AS builder"),
        ("FROM --platform=$BUILDPLATFORM ${DTK_AUTO} AS builder", f"FROM --platform=$BUILDPLATFORM {DTK} AS builder"),
        ("FROM --platform=linux/arm64 ${DTK-AUTO} AS builder", f"FROM --platform=linux/arm64 {DTK} AS builder"),
        ("from ${DTK_AUTO} as builder", f"from {DTK} as builder"),
        ("From $DTK-AUTO", f"From {DTK}"),
        ("  FROM ${DTK_AUTO}", f"  FROM {DTK}"),
        ("FROM\t${DTK_AUTO}\tAS\tbuilder", f"FROM {DTK} AS builder"),
    ],
)
def test_from_line_spellings(line, expected):
    out = render(f"ARG DTK_AUTO\n{line}\nRUN make\n", DTK)
    assert out.text.splitlines()[1] == expected
    assert out.rewritten_from_lines == 1
    assert_no_unresolved_dashed(out.text)


def test_every_stage_on_the_placeholder_is_rewritten_and_user_stage_kept():
    text = """\
ARG DTK-AUTO
FROM ${DTK-AUTO} AS headers
RUN ls /usr/src/kernels
FROM $DTK_AUTO AS builder
COPY --from=headers /usr/src/kernels /usr/src/kernels
RUN make
FROM quay.io/acme/runtime-base:1.4 AS runtime
COPY --from=builder /build/simple-kmod.ko /opt/lib/modules/
"""
    out = render(text, DTK)
    assert out.rewritten_from_lines == 2
    assert from_lines(out.text) == [
        f"FROM {DTK} AS headers",
        f"FROM {DTK} AS builder",
        "FROM quay.io/acme/runtime-base:1.4 AS runtime",
    ]
    assert "COPY --from=headers /usr/src/kernels /usr/src/kernels" in out.text.splitlines()


def test_from_with_line_continuation():
    text = "ARG DTK_AUTO\nFROM \\\n    ${DTK-AUTO} \\\n    AS builder\nRUN make\n"
    out = render(text, DTK)
    assert out.rewritten_from_lines == 1
    assert out.text == f"ARG DTK_AUTO\nFROM {DTK} AS builder\nRUN make\n"


def test_escape_directive_backtick_continuation():
    text = "# escape=`\nARG DTK_AUTO\nFROM `\n  ${DTK_AUTO} AS builder\nRUN make\n"
    out = render(text, DTK)
    assert out.rewritten_from_lines == 1
    assert f"FROM {DTK} AS builder" in out.text.splitlines()
    assert out.text.startswith("# escape=`\n")


@pytest.mark.parametrize(
    "text",
    [
        NO_PLACEHOLDER,
        "FROM registry.redhat.io/ubi9/ubi-minimal\r\nRUN true\r\n",  # CRLF kept as is
        "FROM ubi9\n# we used to build FROM ${DTK_AUTO} here\nRUN true",
        "# ARG DTK-AUTO\n# FROM ${DTK-AUTO}\nFROM quay.io/acme/base:1\n",
        "FROM quay.io/acme/base:1\nRUN echo $DTK_AUTOMATIC ${DTK_AUTO_X}\n",  # other variables
        "",
        "\n\n",
    ],
)
def test_no_placeholder_returns_text_byte_for_byte(text):
    assert not uses_placeholder(text)
    out = render(text, DTK)
    assert out.text == text
    assert not out.uses_dtk and out.rewritten_from_lines == 0
    # ... also when no DTK image is known at all.
    assert render(text, None).text == text


def test_comments_mentioning_the_placeholder_are_not_use():
    text = "# Build with ARG DTK_AUTO / FROM ${DTK_AUTO} to get the driver-toolkit\nFROM ubi9\n"
    assert not uses_placeholder(text)
    assert render(text, None).text == text


@pytest.mark.parametrize("text", [DESIGN, KMM_STYLE, "FROM $DTK-AUTO\n", "ARG DTK_AUTO\nFROM ubi9\n"])
@pytest.mark.parametrize("image", [None, ""])
def test_placeholder_without_dtk_image_is_an_error(text, image):
    assert uses_placeholder(text)
    with pytest.raises(DockerfileError, match="DTK"):
        render(text, image)


def test_other_mentions_are_normalised_to_the_build_arg():
    text = """\
ARG DTK-AUTO
FROM ${DTK-AUTO} AS builder
ENV BASE_IMAGE=${DTK-AUTO}
RUN echo "built on $DTK-AUTO" && echo $DTK_AUTO
LABEL org.opencontainers.image.base.name="${DTK-AUTO}"
"""
    out = render(text, DTK)
    lines = out.text.splitlines()
    assert lines[0] == "ARG DTK_AUTO"
    assert lines[1] == f"FROM {DTK} AS builder"
    assert lines[2] == "ENV BASE_IMAGE=${DTK_AUTO}"
    assert lines[3] == 'RUN echo "built on ${DTK_AUTO}" && echo ${DTK_AUTO}'
    assert lines[4] == 'LABEL org.opencontainers.image.base.name="${DTK_AUTO}"'
    assert "DTK-AUTO" not in out.text


def test_arg_with_default_is_kept_but_renamed():
    out = render("ARG DTK-AUTO=registry.example.com/dtk:old\nFROM ${DTK-AUTO}\n", DTK)
    assert out.text == f"ARG DTK_AUTO=registry.example.com/dtk:old\nFROM {DTK}\n"


def test_placeholder_as_part_of_a_longer_reference_is_not_a_from_rewrite():
    out = render("ARG DTK_AUTO\nFROM ${DTK-AUTO}-debug\n", DTK)
    assert out.rewritten_from_lines == 0
    assert out.text == "ARG DTK_AUTO\nFROM ${DTK_AUTO}-debug\n"
    assert_no_unresolved_dashed(out.text)


def test_rendering_is_idempotent_on_its_output():
    once = render(DESIGN, DTK).text
    twice = render(once, DTK)
    assert twice.text == once


def test_comment_ending_in_backslash_does_not_continue():
    text = "ARG DTK_AUTO\n# build against the driver-toolkit \\\nFROM ${DTK_AUTO} AS builder\nRUN make\n"
    out = render(text, DTK)
    assert out.rewritten_from_lines == 1
    assert out.text == f"ARG DTK_AUTO\n# build against the driver-toolkit \\\nFROM {DTK} AS builder\nRUN make\n"


def test_crlf_dockerfile_keeps_its_line_endings_when_rewritten():
    text = "ARG DTK_AUTO\r\nFROM ${DTK_AUTO} AS builder\r\nRUN make\r\n"
    out = render(text, "quay.io/x/dtk@sha256:" + "a" * 64).text
    assert out == "ARG DTK_AUTO\r\nFROM quay.io/x/dtk@sha256:" + "a" * 64 + " AS builder\r\nRUN make\r\n"
