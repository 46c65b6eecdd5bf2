"""One-line messages for the terminal, whatever a library put in an exception's text.

An object's repr (``<urllib3.connection.HTTPSConnection object at 0x7f...>``) says nothing to whoever
runs the command, and a line break splits what must stay one line; both are taken out here.
"""

from __future__ import annotations

import re

_OBJECT_REPR = re.compile(r"<[^<>]*\bobject at 0x[0-9a-fA-F]+>:?\s*")


def clean_message(message: str) -> str:
    """One line without object reprs."""
    return " ".join(_OBJECT_REPR.sub("", message).split()) or "no detail given"
