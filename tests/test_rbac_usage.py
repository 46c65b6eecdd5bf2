"""The RBAC the manifests grant is exactly what the code uses: every granted verb has a caller, every
call is granted. The verbs are read from the code itself (its AST), not from a list kept by hand:

- ``client.get/list/create/replace/patch/delete(RESOURCE, ...)`` on a KubeClient (``subresource=``
  names e.g. ``modules/status``), directly or through a helper that passes its parameter on;
- ``Informer(client, RESOURCE, ...)``, directly or through a helper: list and watch;
- ``client.request(METHOD, path)``, directly or through a helper (the leader elector's ``_call``),
  with the path a ``RESOURCE.path(...)`` call: GET of a named object is get, of a collection list,
  POST create, PUT update, PATCH patch, DELETE delete.

A call on a client whose resource cannot be worked out fails the test: a new call must be visible
here. The rules granted are those of the ClusterRole and the namespaced Roles under manifests/rbac.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.test_manifests import MANIFESTS, find, render, rule_set

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "kmm_dtk"
CONVENIENCES = {"get": "get", "list": "list", "create": "create", "replace": "update", "patch": "patch",
                "delete": "delete"}
METHOD_VERBS = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
RAW = {"request", "request_raw", "watch"}
# Requests that are not about a resource: API discovery (/apis/<group>/<version>) and /version, which
# every authenticated user may make (system:discovery, system:public-info-viewer).
NOT_RESOURCES = {("kmm_dtk/operator/discovery.py", "Discovery._fetch"),
                 ("kmm_dtk/cmd/api_wait.py", "wait_for_api_server")}
# Where the client's own conveniences and the informer's list+watch are implemented: their requests
# are accounted for at their callers.
IMPLEMENTATIONS = {"kmm_dtk/kube/client.py", "kmm_dtk/kube/informer.py"}

Verb = tuple[str, str, str]  # (group, resource, verb)


@dataclass
class Function:
    qualified: str  # Class.method, or outer.inner for a nested function
    node: ast.FunctionDef
    enclosing: list[ast.FunctionDef]  # innermost last: a closure's free names are their parameters


@dataclass
class Module:
    path: str
    tree: ast.Module
    functions: list[Function] = field(default_factory=list)


def _collect(node: ast.AST, prefix: str, enclosing: list[ast.FunctionDef], out: list[Function]) -> None:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.ClassDef):
            _collect(child, f"{prefix}{child.name}.", enclosing, out)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append(Function(f"{prefix}{child.name}", child, list(enclosing)))
            _collect(child, f"{prefix}{child.name}.", enclosing + [child], out)
        else:
            _collect(child, prefix, enclosing, out)


def own_nodes(function: ast.FunctionDef) -> Iterator[ast.AST]:
    """The function's body without the bodies of functions defined in it (they are walked on their own)."""
    stack: list[ast.AST] = list(function.body)
    while stack:
        node = stack.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            stack.extend(ast.iter_child_nodes(node))


def modules() -> list[Module]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        module = Module(path.relative_to(ROOT).as_posix(), tree)
        _collect(tree, "", [], module.functions)
        found.append(module)
    return found


def resource_constants(mods: list[Module]) -> tuple[dict[str, tuple[str, str]], dict[str, list[str]]]:
    """NAME -> (group, plural) for module-level ``NAME = Resource(...)``; NAME -> [names] for tuples of them."""
    resources: dict[str, tuple[str, str]] = {}
    groups: dict[str, list[str]] = {}
    for module in mods:
        for node in module.tree.body:
            if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
                continue
            name, value = node.targets[0].id, node.value
            if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "Resource":
                group, _, plural = (ast.literal_eval(a) for a in value.args[:3])
                resources[name] = (group, plural)
            elif isinstance(value, ast.Tuple) and value.elts and all(isinstance(e, ast.Name) for e in value.elts):
                groups[name] = [e.id for e in value.elts]
    return resources, {k: v for k, v in groups.items() if all(n in resources for n in v)}


def receiver_is_client(func: ast.expr) -> bool:
    """``client.x``, ``self.client.x``, ``self._client.x``."""
    if not isinstance(func, ast.Attribute):
        return False
    target = func.value
    name = target.attr if isinstance(target, ast.Attribute) else target.id if isinstance(target, ast.Name) else ""
    return name.lstrip("_") in ("client", "kube")


def called_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def params(function: ast.FunctionDef) -> list[str]:
    names = [a.arg for a in function.args.args]
    return names[1:] if names[:1] == ["self"] else names


