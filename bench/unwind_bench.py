#!/usr/bin/env python3
"""Per-event cost of stack collection: frame-pointer walk vs CFI walk, one run.

Traces bench/malloc_free.c (malloc(64)+free pairs; the binary is built -O2
without frame pointers, like Debian's libc) with `leaktrace attach --unwind fp`
(bpf_get_stackid) and `--unwind cfi` (bpf/unwind.h), interleaved over
--rounds, and prints ns per pair, the overhead over untraced and the extra
cost per event of the CFI walk. Each traced malloc records one stack, so
the difference is the per-allocation cost of the walk plus its dedup lookup.
Run as root from the repository: .venv/bin/python bench/unwind_bench.py
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

from malloc_bench import build, run_tracer, run_untraced  # noqa: E402
from leaktrace.probes import headers  # noqa: E402

MODES = ("fp", "cfi")


def trace_with(binary: str, pairs: int, threads: int, unwind: str):
    leaktrace = [str(REPO / ".venv/bin/leaktrace")]
    argv = lambda pid: leaktrace + ["attach", "-p", str(pid), "3600", "--older-than", "0",  # noqa: E731
                                    "--unwind", unwind]
    return run_tracer(binary, pairs, threads, argv, "leaktrace: tracing")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5_000_000, help="untraced loop length")
    parser.add_argument("--traced-pairs", type=int, default=300_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("unwind_bench.py: run as root")
    headers.ensure_kernel_source(lambda msg: None)
    samples = {mode: [] for mode in ("untraced",) + MODES}
    attach = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        for _ in range(args.rounds):
            samples["untraced"].append(run_untraced(binary, args.pairs, args.threads)[0])
            for mode in MODES:
                ns, attach_s = trace_with(binary, args.traced_pairs, args.threads, mode)
                samples[mode].append(ns)
                attach[mode].append(attach_s)
    print_table(samples, attach, args)
    return 0


def print_table(samples: dict, attach: dict, args) -> None:
    base = statistics.median(samples["untraced"])
    print(f"malloc(64)+free pairs, {args.threads} thread(s), {args.rounds} rounds (medians); "
          "overhead = ns/pair minus untraced")
    print(f"{'mode':12} {'ns/pair':>10} {'overhead':>10} {'attach s':>9}  samples")
    for mode, values in samples.items():
        ns = statistics.median(values)
        attach_s = f"{statistics.median(attach[mode]):.2f}" if mode in attach else ""
        print(f"{mode:12} {ns:10.1f} {ns - base:10.1f} {attach_s:>9}  "
              + " ".join(f"{v:.0f}" for v in values))
    fp, cfi = (statistics.median(samples[m]) for m in MODES)
    print(f"CFI walk costs {cfi - fp:+.0f} ns per allocation over the frame-pointer walk "
          f"({(cfi - base) / (fp - base):.2f}x the fp overhead)")


if __name__ == "__main__":
    sys.exit(main())
