"""The kernel -> RHCOS map fed by the node reconciler (kmm_dtk.core.kernel_map)."""

from __future__ import annotations

import sys
import threading

from kmm_dtk.core.kernel_map import KernelEntry, KernelMap
from kmm_dtk.core.versions import NodeVersions, parse_rhcos

EL8_4 = "4.18.0-305.49.1.el8_4.x86_64"
EL8_6 = "4.18.0-372.16.1.el8_6.x86_64"
EL9_6 = "5.14.0-570.27.1.el9_6.x86_64"
EL9_6_64K = "5.14.0-570.73.1.el9_6.aarch64+64k"

R410 = "410.84.202207140725-0"
R411 = "411.86.202207260413-0"
R418 = "418.94.202410260038-0"
R96_0 = "9.6.20250715-0"
EL9_4 = "5.14.0-427.13.1.el9_4.x86_64"
R94 = "9.4.20240523-0"
R96_1 = "9.6.20260303-1"


def nv(name: str, kernel: str | None, rhcos: str | None = None, reason: str | None = None) -> NodeVersions:
    return NodeVersions(name, kernel, parse_rhcos(rhcos) if rhcos else None, reason)


def winners(km: KernelMap) -> dict[str, str | None]:
    return {k: (str(v) if v is not None else None) for k, v in km.snapshot().items()}


def test_empty_map():
    km = KernelMap()
    assert len(km) == 0
    assert km.snapshot() == {}
    assert km.entries() == {}
    assert km.get(EL9_6) is None
    assert km.kernel_of("worker-0") is None
    assert km.remove("worker-0") == set()


def test_latest_rhcos_among_nodes_of_a_kernel_wins():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    km.upsert(nv("worker-1", EL9_6, R96_1))
    km.upsert(nv("worker-2", EL9_6, R96_0))
    assert winners(km) == {EL9_6: R96_1}
    entry = km.get(EL9_6)
    assert entry == KernelEntry(EL9_6, parse_rhcos(R96_1), frozenset({"worker-0", "worker-1", "worker-2"}),
                                candidates=(parse_rhcos(R96_1), parse_rhcos(R96_0)))


def test_new_scheme_beats_old_scheme_for_the_same_kernel():
    km = KernelMap()
    km.upsert(nv("a", EL9_6, R96_0))
    km.upsert(nv("b", EL9_6, R418))  # numerically larger leading number, but older
    assert winners(km) == {EL9_6: R96_0}


def test_upsert_returns_kernels_that_appear():
    km = KernelMap()
    assert km.upsert(nv("worker-0", EL8_4, R410)) == {EL8_4}
    assert km.upsert(nv("worker-1", EL8_6, R411)) == {EL8_6}
    assert km.kernel_of("worker-0") == EL8_4


def test_upsert_of_an_unchanged_node_returns_nothing():
    km = KernelMap()
    km.upsert(nv("worker-0", EL8_4, R410))
    assert km.upsert(nv("worker-0", EL8_4, R410)) == set()


def test_second_node_on_same_kernel_and_rhcos_changes_nothing_an_older_rhcos_is_a_new_candidate():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_1))
    assert km.upsert(nv("worker-1", EL9_6, R96_1)) == set()
    # the winner stays, but the older RHCOS's DTK may now stand in for a missing newest tag
    assert km.upsert(nv("worker-2", EL9_6, R96_0)) == {EL9_6}
    assert km.upsert(nv("worker-3", EL9_6, R96_0)) == set()
    assert km.get(EL9_6).nodes == frozenset({"worker-0", "worker-1", "worker-2", "worker-3"})
    assert tuple(map(str, km.get(EL9_6).candidates)) == (R96_1, R96_0)


def test_a_node_moving_between_kernels_and_rhcos_that_others_run_changes_nothing():
    """An upgrade wave: only the first node onto a kernel and the last node off one change the map."""
    km = KernelMap()
    km.upsert(nv("a", EL9_6, R96_0))
    km.upsert(nv("b", EL9_6, R96_0))
    km.upsert(nv("c", EL9_6, R96_0))
    assert km.upsert(nv("a", EL9_4, R94)) == {EL9_4}  # a new kernel; EL9_6's entry is as it was
    assert km.upsert(nv("b", EL9_4, R94)) == set()
    assert km.upsert(nv("c", EL9_4, R94)) == {EL9_6}  # the last node leaves EL9_6
    assert km.upsert(nv("c", EL9_4, R94)) == set()  # the same again: nothing
    assert km.remove("c") == set() and km.remove("b") == set()
    assert km.remove("a") == {EL9_4}


