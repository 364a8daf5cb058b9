#!/usr/bin/env python3
"""Per malloc/free pair cost: untraced, empty probes, leaktrace, bcc memleak.

All in one run on the same binary, so the ratios compare like with like.
Run as root from the repository: .venv/bin/python bench/malloc_bench.py
Options: --pairs N (untraced loop length; traced runs use --traced-pairs),
--threads T, --skip-memleak.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from leaktrace.probes import headers  # noqa: E402

MEMLEAK = "/usr/sbin/memleak-bpfcc"
LIBC = "/lib/x86_64-linux-gnu/libc.so.6"


def build(out_dir: str) -> str:
    binary = os.path.join(out_dir, "malloc_free")
    subprocess.run(["gcc", "-O2", "-pthread", "-o", binary, str(HERE / "malloc_free.c")], check=True)
    return binary


def start_target(binary: str, pairs: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen([binary, str(pairs), str(threads)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def finish_target(proc: subprocess.Popen) -> float:
    proc.stdin.write("go\n")
    proc.stdin.flush()
    for line in proc.stdout:
        if line.startswith("ns_per_pair="):
            proc.wait()
            return float(line.split("=")[1])
    raise RuntimeError("benchmark program printed no result")


def wait_for_line(stream, needle: str, timeout: float = 60) -> float:
    """Seconds until a line containing needle appears on stream."""
    start = time.monotonic()
    for line in stream:
        if needle in line:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            break
    raise RuntimeError(f"tracer never printed {needle!r}")


def run_untraced(binary, pairs, threads):
    return finish_target(start_target(binary, pairs, threads)), None


def run_floor(binary, pairs, threads, free_offset: int):
    """Empty entry+return probes on malloc, empty entry probe on free."""
    import bcc

    proc = start_target(binary, pairs, threads)
    bpf = bcc.BPF(src_file=str(HERE / "empty_probe.c").encode())
    bpf.attach_uprobe(name=LIBC.encode(), sym=b"malloc", fn_name=b"on_enter", pid=proc.pid)
    bpf.attach_uretprobe(name=LIBC.encode(), sym=b"malloc", fn_name=b"on_return", pid=proc.pid)
    bpf.attach_uprobe(name=LIBC.encode(), sym=b"free", fn_name=b"on_enter", pid=proc.pid, sym_off=free_offset)
    try:
        return finish_target(proc), None
    finally:
        bpf.cleanup()


def run_tracer(binary, pairs, threads, argv_for_pid, ready_text, stream_name="stderr"):
    proc = start_target(binary, pairs, threads)
    # Unbuffered, so a "ready" line arrives when it is printed.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    tracer = subprocess.Popen(argv_for_pid(proc.pid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, start_new_session=True)
    attach_s = wait_for_line(getattr(tracer, stream_name), ready_text)
    if stream_name == "stdout":
        time.sleep(1.0)  # memleak announces itself before attaching its probes
    try:
        return finish_target(proc), attach_s
    finally:
        os.killpg(tracer.pid, signal.SIGINT)
        try:
            tracer.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(tracer.pid, signal.SIGKILL)


def free_placement() -> int:
    try:
        from leaktrace.placement import place_probe
    except ImportError:
        return 0
    return place_probe(LIBC, "free", ("rdi",)).offset


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--traced-pairs", type=int, default=200_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--skip-memleak", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("malloc_bench.py: run as root")
    headers.ensure_kernel_source(lambda msg: None)
    leaktrace = [str(REPO / ".venv/bin/leaktrace")]
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        n, t = args.traced_pairs, args.threads
        offset = free_placement()
        results = {"untraced": run_untraced(binary, args.pairs, t)}
        results["empty probes, free at entry"] = run_floor(binary, n, t, 0)
        if offset:
            results[f"empty probes, free at +{offset}"] = run_floor(binary, n, t, offset)
        results["leaktrace"] = run_tracer(
            binary, n, t, lambda pid: leaktrace + ["attach", "-p", str(pid), "3600", "--older-than", "0"],
            "leaktrace: tracing")
        if not args.skip_memleak:
            results["bcc memleak"] = run_tracer(
                binary, n, t, lambda pid: ["/usr/bin/python3", MEMLEAK, "-p", str(pid), "3600"],
                "Attaching to pid", "stdout")
    print_table(results, t)
    return 0


def print_table(results: dict, threads: int) -> None:
    base = results["untraced"][0]
    memleak = results.get("bcc memleak", (None,))[0]
    floor_key = next((k for k in results if k.startswith("empty probes, free at +")), "empty probes, free at entry")
    floor = results[floor_key][0] - base
    print(f"malloc(64)+free pairs, {threads} thread(s); overhead = ns/pair minus untraced")
    print(f"{'mode':32} {'ns/pair':>10} {'overhead':>10} {'vs floor':>9} {'vs memleak':>11} {'attach s':>9}")
    for mode, (ns, attach_s) in results.items():
        over = ns - base
        vs_floor = f"{over / floor:.2f}x" if mode != "untraced" and floor > 0 else ""
        vs_memleak = f"{over / (memleak - base):.3f}x" if memleak and mode != "untraced" else ""
        attach = f"{attach_s:.2f}" if attach_s is not None else ""
        print(f"{mode:32} {ns:10.1f} {over:10.1f} {vs_floor:>9} {vs_memleak:>11} {attach:>9}")


if __name__ == "__main__":
    sys.exit(main())
