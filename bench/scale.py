"""How the operator's figures grow with the number of Nodes, the rest of the cluster fixed.

Runs ``bench.operator_bench`` once per size (each its own control plane, one after the other),
reads each run's last line (a JSON object), prints the figures by size and a least-squares line
per figure (slope per 1,000 Nodes, intercept) with its extrapolation to 50,000 Nodes.

    python -m bench.scale --nodes 1000,2500,5000 [operator_bench flags, e.g. --steady-seconds 30 --waves 2]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

FIGURES = [  # (JSON key, label, unit)
    ("cold_start_s", "cold start", "s"),
    ("ceiling_s", "ceiling (same Builds)", "s"),
    ("wave_total_s", "wave: first patch -> last Build", "s"),
    ("wave_drain_s", "wave drain", "s"),
    ("rss_mib", "RSS at the end", "MiB"),
    ("rss_after_wave_n_mib", "RSS after the last wave", "MiB"),
    ("node_reconcile_ms", "node reconcile mean", "ms"),
    ("single_node_p99_ms", "single Node -> last Build, p99", "ms"),
    ("cpu_s_per_1000_builds", "CPU per 1,000 Builds", "s"),
]
FITTED = ("cold_start_s", "rss_mib", "node_reconcile_ms", "wave_total_s")
EXTRAPOLATE_TO = 50_000


def fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares line y = slope * x + intercept (slope 0 when every x is the same)."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return slope, my - slope * mx


def run(nodes: int, extra: list[str]) -> dict[str, Any]:
    """One operator bench at ``nodes``; its progress goes to our stderr, its table to our stdout."""
    command = [sys.executable, "-m", "bench.operator_bench", "--nodes", str(nodes), *extra]
    print(f"== {' '.join(command[1:])}", file=sys.stderr, flush=True)
    proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    print("\n".join(lines[:-1]), flush=True)
    return dict(json.loads(lines[-1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--nodes", default="1000,2500,5000", help="comma-separated Node counts")
    args, extra = parser.parse_known_args()
    sizes = sorted(int(n) for n in args.nodes.split(","))
    runs = [run(n, extra) for n in sizes]

    print(f"\nBy number of Nodes (population, Modules and pairs fixed: {runs[0].get('modules')} Modules, "
          f"{runs[0].get('pairs')} pairs, {runs[0].get('configmaps')} ConfigMaps, "
          f"{runs[0].get('foreign_builds')} other Builds)\n")
    width = max(len(f"{label} ({unit})") for _, label, unit in FIGURES)
    print(f"{'figure':<{width}}  " + "  ".join(f"{n:>9}" for n in sizes))
    print("-" * (width + 11 * len(sizes)))
    for key, label, unit in FIGURES:
        cells = "  ".join(f"{r.get(key, float('nan')):>9.2f}" for r in runs)
        print(f"{f'{label} ({unit})':<{width}}  {cells}")

    fits: dict[str, Any] = {}
    if len(sizes) >= 2:
        print(f"\nLeast-squares line per figure, and its value at {EXTRAPOLATE_TO:,} Nodes\n")
        print(f"{'figure':<{width}}  {'per 1,000 Nodes':>15}  {'intercept':>10}  {f'at {EXTRAPOLATE_TO:,}':>10}")
        print("-" * (width + 43))
        for key, label, unit in FIGURES:
            if key not in FITTED:
                continue
            slope, intercept = fit([float(n) for n in sizes], [float(r[key]) for r in runs])
            at = slope * EXTRAPOLATE_TO + intercept
            fits[key] = {"slope_per_1000": round(slope * 1000, 4), "intercept": round(intercept, 4),
                         f"at_{EXTRAPOLATE_TO}": round(at, 2)}
            print(f"{f'{label} ({unit})':<{width}}  {slope * 1000:>15.3f}  {intercept:>10.2f}  {at:>10.1f}")
    print(json.dumps({"nodes": sizes, "runs": runs, "fits": fits}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
