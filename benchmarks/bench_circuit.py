"""Circuit-solve time for a 3×3 PCU array, against a generic root finder.

The array is A5 in vmm mode (every M2 in LRS), three word lines driven at different
voltages and three bit lines held at 0 V, with every cell's pads in the network
(sneak paths included). Baseline, same run: scipy.optimize.root (MINPACK hybrd,
finite-difference Jacobian) on the same nodal equations; the solver's reference engine
(np.add.at stamps, ``solve(fast=False)``) is listed too.

    python benchmarks/bench_circuit.py
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import root

from _table import best_of, report
from labpcu.sim.bench import SimBench
from labpcu.sim.circuit import _conductance_matrix, _node_currents, solve

TERMS = ["k2612a.smua", "k2612a.smub", "b1500a.1", "b1500a.2", "b1500a.3", "b1500a.4"]
PADS = ["A5.WL1", "A5.WL2", "A5.WL3", "A5.BL1", "A5.BL2", "A5.BL3"]


def array_bench() -> SimBench:
    bench = SimBench(seed=0, site="A5")
    for did in bench.site.devices:
        m2 = bench.wafer.device(did).m2
        m2.set(0.0)
        m2.fix_strength(1e-3)
    pins = {name: pin for pin, (name, _) in bench.pins().items()}
    bench.close_relays([(1, row + 1, pins[pad]) for row, pad in enumerate(PADS)])
    for term, v in zip(TERMS, [1.0, 0.9, 0.8, 0.0, 0.0, 0.0]):
        bench.set_source(term, output=True, mode="v", level=v, limit=0.1)
    return bench


def main() -> None:
    bench = array_bench()
    net, _ = bench._netlist(noisy=False)
    n_iter = solve(net).iterations
    cold = best_of(lambda: solve(net), repeat=50)
    warm_v = solve(net).v
    warm = best_of(lambda: solve(net, warm_v), repeat=50)
    ref_cold = best_of(lambda: solve(net, fast=False), repeat=50)
    ref_warm = best_of(lambda: solve(net, warm_v, fast=False), repeat=50)

    # baseline: generic root finder on the same equations
    G = _conductance_matrix(net)
    fixed = {int(n): float(v) for n, v in zip(net.src_node, net.src_level)}
    free = np.array([k for k in range(1, net.n_nodes) if k not in fixed])

    def residual(x):
        v = np.zeros(net.n_nodes)
        for k, val in fixed.items():
            v[k] = val
        v[free] = x
        out, _, _ = _node_currents(net, G, v)
        return out[free] * 1e6  # µA, better scaled for MINPACK

    x0 = np.zeros(len(free))
    sol_ref = root(residual, x0, method="hybr")
    base = best_of(lambda: root(residual, x0, method="hybr"), repeat=5)
    ours = solve(net)
    agree = float(np.max(np.abs(ours.v[free] - sol_ref.x)))

    rows = [
        {"case": "labpcu Newton, cold start", "nodes": net.n_nodes - 1, "iterations": n_iter, "time_ms": cold * 1e3, "speed-up vs baseline": base / cold},
        {"case": "labpcu Newton, warm start", "nodes": net.n_nodes - 1, "iterations": solve(net, warm_v).iterations, "time_ms": warm * 1e3, "speed-up vs baseline": base / warm},
        {"case": "labpcu Newton, reference engine, cold", "nodes": net.n_nodes - 1, "iterations": solve(net, fast=False).iterations, "time_ms": ref_cold * 1e3, "speed-up vs baseline": base / ref_cold},
        {"case": "labpcu Newton, reference engine, warm", "nodes": net.n_nodes - 1, "iterations": solve(net, warm_v, fast=False).iterations, "time_ms": ref_warm * 1e3, "speed-up vs baseline": base / ref_warm},
        {"case": "baseline scipy root(hybr)", "nodes": net.n_nodes - 1, "iterations": int(sol_ref.nfev), "time_ms": base * 1e3, "speed-up vs baseline": 1.0},
    ]
    path = report(f"3×3 array circuit solve (solutions agree within {agree:.1e} V; hybr success={sol_ref.success})", rows, "circuit.json")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
