"""A kernel release as a Node reports it (``uname -r``), taken apart once.

``5.14.0-570.12.1.el9_6.x86_64``, ``5.14.0-284.30.1.el9_2.x86_64+rt``, ``...el9_4.aarch64+64k`` and
``4.18.0-305.49.1.rt7.121.el8_4.x86_64`` (RHEL 8 real-time kernels say so in the release, not in a
``+rt`` suffix) all read as: version-release, architecture, then an optional ``+variant``.

Nodes may report anything, so reading never fails on a string: a string that is not shaped like a
kernel keeps its text, its last dotted part stands as the architecture, and its image platform is
``linux/amd64``, the platform of every node before clusters mixed architectures.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The image platform (os, architecture) that nodes of each kernel architecture pull.
PLATFORMS: dict[str, tuple[str, str]] = {
    "x86_64": ("linux", "amd64"),
    "aarch64": ("linux", "arm64"),
    "ppc64le": ("linux", "ppc64le"),
    "s390x": ("linux", "s390x"),
}
DEFAULT_ARCH = "x86_64"
DEFAULT_PLATFORM = PLATFORMS[DEFAULT_ARCH]

# What an image name may not hold: KMM writes the kernel into image names with every other character
# made "_", so "...x86_64+rt" names the image "...x86_64_rt".
_NOT_IN_IMAGE_NAME = re.compile(r"[^A-Za-z0-9._-]")
# KMM's split for ${KERNEL_X}, ${KERNEL_Y}, ${KERNEL_Z} and ${KERNEL_XYZ}.
_COMPONENT_SEPARATORS = re.compile(r"[.,-]")

# "rt" as a whole dotted/dashed/plussed part: ".rt7." (RHEL 8 releases) or "+rt" (RHEL 9 and later).
_REALTIME = re.compile(r"(?:^|[.+-])rt\d*(?:[.+-]|$)")


def platform_of_arch(arch: str) -> tuple[str, str]:
    """The image platform of a kernel architecture (``aarch64`` -> linux/arm64); linux/amd64 for an
    architecture this table does not know."""
    return PLATFORMS.get(arch, DEFAULT_PLATFORM)


def image_name_form(kernel: str) -> str:
    """The kernel as KMM writes it into image names: every character other than an ASCII letter, a
    digit, ``-``, ``.`` or ``_`` becomes ``_``. Only image names use this form; build args, DTK lookups
    and status keep the kernel as the node reports it."""
    return _NOT_IN_IMAGE_NAME.sub("_", kernel)


def image_name_components(kernel: str) -> list[str]:
    """The parts ``${KERNEL_X}``-style variables are taken from: the image-name form split on ``.``,
    ``,`` and ``-`` (so ``,`` never splits: that form has none)."""
    return _COMPONENT_SEPARATORS.split(image_name_form(kernel))


@dataclass(frozen=True)
class Kernel:
    """One kernel release; equal when the text is equal. ``str()`` gives the text back unchanged.

    ``variant`` is what the kernel was built as beyond its architecture: ``"rt"`` for every real-time
    kernel (either spelling), else what follows ``+`` (``"64k"``), else ``""``. An upgrade moves a
    node to the release's kernel of the same ``flavour`` (architecture, variant).
    """

    text: str
    version_release: str = field(init=False, compare=False)  # "5.14.0-570.12.1.el9_6"
    arch: str = field(init=False, compare=False)  # "x86_64"; the last dotted part before any "+"
    suffix: str = field(init=False, compare=False)  # after "+", as written ("rt", "64k") or ""
    variant: str = field(init=False, compare=False)
    realtime: bool = field(init=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise TypeError(f"a kernel is a string, not {type(self.text).__name__}")
        head, _, suffix = self.text.partition("+")
        version_release, dot, arch = head.rpartition(".")
        realtime = bool(_REALTIME.search(self.text))
        object.__setattr__(self, "version_release", version_release if dot else "")
        object.__setattr__(self, "arch", arch)
        object.__setattr__(self, "suffix", suffix)
        object.__setattr__(self, "variant", "rt" if realtime else suffix)
        object.__setattr__(self, "realtime", realtime)

    @classmethod
    def parse(cls, text: str) -> Kernel:
        """The same as ``Kernel(text)``; reads better at call sites that hold a plain string."""
        return cls(text)

    @property
    def flavour(self) -> tuple[str, str]:
        """(architecture, variant): ``...aarch64+64k`` nodes upgrade to the release's aarch64 kernel
        with ``+64k``, RT nodes to its RT kernel."""
        return (self.arch, self.variant)

    @property
    def base(self) -> str:
        """The kernel whose kernel-devel a DTK carries for this one: ``...aarch64+64k`` is built
        against ``...aarch64`` (a DTK's release file names only the base and the RT kernel, and the
        RT one in full, so ``+rt`` stays)."""
        head, plus, suffix = self.text.partition("+")
        return head if plus and suffix != "rt" else self.text

    @property
    def platform(self) -> tuple[str, str]:
        """The image platform (os, architecture) a node running this kernel pulls."""
        return platform_of_arch(self.arch)

    def __str__(self) -> str:
        return self.text
