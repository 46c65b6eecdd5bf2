"""Where ``-f/--filename`` reads from, as kubectl reads it: a file, ``-`` for stdin, or a directory.

A directory gives its ``.yaml``, ``.yml`` and ``.json`` files in lexical order (``-R`` descends into
subdirectories, symlinked directories aside, so a link loop cannot make the walk endless). A file
named explicitly is read whatever its name and type (``-f <(oc get ...)`` is a pipe). Reading is
bounded: each source and all of them together by ``max_bytes``, and the number of files by
``max_files``; a problem is one ``SourceError`` line naming the source.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO

EXTENSIONS = (".yaml", ".yml", ".json")
STDIN = "-"
STDIN_NAME = "<stdin>"


class SourceError(ValueError):
    """A source that cannot be read; ``str()`` is the one line to print."""


@dataclass(frozen=True)
class Source:
    name: str  # what error messages call it: the path, or <stdin>
    data: bytes


def _reason(err: OSError) -> str:
    return err.strerror if err.strerror else str(err)


class _Budget:
    """Bytes and files left for the whole invocation."""

    def __init__(self, max_bytes: int, max_files: int) -> None:
        self.max_bytes, self.bytes_left, self.files_left = max_bytes, max_bytes, max_files
        self.max_files = max_files

    def read(self, name: str, handle: BinaryIO) -> Source:
        if self.files_left <= 0:
            raise SourceError(f"{name}: more than {self.max_files} files in the input")
        self.files_left -= 1
        data = handle.read(self.bytes_left + 1)  # one byte over says "too large"
        if len(data) > self.bytes_left:
            if self.bytes_left == self.max_bytes:
                raise SourceError(f"{name}: document larger than {self.max_bytes} bytes")
            raise SourceError(f"{name}: the input files together are larger than {self.max_bytes} bytes")
        self.bytes_left -= len(data)
        return Source(name, data)


def _directory_files(root: str, recursive: bool) -> Iterator[str]:
    """Regular files with a known extension, in lexical order, a subdirectory's files in its place
    (as kubectl's walk gives them)."""
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as err:
        raise SourceError(f"{root}: cannot read directory: {_reason(err)}") from None
    for entry in entries:
        path = os.path.join(root, entry.name)
        try:
            if entry.is_dir(follow_symlinks=False):
                if recursive:
                    yield from _directory_files(path, recursive)
                continue
            if entry.name.endswith(EXTENSIONS) and entry.is_file(follow_symlinks=True):
                yield path  # a FIFO or device inside a directory is skipped: it could block or never end
        except OSError as err:
            raise SourceError(f"{path}: cannot read: {_reason(err)}") from None


def read_sources(names: Sequence[str], *, recursive: bool = False, stdin: BinaryIO | None = None,
                 max_bytes: int, max_files: int = 10_000) -> Iterator[Source]:
    """Each ``-f`` value in turn: ``-`` (once), a directory's files, or a file."""
    budget = _Budget(max_bytes, max_files)
    stdin_read = False
    for name in names:
        if name == STDIN:
            if stdin_read:
                raise SourceError("-f -: standard input can be read only once")
            stdin_read = True
            if stdin is None:
                raise SourceError("-f -: no standard input")
            yield budget.read(STDIN_NAME, stdin)
            continue
        if name.startswith(("http://", "https://")):
            raise SourceError(f"{name}: URLs are not fetched; download the file and pass its path, or pipe it to -f -")
        try:
            mode = os.stat(name).st_mode
        except OSError as err:
            raise SourceError(f"{name}: cannot read: {_reason(err)}") from None
        if stat.S_ISDIR(mode):
            found = False
            for path in _directory_files(name, recursive):
                found = True
                yield _read_file(budget, path)
            if not found:
                hint = "" if recursive else " (-R descends into subdirectories)"
                raise SourceError(f"{name}: directory holds no .yaml, .yml or .json file{hint}")
            continue
        yield _read_file(budget, name)


def _read_file(budget: _Budget, path: str) -> Source:
    try:
        with open(path, "rb") as handle:
            return budget.read(path, handle)
    except OSError as err:
        raise SourceError(f"{path}: cannot read: {_reason(err)}") from None