def test_newer_rhcos_on_same_kernel_is_a_change():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    assert km.upsert(nv("worker-1", EL9_6, R96_1)) == {EL9_6}
    assert winners(km) == {EL9_6: R96_1}


def test_rhcos_update_on_the_only_node_is_a_change():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    assert km.upsert(nv("worker-0", EL9_6, R96_1)) == {EL9_6}
    assert km.upsert(nv("worker-0", EL9_6, None, "node worker-0: osImage unreadable")) == {EL9_6}
    assert winners(km) == {EL9_6: None}


def test_node_moving_kernel_changes_both():
    km = KernelMap()
    km.upsert(nv("worker-0", EL8_4, R410))
    km.upsert(nv("worker-1", EL8_6, R411))
    # worker-0 reboots into the new RHCOS and kernel: el8_4 loses its last node, el8_6 is unchanged.
    assert km.upsert(nv("worker-0", EL8_6, R411)) == {EL8_4}
    assert winners(km) == {EL8_6: R411}
    assert km.get(EL8_4) is None
    # A sole node moving to a brand-new kernel: the old entry goes, the new one appears.
    assert km.upsert(nv("worker-1", EL9_6, R96_0)) == {EL9_6}
    assert km.upsert(nv("worker-0", EL9_6_64K, R96_1)) == {EL8_6, EL9_6_64K}
    assert winners(km) == {EL9_6: R96_0, EL9_6_64K: R96_1}


def test_node_moving_kernel_lowers_the_winner_it_leaves_behind():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_1))
    km.upsert(nv("worker-1", EL9_6, R96_0))
    assert km.upsert(nv("worker-0", EL9_6_64K, R96_1)) == {EL9_6, EL9_6_64K}
    assert winners(km) == {EL9_6: R96_0, EL9_6_64K: R96_1}


def test_upsert_without_kernel_acts_as_remove():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    assert km.upsert(nv("worker-0", None, None, "node worker-0: no kernel")) == {EL9_6}
    assert len(km) == 0
    assert km.kernel_of("worker-0") is None


def test_remove_drops_entry_with_its_last_node():
    km = KernelMap()
    km.upsert(nv("worker-0", EL8_4, R410))
    km.upsert(nv("worker-1", EL8_4, R410))
    assert km.remove("worker-0") == set()
    assert km.get(EL8_4).nodes == frozenset({"worker-1"})
    assert km.remove("worker-1") == {EL8_4}
    assert km.get(EL8_4) is None
    assert EL8_4 not in km.snapshot()
    assert km.remove("worker-1") == set()  # already gone


def test_remove_of_winner_falls_back_to_next_best():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    km.upsert(nv("worker-1", EL9_6, R96_1))
    assert km.remove("worker-1") == {EL9_6}
    assert winners(km) == {EL9_6: R96_0}


def test_remove_unknown_node_changes_nothing():
    km = KernelMap()
    km.upsert(nv("worker-0", EL9_6, R96_0))
    assert km.remove("worker-9") == set()
    assert winners(km) == {EL9_6: R96_0}


def test_entry_with_unknown_rhcos_keeps_reasons():
    km = KernelMap()
    assert km.upsert(nv("worker-0", EL9_6, None, "node worker-0: bad osImage")) == {EL9_6}
    entry = km.get(EL9_6)
    assert entry.rhcos is None
    assert entry.reasons == ("node worker-0: bad osImage",)
    # A node on the same kernel that reports a version gives the kernel an RHCOS.
    assert km.upsert(nv("worker-1", EL9_6, R96_0)) == {EL9_6}
    assert str(km.get(EL9_6).rhcos) == R96_0
    assert km.get(EL9_6).reasons == ("node worker-0: bad osImage",)


