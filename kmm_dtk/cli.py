"""The ``kmm-dtk`` command line: a thin layer over the core and the operator."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from kmm_dtk import __version__, release_cli
from kmm_dtk.cmd.output import print_data
from kmm_dtk.core.dtk import DEFAULT_DTK_NAME, DEFAULT_DTK_NAMESPACE
from kmm_dtk.core.plan import Action, ClusterPlan, plan_cluster, snapshot_from_objects
from kmm_dtk.dump import ClusterObjects, DumpError, load_files
from kmm_dtk.kube import defaults
from kmm_dtk.registry_flags import UsageError, add_registry_flags, auth_file, registry_settings

if TYPE_CHECKING:
    from kmm_dtk.kube.manager import LeaderElectionConfig
    from kmm_dtk.operator.options import RegistryOptions

EXIT_OK, EXIT_PLAN_ERRORS, EXIT_USAGE = 0, 1, 2
OUTPUTS = ("table", "wide", "json", "yaml")


def imagestream_ref(value: str) -> tuple[str, str]:
    namespace, sep, name = value.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise argparse.ArgumentTypeError(f"expected NAMESPACE/NAME, got {value!r}")
    return namespace, name


class _SubcommandParser(argparse.ArgumentParser):
    """A subcommand's parser that reports an unknown flag itself, with its own usage line, instead of
    handing it back for the top-level parser to report with ``kmm-dtk``'s usage."""

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return parsed, extras