def owner(name: str, fn: Function) -> tuple[ast.FunctionDef, int]:
    """The function (this one or an enclosing one: a closure) whose parameter ``name`` is, and its index."""
    for candidate in [fn.node, *reversed(fn.enclosing)]:
        if name in params(candidate):
            return candidate, params(candidate).index(name)
    raise LookupError(f"{name} is a parameter of neither {fn.qualified} nor a function enclosing it")


def loop_bindings(function: ast.FunctionDef) -> dict[str, str]:
    """Loop variable -> the name it iterates over (``for r in MIRROR_RESOURCES``, comprehensions too)."""
    bound = {}
    for node in own_nodes(function):
        generators = node.generators if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp,
                                                          ast.DictComp)) else []
        pairs = [(g.target, g.iter) for g in generators]
        if isinstance(node, ast.For):
            pairs.append((node.target, node.iter))
        for target, iterated in pairs:
            if isinstance(target, ast.Name) and isinstance(iterated, ast.Name):
                bound[target.id] = iterated.id
    return bound


@dataclass
class Usage:
    verbs: set[Verb] = field(default_factory=set)
    unresolved: list[str] = field(default_factory=list)


def analyse() -> Usage:
    mods = modules()
    resources, groups = resource_constants(mods)
    usage = Usage()
    # helper name -> (parameter index, what a call means): resolved to a fixed point, so helpers of
    # helpers count too
    convenience_helpers: dict[str, tuple[int, str, str | None]] = {}
    informer_helpers: dict[str, int] = {"Informer": 1}
    request_helpers: dict[str, tuple[int, int]] = {}  # name -> (method param index, path param index)

    def resolve(arg: ast.expr, function: ast.FunctionDef) -> list[str] | None:
        """The Resource constants an argument can be, or None when it is not one."""
        if isinstance(arg, ast.Name):
            if arg.id in resources:
                return [arg.id]
            if arg.id in groups:
                return groups[arg.id]
            loop = loop_bindings(function).get(arg.id)
            if loop in groups:
                return groups[loop]
        return None

    def path_resource(arg: ast.expr, function: ast.FunctionDef) -> tuple[str, bool] | None:
        """(Resource constant, names an object) for ``RES.path(ns[, name])`` or a variable assigned it."""
        if isinstance(arg, ast.Name):
            for node in own_nodes(function):
                if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == arg.id
                                                        for t in node.targets):
                    found = path_resource(node.value, function)
                    if found:
                        return found
            return None
        if (isinstance(arg, ast.Call) and isinstance(arg.func, ast.Attribute) and arg.func.attr == "path"
                and isinstance(arg.func.value, ast.Name) and arg.func.value.id in resources):
            return arg.func.value.id, len(arg.args) + len(arg.keywords) >= 2
        return None

    def add(name: str, verb: str, subresource: str | None = None) -> None:
        group, plural = resources[name]
        usage.verbs.add((group, f"{plural}/{subresource}" if subresource else plural, verb))

    for _ in range(3):  # helpers are found as their callers are walked; a few passes reach the fixed point
        usage.verbs.clear()
        usage.unresolved.clear()
        for module in mods:
            for fn in module.functions:
                qualified, function = fn.qualified, fn.node

                names = params(function) + [n for f in fn.enclosing for n in params(f)]
                for call in (n for n in own_nodes(function) if isinstance(n, ast.Call)):
                    callee = called_name(call.func)
                    subresource = next((ast.literal_eval(k.value) for k in call.keywords
                                        if k.arg == "subresource" and isinstance(k.value, ast.Constant)), None)
                    if callee in CONVENIENCES and receiver_is_client(call.func) and call.args:
                        if module.path in IMPLEMENTATIONS:
                            continue
                        first = call.args[0]
                        if isinstance(first, ast.Name) and first.id in names and resolve(first, function) is None:
                            helper, index = owner(first.id, fn)
                            convenience_helpers[helper.name] = (index, CONVENIENCES[callee], subresource)
                        elif (found := resolve(first, function)) is not None:
                            for name in found:
                                add(name, CONVENIENCES[callee], subresource)
                        elif not isinstance(first, ast.Constant):  # dict.get("key") and the like: not on a client
                            usage.unresolved.append(f"{module.path} {qualified}: {ast.unparse(call)[:80]}")
                    elif callee in convenience_helpers and not receiver_is_client(call.func):
                        index, verb, sub = convenience_helpers[callee]
                        if len(call.args) > index:
                            found = resolve(call.args[index], function)
                            if found is not None:
                                for name in found:
                                    add(name, verb, subresource or sub)
                            elif not (isinstance(call.args[index], ast.Name) and call.args[index].id in names):
                                usage.unresolved.append(f"{module.path} {qualified}: {ast.unparse(call)[:80]}")
                    if callee in informer_helpers and len(call.args) > informer_helpers[callee]:
                        arg = call.args[informer_helpers[callee]]
                        found = resolve(arg, function)
                        if found is not None:
                            for name in found:
                                add(name, "list")
                                add(name, "watch")
                        elif isinstance(arg, ast.Name) and arg.id in names:
                            helper, index = owner(arg.id, fn)
                            informer_helpers[helper.name] = index
                        elif module.path not in IMPLEMENTATIONS:
                            usage.unresolved.append(f"{module.path} {qualified}: {ast.unparse(call)[:80]}")
                    raw = callee in RAW and receiver_is_client(call.func)
                    if (raw or callee in request_helpers) and module.path not in IMPLEMENTATIONS:
                        method_at, path_at = (0, 1) if raw else request_helpers[callee]
                        if (module.path, qualified) in NOT_RESOURCES or len(call.args) <= max(method_at, path_at):
                            continue
                        method, path = call.args[method_at], call.args[path_at]
                        if isinstance(method, ast.Name) and method.id in names and isinstance(path, ast.Name) \
                                and path.id in names:
                            (helper, method_index), (_, path_index) = owner(method.id, fn), owner(path.id, fn)
                            request_helpers[helper.name] = (method_index, path_index)
                            continue
                        target = path_resource(path, function)
                        if not isinstance(method, ast.Constant) or target is None:
                            usage.unresolved.append(f"{module.path} {qualified}: {ast.unparse(call)[:80]}")
                            continue
                        name, one = target
                        add(name, ("get" if one else "list") if method.value == "GET" else METHOD_VERBS[method.value])
                # a client's request method handed over as a value (e.g. to a retrying helper)
                own = list(own_nodes(function))
                called = {id(c.func) for c in own if isinstance(c, ast.Call)}
                for node in own:
                    if (isinstance(node, ast.Attribute) and node.attr in RAW and receiver_is_client(node)
                            and module.path not in IMPLEMENTATIONS and (module.path, qualified) not in NOT_RESOURCES
                            and id(node) not in called):
                        usage.unresolved.append(f"{module.path} {qualified}: {ast.unparse(node)} passed as a value")
    return usage


