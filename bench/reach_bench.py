#!/usr/bin/env python3
"""Reachability scan time per GiB of target memory.

bench/reach_target.c allocates MIB mebibytes in blocks of BLOCK bytes under
`leaktrace attach --reachability`, keeps nine blocks in ten in a global array
(every 8th word of a block points at another kept block) and drops the tenth.
Ctrl-C then asks for the final report, which stops the target, copies its
memory, resumes it and classifies every block. The figures come from that
report's own `reachability` header: bytes read, the whole scan's time and how
long the target was stopped; the bench checks that the dropped blocks were
found unreferenced.

--offline times the classification alone, in this process, on a synthetic
copy of the same shape (no root, no target): its CPU time does not depend
on what else the machine runs, unlike the wall times of a live scan.

Run as root from the repository: .venv/bin/python bench/reach_bench.py
(options: --mib 256 1024, --block 65536 4096, --rounds 1, --offline)
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report_time import wait_for  # this folder is on sys.path when run as a script

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
GIB = 1 << 30


def measure(binary: str, mib: int, block: int) -> dict:
    target = subprocess.Popen([binary, str(mib), str(block)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    leaktrace = [str(REPO / ".venv" / "bin" / "leaktrace"), "attach", "-p", str(target.pid), "--format",
                 "json", "--older-than", "0", "--reachability", "--reachability-max-mb", str(4 * mib + 256),
                 "--max-allocs", str(max(1 << 20, 2 * (mib << 20) // block)), "3600"]
    tracer = subprocess.Popen(leaktrace, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(tracer.stderr, "leaktrace: tracing")
        target.stdin.write("go\n")
        target.stdin.flush()
        done = wait_for(target.stdout, "done")
        tracer.send_signal(signal.SIGINT)
        out, err = tracer.communicate(timeout=1800)
    finally:
        target.stdin.close()
        target.wait()
    if tracer.returncode != 0:
        raise RuntimeError(f"leaktrace failed: {err[-2000:]}")
    final = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    lost = int(done.split("lost=")[1])
    return {"reach": final["reachability"], "lost": lost, "blocks": int(done.split("blocks=")[1].split()[0])}


def offline(mib: int, block: int) -> str:
    """Classify a synthetic copy shaped like reach_target's heap: wall and CPU seconds."""
    import numpy as np

    sys.path.insert(0, str(REPO))
    from leaktrace.base.model import UNREFERENCED, Allocation, StackKey
    from leaktrace.judge.reach.memory import HEAP, ROOT, Segment
    from leaktrace.judge.reach.scan import Copy, judge_blocks

    count, words, base = (mib << 20) // block, block // 8, 0x5555_0000_0000
    rng = np.random.default_rng(1)
    heap = rng.integers(0, 0xFFFF, size=count * words, dtype=np.uint64)
    kept = np.array([i for i in range(count) if i % 10 != 9])
    heap[::8] = base + (rng.choice(kept, size=len(heap[::8])) * block).astype(np.uint64)
    blocks = [Allocation(1, base + i * block, block, i, StackKey(1, 1)) for i in range(count)]
    roots = (base + kept * block).astype(np.uint64).tobytes()
    copy = Copy((Segment(base, heap.tobytes(), HEAP), Segment(0, roots, ROOT)), 0.0, 1)
    del heap
    wall, cpu = time.monotonic(), time.process_time()
    classes, _ = judge_blocks(blocks, blocks, {1: copy}, untracked_is_root=False)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    lost = sum(1 for c in classes if c == UNREFERENCED)
    gib = (mib << 20) / GIB
    return (f"{mib:10}  {block:7}  {count:7}  classify wall {wall:6.2f} s ({wall / gib:5.2f} s/GiB), "
            f"CPU {cpu:6.2f} s ({cpu / gib:5.2f} s/GiB)  {lost} of {count - len(kept)} dropped")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--block", type=int, nargs="+", default=[65536, 4096])
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--offline", action="store_true", help="time the classification alone")
    args = parser.parse_args()
    if args.offline:
        print("target MiB  block B   blocks")
        for block in args.block:
            for mib in args.mib:
                print(offline(mib, block), flush=True)
        return 0
    if os.geteuid() != 0:
        sys.exit("reach_bench.py: run as root")
    print("target MiB  block B   blocks   read MiB  scan s  s/GiB  frozen s  frozen s/GiB  unreferenced")
    with tempfile.TemporaryDirectory() as tmp:
        binary = os.path.join(tmp, "reach_target")
        subprocess.run(["gcc", "-O1", "-o", binary, str(HERE / "reach_target.c")], check=True)
        for _ in range(args.rounds):
            for block in args.block:
                for mib in args.mib:
                    got = measure(binary, mib, block)
                    r = got["reach"]
                    gib = r["scanned_bytes"] / GIB
                    found = r["unreferenced"]["count"]
                    print(f"{mib:10}  {block:7}  {got['blocks']:7}  {r['scanned_bytes'] / (1 << 20):9.0f}  "
                          f"{r['elapsed_s']:6.2f}  {r['elapsed_s'] / gib:5.2f}  {r['frozen_s']:8.2f}  "
                          f"{r['frozen_s'] / gib:12.2f}  {found} of {got['lost']} dropped"
                          + ("" if r["problems"] == [] else f"  problems: {r['problems']}"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