def _add_filename_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``-f``/``-R`` as kubectl reads them (kmm_dtk.cmd.sources)."""
    parser.add_argument("-f", "--filename", action="append", required=True, metavar="FILE",
                        help=f"{what}: a file (YAML documents, a JSON object, a List or a list), - for standard "
                        "input, or a directory's .yaml, .yml and .json files in lexical order (repeatable)")
    parser.add_argument("-R", "--recursive", action="store_true",
                        help="read the directories given to -f and all their subdirectories")


def _add_namespace_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``-n NS`` / ``-A`` as in kubectl; objects of the input that name no namespace are taken to be in NS."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-n", "--namespace", metavar="NS",
                       help=f"only the {what} in NS (those in the input that name no namespace are in NS, as "
                       "`kubectl apply -n` would put them)")
    group.add_argument("-A", "--all-namespaces", action="store_true",
                       help=f"the {what} of every namespace (the default)")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kmm-dtk",
        description="Keep KMM driver images built against the driver-toolkit of every kernel in the cluster.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_SubcommandParser)

    plan = sub.add_parser(
        "plan",
        help="show which driver images would be built, from a dump of cluster objects",
        description="Plan driver builds offline from Nodes, the DTK ImageStream, Modules and ConfigMaps "
        "(e.g. the output of `oc get nodes,imagestreams,modules,configmaps -A -o yaml`). "
        "Exit status: 0 planned, 1 some entries are errors and --strict was given, 2 unreadable input.",
    )
    _add_filename_flags(plan, "cluster objects")
    _add_namespace_flags(plan, "Modules")
    plan.add_argument("-o", "--output", choices=OUTPUTS, default="table",
                      help="table (default), wide (adds the RHCOS, DTK image, image and reason code), json or yaml")
    plan.add_argument("--strict", action="store_true", help="exit 1 when any entry is an error")
    plan.add_argument("--dtk-imagestream", type=imagestream_ref,
                      default=f"{DEFAULT_DTK_NAMESPACE}/{DEFAULT_DTK_NAME}", metavar="NAMESPACE/NAME",
                      help="the driver-toolkit ImageStream (default: %(default)s)")
    plan.add_argument("--check-registry", action="store_true",
                      help="ask the registries (through the ICSP/IDMS/ITMS mirrors among the input files) whether "
                      "each image exists and is up to date: such entries become 'skip', a DTK for another kernel "
                      "an error, an unanswered question 'wait'")
    add_registry_flags(plan)
    plan.set_defaults(func=_cmd_plan)

    run = sub.add_parser(
        "run",
        help="run the operator",
        description="Run the operator: in a pod with its in-cluster config, locally with a kubeconfig. "
        "Exit status: 0 after a clean stop (SIGTERM/SIGINT), 1 when the leader lease was lost, the cluster config "
        "cannot be loaded or the API server did not answer within --api-wait-timeout, 2 on bad flags.",
    )
    run.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster config in a pod, else $KUBECONFIG "
                     "or ~/.kube/config)")
    run.add_argument("--context", help="kubeconfig context")
    namespaces = run.add_mutually_exclusive_group()
    namespaces.add_argument("-n", "--namespace", action="append", default=[], metavar="NS",
                            help="watch Modules, ConfigMaps and Builds only in NS (repeatable; default: all "
                            "namespaces)")
    namespaces.add_argument("-A", "--all-namespaces", action="store_true",
                            help="watch every namespace (the default)")
    run.add_argument("--api-wait-timeout", type=_positive_float, default=60.0, metavar="SECONDS",
                     help="at start, how long to wait for the API server to answer, with a line of progress every "
                     "few seconds, before exiting 1 (default: %(default)s)")
    run.add_argument("--dtk-imagestream", type=imagestream_ref, default=f"{DEFAULT_DTK_NAMESPACE}/{DEFAULT_DTK_NAME}",
                     metavar="NAMESPACE/NAME", help="the driver-toolkit ImageStream (default: %(default)s)")
    run.add_argument("--workers", type=_positive_int, default=4, help="module reconcile workers (default: 4)")
    run.add_argument("--max-concurrent-writes", type=_positive_int, default=16, metavar="N",
                     help="Build creations (with the registry checks before them) in flight at once across all "
                          "reconciles: one Module's kernels are built side by side (default: %(default)s)")
    run.add_argument("--metrics-bind-address", default=":8080",
                     help="[HOST]:PORT for /metrics, or 0 to serve no metrics (default: :8080)")
    run.add_argument("--metrics-secure", action="store_true",
                     help="serve /metrics over HTTPS, each scrape authenticated by a TokenReview and authorized by "
                     "a SubjectAccessReview (get on the non-resource URL /metrics), as the manifests run it; off by "
                     "default, so that a local run against a kubeconfig (and the benchmark) is scraped over plain HTTP")
    run.add_argument("--metrics-cert-dir", metavar="DIR",
                     help="with --metrics-secure: the directory holding tls.crt and tls.key (e.g. a service-ca "
                     "Secret), reloaded when they change (default: a self-signed certificate made at start)")
    run.add_argument("--health-probe-bind-address", default=":8081",
                     help="[HOST]:PORT for /healthz and /readyz (default: :8081)")
    run.add_argument("--leader-elect", action="store_true", help="run only while holding the leader Lease")
    run.add_argument("--leader-election-namespace", default=None,
                     help="namespace of the Lease (default: the pod's namespace, else kmm-dtk-system)")
    run.add_argument("--leader-election-id", default="kmm-dtk", help="name of the Lease (default: kmm-dtk)")
    run.add_argument("--leader-elect-lease-duration", type=_positive_float, default=defaults.LEASE_DURATION,
                     metavar="SECONDS", help="how long a standby waits after the last renewal it saw before "
                     "taking the Lease over (default: %(default)s)")
    run.add_argument("--leader-elect-renew-deadline", type=_positive_float, default=defaults.RENEW_DEADLINE,
                     metavar="SECONDS", help="how long the leader keeps trying to renew before it stops writing "
                     "and exits (default: %(default)s)")
    run.add_argument("--leader-elect-retry-period", type=_positive_float, default=defaults.RETRY_PERIOD,
                     metavar="SECONDS", help="interval of renewals and of a standby's attempts (default: %(default)s)")
    run.add_argument("--graceful-shutdown-timeout", type=_positive_float, default=defaults.GRACEFUL_TIMEOUT,
                     metavar="SECONDS", help="on SIGTERM, how long reconciles in flight may finish before the Lease "
                     "is released (default: %(default)s); keep it well under terminationGracePeriodSeconds")
    run.add_argument("--log-format", choices=("json", "text"), default="text")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    run.add_argument("--dry-run", action="store_true",
                     help="log the Builds, status and Events it would write, and write nothing")
    run.add_argument("--assume-missing", action="store_true",
                     help="never ask a registry: treat every target image as missing and every DTK as right, so a "
                     "Build is created for each planned kernel without one")
    add_registry_flags(run)
    run.add_argument("--global-pull-secret", type=imagestream_ref, default="openshift-config/pull-secret",
                     metavar="NAMESPACE/NAME", help="the cluster's pull secret, used for release and DTK images and "
                     "as a fallback for every registry (default: %(default)s; read if it exists)")
    run.add_argument("--registry-cache-ttl", type=_positive_int, default=300, metavar="SECONDS",
                     help="how long an answer about an image is reused; a finished Build forgets it, and images "
                     "recorded as in the registry are asked about again as often (default: 300)")
    run.add_argument("--registry-recheck-rate", type=_positive_float, default=10.0, metavar="PER_SECOND",
                     help="re-checks of images recorded as in the registry, at most, a second per registry host "
                     "(default: 10)")
    run.add_argument("--module-build-sections", choices=("build", "ignore"), default="build",
                     help="Modules that carry build sections of their own: build them where kmm-dtk is the only "
                     "builder (default), or ignore them beside the KMM operator, which builds those itself; "
                     "ModuleBuild objects are built either way")
    run.add_argument("--prebuild-upgrades", action="store_true",
                     help="watch ClusterVersion and build driver images for the kernel of the release being rolled "
                     "out before nodes reboot into it")
    run.add_argument("--build-gc-grace-period", type=_duration, default="1h", metavar="DURATION",
                     help="how long a completed Build of a kernel no node runs any more (and no upgrade brings) is "
                     "kept before it is deleted, and how long any completed Build is kept at least: seconds or "
                     "e.g. 90m, 1h30m (default: 1h)")
    run.add_argument("--build-history-limit", type=_positive_int, default=2, metavar="N",
                     help="completed Builds kept per Module and kernel in use, whatever their age (default: 2)")
    run.set_defaults(func=_cmd_run)
    release_cli.add_parser(sub)

    migrate = sub.add_parser(
        "migrate",
        help="split Modules with build sections into a Module KMM loads and a ModuleBuild kmm-dtk builds",
        description="For each Module in the input that carries build sections, print it without them and the "
        "ModuleBuild that carries them, for a cluster where KMM is installed (`| oc apply -f -` where the Modules "
        "were created with oc apply; otherwise `oc replace` the Module and `oc create` the ModuleBuild, so the build "
        "sections really go). KMM then loads and waits for the image, kmm-dtk builds it. Exit status: 0 all split, "
        "1 some Module cannot be (stderr says why), 2 unreadable input.",
    )
    _add_filename_flags(migrate, "Modules, e.g. `oc get modules -A -o yaml`")
    _add_namespace_flags(migrate, "Modules")
    migrate.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml")
    migrate.set_defaults(func=_cmd_migrate)
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}") from None
    if not 0 < number < 86400:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {value!r}")
    return number


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?")


def _duration(value: str) -> float:
    """Seconds from ``3600``, ``90m``, ``1h30m`` or ``45s`` (Go's duration units h, m, s); at most 30 days."""
    try:
        seconds = float(value)
    except ValueError:
        found = _DURATION.fullmatch(value.strip())
        if not value.strip() or found is None:
            raise argparse.ArgumentTypeError(f"expected seconds or a duration such as 90m or 1h30m, got {value!r}") \
                from None
        hours, minutes, secs = (float(part or 0) for part in found.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not 0 <= seconds <= 30 * 86400:
        raise argparse.ArgumentTypeError(f"expected a duration from 0 to 30 days, got {value!r}")
    return seconds


def _pod_namespace() -> str | None:
    try:
        with open("/var/run/secrets/kubernetes.io/serviceaccount/namespace") as f:
            return f.read().strip() or None
    except OSError:
        return None


class _Refused(Exception):
    """A flag or file ``kmm-dtk run`` refuses before starting anything; ``str()`` is the one line."""


def _cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    import signal
    import socket

    from kmm_dtk.cmd.api_wait import ApiServerUnreachable, clean_message, wait_for_api_server
    from kmm_dtk.kube.client import ApiError, KubeClient, load_api_client
    from kmm_dtk.observability import logs
    from kmm_dtk.observability.http import BindAddressError
    from kmm_dtk.operator.app import build_operator
    from kmm_dtk.operator.options import OperatorOptions

    logs.configure(args.log_format, args.log_level)
    identity = os.environ.get("POD_NAME") or socket.gethostname()
    try:
        _check_bind_addresses(args)
        _check_metrics_tls(args)
        registry = _registry_options(args)
        election = _leader_election(args, identity)
    except _Refused as err:
        print(f"kmm-dtk run: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        api_client = load_api_client(args.kubeconfig, args.context,
                                     pool_size=args.workers + args.max_concurrent_writes + 16)
    except ValueError as err:  # KubeConfigError: one line naming the file and the fix
        print(f"kmm-dtk: {clean_message(str(err))}", file=sys.stderr)
        return 1
    except Exception as err:  # noqa: BLE001 - a loader may raise many kinds
        print(f"kmm-dtk: {_config_problem(args.kubeconfig, clean_message(str(err)))}", file=sys.stderr)
        return 1
    options = OperatorOptions(
        namespaces=tuple(args.namespace), dtk_imagestream=args.dtk_imagestream, workers=args.workers,
        max_concurrent_writes=args.max_concurrent_writes,
        dry_run=args.dry_run, identity=identity,
        metrics_address=None if args.metrics_bind_address == "0" else args.metrics_bind_address,
        metrics_secure=args.metrics_secure, metrics_cert_dir=args.metrics_cert_dir,
        health_address=args.health_probe_bind_address, leader_election=election,
        graceful_timeout=args.graceful_shutdown_timeout,
        registry=registry, prebuild_upgrades=args.prebuild_upgrades,
        build_module_sections=args.module_build_sections == "build",
        build_gc_grace=args.build_gc_grace_period, build_history_limit=args.build_history_limit,
    )
    client = KubeClient(api_client)
    try:
        wait_for_api_server(client, timeout=args.api_wait_timeout,
                            report=lambda line: print(f"kmm-dtk run: {line}", file=sys.stderr, flush=True))
        operator = build_operator(client, options)
    except ApiServerUnreachable as err:
        print(f"kmm-dtk run: {err}", file=sys.stderr)
        return 1
    except ApiError as err:  # API discovery at start (the OpenShift config APIs) kept failing
        print(f"kmm-dtk run: API discovery at {client.host} failed: {clean_message(err.message or str(err))}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C while waiting: nothing was started
        return EXIT_OK
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: operator.stop())
    try:
        return operator.run()
    except BindAddressError as err:  # taken between the check above and the servers' start
        print(f"kmm-dtk run: {err}", file=sys.stderr)
        return EXIT_USAGE


def _config_problem(kubeconfig: str | None, detail: str) -> str:
    """The loader's words, with the files it looked for and what to do when none of them exists."""
    if kubeconfig:
        paths = [kubeconfig]
    elif os.environ.get("KUBECONFIG"):
        paths = [p for p in os.environ["KUBECONFIG"].split(os.pathsep) if p]
    else:
        paths = [os.path.expanduser("~/.kube/config")]
    if any(os.path.exists(p) for p in paths):
        return f"cannot load cluster config from {', '.join(paths)}: {detail}"
    if kubeconfig:
        return f"--kubeconfig {kubeconfig}: no such file; name an existing kubeconfig"
    tried = ", ".join(paths) + (" (from $KUBECONFIG)" if not kubeconfig and os.environ.get("KUBECONFIG") else "")
    return (f"no kubeconfig found at {tried} and not in a pod: pass --kubeconfig FILE, set KUBECONFIG, "
            "or log in with `oc login` to write ~/.kube/config")


def _check_bind_addresses(args: argparse.Namespace) -> None:
    """Both held at once (one port named twice conflicts), then let go for the servers."""
    import socket

    from kmm_dtk.observability.http import BindAddressError, bind_address

    bound: list[socket.socket] = []
    try:
        for flag, address in (("--metrics-bind-address", args.metrics_bind_address),
                              ("--health-probe-bind-address", args.health_probe_bind_address)):
            if flag == "--metrics-bind-address" and address == "0":
                continue  # metrics off, as in controller-runtime
            try:
                bound.append(bind_address(address))
            except BindAddressError as err:
                raise _Refused(f"{flag}: {err}") from None
    finally:
        for sock in bound:
            sock.close()


def _check_metrics_tls(args: argparse.Namespace) -> None:
    """The secure metrics endpoint's certificate can be served (or made), before anything starts."""
    from kmm_dtk.observability.serving_cert import ServingCert, ServingCertError, check_self_signing

    if args.metrics_cert_dir and not args.metrics_secure:
        raise _Refused("--metrics-cert-dir: only used with --metrics-secure")
    if not args.metrics_secure or args.metrics_bind_address == "0":
        return
    try:
        if args.metrics_cert_dir:
            ServingCert.from_dir(args.metrics_cert_dir)
        else:
            check_self_signing()
    except ServingCertError as err:
        raise _Refused(f"{'--metrics-cert-dir' if args.metrics_cert_dir else '--metrics-secure'}: {err}") from None


def _registry_options(args: argparse.Namespace) -> RegistryOptions | None:
    from kmm_dtk.operator.options import RegistryOptions

    if args.assume_missing:
        if args.prebuild_upgrades:
            raise _Refused("--prebuild-upgrades reads release images from registries; it cannot be combined "
                           "with --assume-missing")
        return None
    try:
        registry_settings(args)  # refuse unreadable files before starting anything
    except UsageError as err:
        raise _Refused(str(err)) from None
    return RegistryOptions(auth_file=auth_file(args)[0], ca_paths=tuple(args.ca_file),
                           global_pull_secret=args.global_pull_secret, cache_ttl=float(args.registry_cache_ttl),
                           recheck_rate=args.registry_recheck_rate)


def _leader_election(args: argparse.Namespace, identity: str) -> LeaderElectionConfig | None:
    from kmm_dtk.kube.manager import LeaderElectionConfig

    if not args.leader_elect:
        return None
    namespace = args.leader_election_namespace or _pod_namespace() or "kmm-dtk-system"
    election = LeaderElectionConfig(
        args.leader_election_id, namespace,
        identity=f"{identity}_{uuid.uuid4()}",  # unique per process, even on one host
        lease_duration=args.leader_elect_lease_duration, renew_deadline=args.leader_elect_renew_deadline,
        retry_period=args.leader_elect_retry_period)
    try:
        election.validate()
    except ValueError as err:
        raise _Refused(str(err)) from None
    return election


def _load(args: argparse.Namespace) -> ClusterObjects:
    stdin = getattr(sys.stdin, "buffer", None)  # None when the process has no standard input
    return load_files(args.filename, recursive=args.recursive, stdin=stdin, namespace=args.namespace)


def _cmd_plan(args: argparse.Namespace, out: TextIO) -> int:
    objects = _load(args)
    snapshot, problems = snapshot_from_objects(
        objects.nodes,
        objects.find_imagestream(*args.dtk_imagestream),
        objects.configmaps,
        args.dtk_imagestream,
    )
    result = plan_cluster(objects.modules, snapshot, problems)
    if args.check_registry:
        result = _check_registry(result, objects, args)
    if args.output in ("json", "yaml"):
        print_data(result.to_json(), args.output, out)
    else:
        _print_table(result, out, wide=args.output == "wide", namespace=args.namespace)
    failed = any(e.action is Action.ERROR for e in result.entries)
    return EXIT_PLAN_ERRORS if failed and args.strict else EXIT_OK


def _check_registry(result: ClusterPlan, objects: ClusterObjects, args: argparse.Namespace) -> ClusterPlan:
    from dataclasses import replace

    from kmm_dtk.core.decision import with_registry_answers
    from kmm_dtk.registry.check import RegistryChecker
    from kmm_dtk.registry.client import RegistryClient
    from kmm_dtk.registry.mirrors import MirrorPolicy

    auth, trust = registry_settings(args)
    mirrors, problems = MirrorPolicy.from_objects(objects.mirror_sets)
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    client = RegistryClient(trust, auth)
    try:
        checker = RegistryChecker(client, mirrors=lambda: mirrors)
        return replace(result, entries=tuple(with_registry_answers(list(result.entries), checker)))
    finally:
        client.close()


def _cmd_migrate(args: argparse.Namespace, out: TextIO) -> int:
    import yaml

    from kmm_dtk.core.modulebuild import ModuleBuildError, split_module

    objects = _load(args)
    if not objects.modules:
        where = f" in namespace {args.namespace}" if args.namespace else ""
        print(f"kmm-dtk migrate: no Module{where} in the input", file=sys.stderr)
        return EXIT_PLAN_ERRORS
    documents: list[dict[str, Any]] = []
    refused = 0
    for module in objects.modules:
        meta: dict[str, Any] = module["metadata"] if isinstance(module.get("metadata"), dict) else {}
        try:
            documents.extend(split_module(module))
        except ModuleBuildError as err:
            refused += 1
            print(f"kmm-dtk migrate: Module {meta.get('namespace') or '-'}/{meta.get('name')}: {err}", file=sys.stderr)
    if args.output == "json":
        json.dump({"apiVersion": "v1", "kind": "List", "items": documents}, out, indent=2)
        out.write("\n")
    elif documents:
        yaml.safe_dump_all(documents, out, sort_keys=False)
    return EXIT_PLAN_ERRORS if refused else EXIT_OK


def _table(rows: list[list[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        # every column but the last is padded: zip stops at the shorter row[:-1]
        cells = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)] + [row[-1]]
        out.write("  ".join(cells).rstrip() + "\n")


def _print_table(result: ClusterPlan, out: TextIO, wide: bool = False, namespace: str | None = None) -> None:
    kernel_rows = [["KERNEL", "RHCOS"]] + [[k, v or "-"] for k, v in sorted(result.kernels.items())]
    _table(kernel_rows, out)
    out.write("\n")
    if wide:
        rows = [["MODULE", "KERNEL", "ACTION", "RHCOS", "DTK IMAGE", "IMAGE", "REASON CODE", "REASON"]]
        for e in result.entries:
            rows.append([e.module, e.kernel or "-", e.action.value, e.rhcos or "-", e.dtk_image or "-",
                         e.image or "-", e.reason_code.value, e.reason or "-"])
    else:
        rows = [["MODULE", "KERNEL", "ACTION", "DTK", "IMAGE / REASON"]]
        for e in result.entries:
            detail = e.image if e.action is Action.BUILD else e.reason
            dtk = (e.rhcos or "-") if e.dtk_image else "-"  # a release's DTK may come without its RHCOS
            rows.append([e.module, e.kernel or "-", e.action.value, dtk, detail or "-"])
    if len(rows) == 1:
        out.write(f"no Modules in namespace {namespace} in the input\n" if namespace else "no Modules in the input\n")
    else:
        _table(rows, out)
    for problem in result.node_problems:
        out.write(f"warning: {problem}\n")


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args, out or sys.stdout)
    except (DumpError, UsageError) as err:
        print(f"kmm-dtk {args.command}: {err}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return EXIT_OK
