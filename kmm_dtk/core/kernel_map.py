"""The cluster's kernel -> RHCOS map, shared by the node and module reconcilers.

Several nodes may run one kernel on different RHCOS builds (a z-stream that did not change the
kernel); the latest RHCOS among them wins, because its DTK tag is the one most likely to exist and
to carry the newest toolchain. Unlike KMM, an entry disappears when no node runs its kernel.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from kmm_dtk.core.versions import NodeVersions, RhcosVersion

Labels = Mapping[str, str]
_NO_LABELS: Labels = {}

_ABSENT = object()  # "no entry", distinct from an entry whose RHCOS is unknown (None)


@dataclass(frozen=True)
class KernelEntry:
    """One kernel: its winning RHCOS (None if no node running it reports one) and its nodes.

    ``candidates`` lists every RHCOS seen with this kernel, newest first: any of their DTKs carries
    this kernel's headers, so an older one can stand in while the newest tag is not imported yet.
    """

    kernel: str
    rhcos: RhcosVersion | None
    nodes: frozenset[str]
    reasons: tuple[str, ...] = ()
    candidates: tuple[RhcosVersion, ...] = ()


class KernelMap:
    """Thread-safe kernel -> RHCOS map fed by node add/update/delete, with the labels of the nodes
    running each kernel (what a Module's selector is matched against).

    Both live under one lock because they are one fact: planning must see the nodes that fed the
    map, never a kernel whose nodes are known but whose RHCOS is not yet (or the reverse). Every
    mutator returns the kernels whose entry appeared, disappeared, changed its winning RHCOS or its
    set of candidate RHCOS (the DTK fallbacks), which is exactly what the node reconciler needs to
    decide which Modules to enqueue: a node moving between kernels and RHCOS builds that other
    nodes already run changes nothing a Module is planned from.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_node: dict[str, NodeVersions] = {}
        self._by_kernel: dict[str, dict[str, NodeVersions]] = {}
        self._winner: dict[str, RhcosVersion | None] = {}
        self._labels: dict[str, Labels] = {}  # node -> labels, for the nodes in _by_node
        # kernel -> how many of its nodes report each RHCOS: the winner is the newest of a few distinct
        # values, not of every node (an upgrade wave moves thousands of nodes one at a time)
        self._rhcos_counts: dict[str, Counter[RhcosVersion]] = {}
        self._version = 0  # bumped by every change: entries() is rebuilt only after one
        self._entries: tuple[int, dict[str, KernelEntry]] = (-1, {})

    def upsert(self, node: NodeVersions, labels: Labels = _NO_LABELS) -> set[str]:
        """Record a node's current versions and labels (a node without a kernel is treated as removed)."""
        with self._lock:
            old = self._by_node.get(node.name)
            affected = {k for k in (old.kernel if old else None, node.kernel) if k is not None}
            before = {k: self._winner.get(k, _ABSENT) for k in affected}
            candidates = self._candidates_locked(affected)
            self._detach_locked(node.name)
            if node.kernel is not None:
                self._attach_locked(node, labels)
                self._winner[node.kernel] = self._best(node.kernel)
            return self._changed_locked(before, candidates)

    def remove(self, node_name: str) -> set[str]:
        with self._lock:
            old = self._by_node.get(node_name)
            if old is None or old.kernel is None:
                return set()
            before = {old.kernel: self._winner.get(old.kernel, _ABSENT)}
            candidates = self._candidates_locked({old.kernel})
            self._detach_locked(node_name)
            return self._changed_locked(before, candidates)

    def replace_all(self, nodes: Iterable[NodeVersions | tuple[NodeVersions, Labels]]) -> set[str]:
        """Swap in a complete set of nodes, each with its labels or without (after a relist, or on a
        takeover), in one step; returns every kernel that changed."""
        latest: dict[str, tuple[NodeVersions, Labels]] = {}
        for item in nodes:  # a name listed twice: the last one counts
            node, labels = item if isinstance(item, tuple) else (item, _NO_LABELS)
            latest[node.name] = (node, labels)
        with self._lock:
            before: dict[str, object] = dict(self._winner)
            candidates = self._candidates_locked(set(self._rhcos_counts) | set(before))
            self._by_node.clear()
            self._by_kernel.clear()
            self._winner.clear()
            self._labels.clear()
            self._rhcos_counts.clear()
            self._version += 1
            for node, labels in latest.values():
                if node.kernel is not None:
                    self._attach_locked(node, labels)
            for kernel in self._by_kernel:
                self._winner[kernel] = self._best(kernel)
            for kernel in self._winner:
                before.setdefault(kernel, _ABSENT)
            candidates.update({k: frozenset() for k in self._rhcos_counts if k not in candidates})
            return self._changed_locked(before, candidates)

    def get(self, kernel: str) -> KernelEntry | None:
        with self._lock:
            return self._entry_locked(kernel) if kernel in self._winner else None

    def entries(self) -> dict[str, KernelEntry]:
        """Every kernel's entry, read under one lock so the set is consistent. Every reconcile of
        every Module asks for it, so it is built once per change of the map, not once per call."""
        with self._lock:
            if self._entries[0] != self._version:
                self._entries = (self._version, {k: self._entry_locked(k) for k in self._winner})
            return dict(self._entries[1])

    def snapshot(self) -> dict[str, RhcosVersion | None]:
        """A copy of kernel -> winning RHCOS, for callers that must not hold the lock."""
        with self._lock:
            return dict(self._winner)

    def kernels(self) -> list[str]:
        with self._lock:
            return sorted(self._winner)

    def labels_running(self, kernel: str, exclude: str | None = None) -> list[Labels]:
        """The labels of every node running ``kernel`` (but ``exclude``)."""
        with self._lock:
            return [self._labels[n] for n in self._by_kernel.get(kernel, ()) if n != exclude]

    def any_running(self, kernel: str, match: Callable[[Labels], bool], exclude: str | None = None) -> bool:
        """Whether a node running ``kernel`` (but ``exclude``) has labels that ``match``: stops at the
        first, with no copy of the labels (``match`` runs under the lock: it must be quick and pure)."""
        with self._lock:
            return any(match(self._labels[n]) for n in self._by_kernel.get(kernel, ()) if n != exclude)

    def kernel_of(self, node_name: str) -> str | None:
        with self._lock:
            node = self._by_node.get(node_name)
            return node.kernel if node else None

    def __len__(self) -> int:
        with self._lock:
            return len(self._winner)

    # -- internals; callers hold the lock ---------------------------------------------------

    def _entry_locked(self, kernel: str) -> KernelEntry:
        nodes = self._by_kernel[kernel]
        reasons = tuple(sorted(n.reason for n in nodes.values() if n.reason))
        candidates = tuple(sorted(self._rhcos_counts.get(kernel, ()), reverse=True))
        return KernelEntry(kernel, self._winner[kernel], frozenset(nodes), reasons, candidates)

    def _attach_locked(self, node: NodeVersions, labels: Labels) -> None:
        assert node.kernel is not None
        self._version += 1
        self._by_node[node.name] = node
        self._by_kernel.setdefault(node.kernel, {})[node.name] = node
        self._labels[node.name] = labels
        if node.rhcos is not None:
            self._rhcos_counts.setdefault(node.kernel, Counter())[node.rhcos] += 1

    def _detach_locked(self, node_name: str) -> None:
        self._version += 1
        self._labels.pop(node_name, None)
        old = self._by_node.pop(node_name, None)
        if old is None or old.kernel is None:
            return
        nodes = self._by_kernel.get(old.kernel, {})
        nodes.pop(node_name, None)
        counts = self._rhcos_counts.get(old.kernel)
        if counts is not None and old.rhcos is not None:
            counts[old.rhcos] -= 1
            if counts[old.rhcos] <= 0:
                del counts[old.rhcos]
        if nodes:
            self._winner[old.kernel] = self._best(old.kernel)
        else:
            self._by_kernel.pop(old.kernel, None)
            self._winner.pop(old.kernel, None)
            self._rhcos_counts.pop(old.kernel, None)

    def _candidates_locked(self, kernels: Iterable[str]) -> dict[str, frozenset[RhcosVersion]]:
        return {k: frozenset(self._rhcos_counts.get(k, ())) for k in kernels}

    def _changed_locked(self, before: dict[str, object],
                        candidates: dict[str, frozenset[RhcosVersion]]) -> set[str]:
        """Kernels whose winner changed, or whose set of candidate RHCOS did."""
        return ({k for k, was in before.items() if self._winner.get(k, _ABSENT) != was}
                | {k for k, was in candidates.items() if frozenset(self._rhcos_counts.get(k, ())) != was})

    def _best(self, kernel: str) -> RhcosVersion | None:
        counts = self._rhcos_counts.get(kernel)
        return max(counts) if counts else None