def test_replace_all_returns_exactly_the_changed_kernels():
    km = KernelMap()
    km.replace_all([nv("w0", EL8_4, R410), nv("w1", EL8_6, R411), nv("w2", EL9_6, R96_0)])
    assert winners(km) == {EL8_4: R410, EL8_6: R411, EL9_6: R96_0}
    changed = km.replace_all([
        nv("w1", EL8_6, R411),  # unchanged
        nv("w2", EL9_6, R96_1),  # RHCOS changed
        nv("w3", EL9_6_64K, R96_1),  # appears
        nv("w4", None, None, "no kernel"),  # ignored
    ])  # EL8_4 disappears
    assert changed == {EL8_4, EL9_6, EL9_6_64K}
    assert winners(km) == {EL8_6: R411, EL9_6: R96_1, EL9_6_64K: R96_1}
    assert km.kernel_of("w0") is None
    assert km.kernel_of("w4") is None


def test_replace_all_with_the_same_nodes_returns_nothing():
    nodes = [nv("w0", EL8_4, R410), nv("w1", EL8_6, R411)]
    km = KernelMap()
    assert km.replace_all(nodes) == {EL8_4, EL8_6}
    assert km.replace_all(list(reversed(nodes))) == set()
    assert km.replace_all([]) == {EL8_4, EL8_6}
    assert len(km) == 0


def test_entries_snapshot_is_a_copy():
    km = KernelMap()
    km.upsert(nv("w0", EL9_6, R96_0))
    snap = km.snapshot()
    entries = km.entries()
    km.remove("w0")
    assert EL9_6 in snap and EL9_6 in entries
    assert km.snapshot() == {}


def test_replace_all_with_duplicate_node_name_keeps_only_the_last():
    km = KernelMap()
    km.replace_all([nv("w0", EL8_4, R410), nv("w0", EL8_6, R411)])
    km.remove("w0")
    assert km.snapshot() == {}


# -- concurrency ------------------------------------------------------------------------------

def test_concurrent_upserts_and_removes_end_in_the_expected_state():
    kernels = [EL8_4, EL8_6, EL9_6, EL9_6_64K]
    versions = [R410, R411, R418, R96_0, R96_1]
    threads_n, nodes_per_thread, rounds = 16, 12, 20
    km = KernelMap()
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []
    reported: list[set[str]] = []

    def final_state(t: int, i: int) -> tuple[str, str] | None:
        # Every third node ends removed; the rest end on a deterministic kernel/RHCOS.
        if i % 3 == 0:
            return None
        return kernels[(t + i) % len(kernels)], versions[(t * i) % len(versions)]

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for r in range(rounds):
                for i in range(nodes_per_thread):
                    name = f"t{t}-n{i}"
                    reported.append(km.upsert(
                        nv(name, kernels[(t + i + r) % len(kernels)], versions[(i + r) % len(versions)])))
                    if r % 2:
                        reported.append(km.remove(name))
                    # Readers run concurrently with writers and must always see a consistent map.
                    for kernel, entry in km.entries().items():
                        assert entry.nodes, kernel
            for i in range(nodes_per_thread):
                name = f"t{t}-n{i}"
                state = final_state(t, i)
                if state is None:
                    reported.append(km.remove(name))
                else:
                    reported.append(km.upsert(nv(name, *state)))
        except BaseException as err:  # noqa: BLE001 - surfaced by the main thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    # Switch threads as often as the interpreter allows, so unlocked read-modify-write sequences
    # would interleave.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert not errors, errors

    expected_nodes: dict[str, set[str]] = {}
    expected_best: dict[str, str] = {}
    for t in range(threads_n):
        for i in range(nodes_per_thread):
            state = final_state(t, i)
            if state is None:
                continue
            kernel, rhcos = state
            expected_nodes.setdefault(kernel, set()).add(f"t{t}-n{i}")
            best = expected_best.get(kernel)
            if best is None or parse_rhcos(rhcos) > parse_rhcos(best):
                expected_best[kernel] = rhcos
    assert winners(km) == expected_best
    # No change notification is lost: every kernel present at the end was reported at least once.
    assert set(expected_best) <= set().union(*reported)
    assert {k: set(e.nodes) for k, e in km.entries().items()} == expected_nodes
    for t in range(threads_n):
        for i in range(nodes_per_thread):
            state = final_state(t, i)
            assert km.kernel_of(f"t{t}-n{i}") == (state[0] if state else None)