def granted() -> set[Verb]:
    objects = render(MANIFESTS / "default")
    verbs: set[Verb] = set()
    for role in find(objects, "ClusterRole") + find(objects, "Role"):
        for (group, resource), allowed in rule_set(role["rules"]).items():
            verbs |= {(group, resource, verb) for verb in allowed}
    return verbs


@pytest.fixture(scope="module")
def usage() -> Usage:
    return analyse()


def by_resource(verbs: set[Verb]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for group, resource, verb in sorted(verbs):
        found.setdefault(f"{group or 'core'}/{resource}", []).append(verb)
    return found


def test_every_client_call_is_understood(usage):
    assert usage.unresolved == [], "calls on a KubeClient whose resource this test cannot tell; teach it"


def test_every_granted_verb_has_a_caller(usage):
    unused = granted() - usage.verbs
    assert not unused, f"granted but never used: {by_resource(unused)}"


def test_every_verb_used_is_granted(usage):
    missing = usage.verbs - granted()
    assert not missing, f"used but not granted: {by_resource(missing)}"


def test_the_analysis_sees_each_kind_of_call(usage):
    """The reader itself: one verb of each way the code reaches the API, so a blind reader cannot pass."""
    assert {("kmm.sigs.x-k8s.io", "modules/status", "patch"),  # client.patch(..., subresource="status")
            ("build.openshift.io", "builds", "create"),  # client.create
            ("", "configmaps", "get"),  # through ClusterTrust._get(resource, ...)
            ("operator.openshift.io", "imagecontentsourcepolicies", "watch"),  # informers(r) for r in a tuple
            ("coordination.k8s.io", "leases", "update"),  # the elector's _call("PUT", path)
            ("coordination.k8s.io", "leases", "create"),  # _call("POST", LEASES.path(namespace))
            } <= usage.verbs
    assert ("coordination.k8s.io", "leases", "list") not in usage.verbs  # a GET of one Lease is a get

