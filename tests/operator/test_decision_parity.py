"""The operator and ``kmm-dtk plan --check-registry`` carry out a plan the same way: both go through
``core.decision.decide``. Here both run on the same cluster objects and the same registry answers
(one answer pair per Module), and every kernel of every Module must come out the same."""

from __future__ import annotations

from kubernetes import client

from kmm_dtk.core.decision import with_registry_answers
from kmm_dtk.core.plan import Action, PlanEntry, plan_cluster, snapshot_from_objects
from kmm_dtk.core.verdicts import DtkCheck, DtkState, ImageCheck, ImageState
from tests.operator.conftest import BUILD_GROUP, BUILD_PLURAL, BUILD_VERSION, module_body
from tests.support.controlplane import wait_for
from tests.support.objects import DTK_GROUP, DTK_PLURAL, DTK_VERSION, MODULE_GROUP, MODULE_PLURAL, MODULE_VERSION

CASES = {  # Module name -> (image answer, DTK answer)
    "current": (ImageState.CURRENT, DtkState.MATCHES),
    "foreign": (ImageState.FOREIGN, DtkState.MISMATCH),
    "missing": (ImageState.MISSING, DtkState.MATCHES),
    "outdated": (ImageState.OUTDATED, DtkState.MATCHES),
    "unknown": (ImageState.UNKNOWN, DtkState.MATCHES),
    "mismatch": (ImageState.MISSING, DtkState.MISMATCH),
    "dtk-unknown": (ImageState.OUTDATED, DtkState.UNKNOWN),
    "unverified": (ImageState.MISSING, DtkState.UNVERIFIED),
}
# What the operator records for each action of the plan.
PHASE_OF = {Action.SKIP: "Exists", Action.WAIT: "Waiting", Action.ERROR: "Error", Action.BUILD: "Pending"}


class ScriptedAnswers:
    """The registry's answers, by Module name: the same object answers both sides."""

    def check(self, entry: PlanEntry) -> ImageCheck:
        state = CASES[entry.module.split("/", 1)[1]][0]
        return ImageCheck(state, f"image {state.value.lower()}")

    def check_dtk(self, entry: PlanEntry) -> DtkCheck:
        state = CASES[entry.module.split("/", 1)[1]][1]
        return DtkCheck(state, f"dtk {state.value.lower()}")

    def invalidate(self, image: str) -> None:
        pass

    def auth_problems(self, entry: PlanEntry) -> tuple[str, ...]:
        return ()


def test_operator_and_plan_check_registry_agree(scenario, run_operator, api):
    for name in CASES:
        scenario.create_module(module_body(scenario.namespace, name))
    run_operator(checker=ScriptedAnswers())
    kernels = set(scenario.nodes.values())
    wait_for(lambda: all(set(scenario.kernel_status(name)) == kernels for name in CASES), 30,
             "a status record for every kernel of every Module")

    # The plan side reads the same objects, as `oc get ... -o yaml` would give them to `kmm-dtk plan`.
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    nodes = [api.sanitize_for_serialization(n) for n in core.list_node().items]
    stream = custom.get_namespaced_custom_object(DTK_GROUP, DTK_VERSION, scenario.namespace, DTK_PLURAL,
                                                 "driver-toolkit")
    configmaps = [api.sanitize_for_serialization(c) for c in core.list_namespaced_config_map(scenario.namespace).items]
    modules = custom.list_namespaced_custom_object(MODULE_GROUP, MODULE_VERSION, scenario.namespace,
                                                   MODULE_PLURAL)["items"]
    snapshot, _ = snapshot_from_objects(nodes, stream, configmaps, (scenario.namespace, "driver-toolkit"))
    planned = with_registry_answers(list(plan_cluster(modules, snapshot).entries), ScriptedAnswers())

    compared = 0
    for entry in planned:
        if entry.kernel not in kernels:
            continue
        record = scenario.kernel_status(entry.module.split("/", 1)[1])[entry.kernel]
        assert record["phase"] == PHASE_OF[entry.action], (entry.module, entry.kernel, record, entry)
        if entry.action in (Action.WAIT, Action.ERROR):
            assert record["reason"] == entry.reason_code.value and entry.reason in record["message"]
        if entry.action is Action.SKIP:
            assert record["message"] == entry.reason
        compared += 1
    assert compared == len(CASES) * len(kernels)
    builds = custom.list_namespaced_custom_object(BUILD_GROUP, BUILD_VERSION, scenario.namespace, BUILD_PLURAL)["items"]
    built = {(b["metadata"]["annotations"]["kmm-dtk.io/module"], b["metadata"]["annotations"]["kmm-dtk.io/kernel"])
             for b in builds}
    assert built == {(e.module.split("/", 1)[1], e.kernel) for e in planned
                     if e.action is Action.BUILD and e.kernel in kernels}
