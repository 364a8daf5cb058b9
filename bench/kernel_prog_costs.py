#!/usr/bin/env python3
"""Kernel mode, per event: the CPU time each BPF program of `leaktrace kernel`
takes while the syscall loops of kernel_syscalls.py run, from the kernel's own
run-time statistics (BPF_ENABLE_STATS, held on only during the loop).

Prints, per loop: untraced and traced ops/s, then each program's runs and mean
ns per run. Runs count every process's events (the probes are system-wide), so
compare per-run means, not totals, across loops or machines. The statistics
add their own two clock reads (~50 ns) to every run.

Run as root from the repository: .venv/bin/python bench/kernel_prog_costs.py [--full-stacks]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kernel_syscalls import LOOPS, build, ops_per_s  # noqa: E402
from leaktrace.base.config import ProbeConfig  # noqa: E402
from leaktrace.probes import progstats  # noqa: E402
from leaktrace.probes.kernel import KernelProbe  # noqa: E402


def program_costs(probe: KernelProbe, run) -> dict:
    """{program: (runs, ns)} over run(); also returns run()'s result under "result"."""
    before = {name: progstats.run_stats(f.fd) for name, f in probe.bpf.funcs.items()}
    result = run()
    costs = {}
    for name, function in probe.bpf.funcs.items():
        start, end = before[name], progstats.run_stats(function.fd)
        if start and end and end[1] > start[1]:
            costs[name.decode()] = (end[1] - start[1], end[0] - start[0])
    return {"result": result, **costs}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--full-stacks", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: tracing needs it")
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        untraced = {loop: ops_per_s(binary, loop, args.seconds, 1) for loop in LOOPS}
        probe = KernelProbe(ProbeConfig(), full_stacks=args.full_stacks)
        probe.attach()
        stats = progstats.enable_run_stats()
        try:
            for loop in LOOPS:
                costs = program_costs(probe, lambda: ops_per_s(binary, loop, args.seconds, 1))
                rate = costs.pop("result")
                print(f"{loop}: {untraced[loop]:,.0f} -> {rate:,.0f} ops/s ({untraced[loop] / rate:.2f}x)")
                for name, (runs, ns) in sorted(costs.items(), key=lambda item: -item[1][1]):
                    print(f"  {name:<45}{runs:>10,} runs {ns / runs:>8,.0f} ns")
        finally:
            if stats is not None:
                os.close(stats)
            probe.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
