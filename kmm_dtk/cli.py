"""The ``kmm-dtk`` command line: a thin layer over the core and the operator."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence, TextIO

from kmm_dtk import __version__
from kmm_dtk.core.dtk import DEFAULT_DTK_NAME, DEFAULT_DTK_NAMESPACE
from kmm_dtk.core.plan import Action, ClusterPlan, plan_cluster, snapshot_from_objects
from kmm_dtk.dump import DumpError, load_files

EXIT_OK, EXIT_PLAN_ERRORS, EXIT_USAGE = 0, 1, 2


def imagestream_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmm-dtk",
        description="Keep KMM driver images built against the driver-toolkit of every kernel in the cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    plan = sub.add_parser(
        "plan",
        help="show which driver images would be built, from a dump of cluster objects",
        description="Plan driver builds offline from Nodes, the DTK ImageStream, Modules and ConfigMaps "
        "(e.g. the output of `oc get nodes,imagestreams,modules,configmaps -A -o yaml`). "
        "Exit status: 0 planned, 1 some entries are errors and --strict was given, 2 unreadable input.",
    )
    plan.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                      help="YAML or JSON file: one object, a multi-document stream or a List (repeatable)")
    plan.add_argument("-o", "--output", choices=("table", "json"), default="table")
    plan.add_argument("--strict", action="store_true", help="exit 1 when any entry is an error")
    plan.add_argument("--dtk-imagestream", type=imagestream_ref,
                      default=(DEFAULT_DTK_NAMESPACE, DEFAULT_DTK_NAME), metavar="NAMESPACE/NAME",
                      help="the driver-toolkit ImageStream (default: %(default)s)")
    plan.set_defaults(func=_cmd_plan)
    return parser


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    objects = load_files(args.filename)
    snapshot, problems = snapshot_from_objects(
        objects.nodes,
        objects.find_imagestream(*args.dtk_imagestream),
        objects.configmaps,
        args.dtk_imagestream,
    )
    result = plan_cluster(objects.modules, snapshot, problems)
    if args.output == "json":
        json.dump(result.to_json(), out, indent=2)
        out.write("\n")
    else:
        _print_table(result, out)
    failed = any(e.action is Action.ERROR for e in result.entries)
    return EXIT_PLAN_ERRORS if failed and args.strict else EXIT_OK


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def _print_table(result: ClusterPlan, out: TextIO) -> None:
    kernel_rows = [["KERNEL", "RHCOS"]] + [[k, v or "-"] for k, v in sorted(result.kernels.items())]
    _table(kernel_rows, out)
    out.write("\n")
    rows = [["MODULE", "KERNEL", "ACTION", "DTK", "IMAGE / REASON"]]
    for e in result.entries:
        detail = e.image if e.action is Action.BUILD else e.reason
        rows.append([e.module, e.kernel or "-", e.action.value, e.rhcos if e.dtk_image else "-", detail or "-"])
    if len(rows) == 1:
        out.write("no Modules in the input\n")
    else:
        _table(rows, out)
    for problem in result.node_problems:
        out.write(f"warning: {problem}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, out or sys.stdout)
    except DumpError as err:
        print(f"kmm-dtk {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
