"""``-o json`` and ``-o yaml`` for the CLI: the same data either way, as kubectl prints it.

YAML writes multi-line strings (a rendered Dockerfile) as literal blocks, so that they read as they
would in the file rather than as one quoted line of ``\\n`` escapes.
"""

from __future__ import annotations

import json
from typing import Any, TextIO

import yaml


class _Dumper(yaml.SafeDumper):
    """SafeDumper with literal blocks for multi-line strings."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False,
                     width=1 << 30)  # never folded: a line of the data stays one line


def print_data(data: Any, fmt: str, out: TextIO) -> None:
    """``fmt`` is ``json`` or ``yaml``."""
    if fmt == "yaml":
        out.write(to_yaml(data))
    else:
        json.dump(data, out, indent=2)
        out.write("\n")
