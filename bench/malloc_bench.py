#!/usr/bin/env python3
"""Per malloc/free pair cost: untraced, empty probes, leaktrace, bcc memleak, in one run.

Every mode traces the same binary (bench/malloc_free.c: malloc(64)+free pairs on
--threads threads), interleaved over --rounds; the table shows medians. The
metric is CPU time per pair (all loop threads, traps and BPF included), which a
busy machine does not inflate; wall time is printed alongside. The floor hooks
every function leaktrace hooks, entry probes at leaktrace's placement
(leaktrace/probes/placement.py), with empty BPF programs: what any uprobe tracer pays.

Run as root from the repository:
  .venv/bin/python bench/malloc_bench.py --threads 1 --rounds 5
  .venv/bin/python bench/malloc_bench.py --threads 2 --rounds 5
Options: --pairs N (untraced loop length), --traced-pairs N, --skip-memleak,
--extra ARGS (one more leaktrace mode with these attach options, e.g. "--sample-rate 4096").
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import statistics
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
LEAKTRACE = [str(REPO / ".venv/bin/leaktrace")]


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
    """CPU ns per pair; the wall-clock figure goes to LAST_WALL."""
    proc.stdin.write("go\n")
    proc.stdin.flush()
    result = dict(line.strip().split("=", 1) for line in proc.stdout if "=" in line)
    proc.wait()
    if "cpu_ns_per_pair" not in result:
        raise RuntimeError("benchmark program printed no result")
    LAST_WALL.append(float(result["ns_per_pair"]))
    return float(result["cpu_ns_per_pair"])


LAST_WALL: list = []


def wait_for_line(stream, needle: str, timeout: float = 120) -> float:
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


def run_floor(binary, pairs, threads, placed: bool):
    """Empty programs on every function leaktrace hooks; entry probes placed or at +0."""
    import bcc
    from leaktrace.probes.allocator import discover
    from leaktrace.probes.alloc_functions import HANDLERS
    from leaktrace.probes.attach_plan import distinct_entry_points, emulated_offset
    from leaktrace.process.traced_process import TracedProcess

    proc = start_target(binary, pairs, threads)
    bpf = bcc.BPF(src_file=str(HERE / "empty_probe.c").encode())
    for path, hooks in discover(TracedProcess(proc.pid)).objects().items():
        for hook in distinct_entry_points(path, hooks):
            enter, exit_ = HANDLERS[hook.function]
            offset = emulated_offset(hook) if placed else 0
            if enter:
                bpf.attach_uprobe(name=path.encode(), sym=hook.symbol.encode(), fn_name=b"on_enter",
                                  pid=proc.pid, sym_off=offset)
            if exit_:
                bpf.attach_uretprobe(name=path.encode(), sym=hook.symbol.encode(), fn_name=b"on_return",
                                     pid=proc.pid)
    try:
        return finish_target(proc), None
    finally:
        bpf.cleanup()


def run_tracer(binary, pairs, threads, argv_for_pid, ready_text, stream_name="stderr"):
    proc = start_target(binary, pairs, threads)
    # Unbuffered, so a "ready" line arrives when it is printed.
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.monotonic()
    tracer = subprocess.Popen(argv_for_pid(proc.pid), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env, start_new_session=True)
    wait_for_line(getattr(tracer, stream_name), ready_text)
    attach_s = time.monotonic() - start
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


def leaktrace_mode(options):
    argv = lambda pid: LEAKTRACE + ["attach", "-p", str(pid), "3600", "--older-than", "0"] + options  # noqa: E731
    return lambda binary, n, t: run_tracer(binary, n, t, argv, "leaktrace: tracing")


def memleak_mode(binary, n, t):
    return run_tracer(binary, n, t, lambda pid: ["/usr/bin/python3", MEMLEAK, "-p", str(pid), "3600"],
                      "Attaching to pid", "stdout")


def modes(args) -> dict:
    """name -> run(binary, pairs, threads) -> (cpu ns per pair, attach s or None)."""
    table = {
        "empty probes at entry": lambda b, n, t: run_floor(b, n, t, placed=False),
        "empty probes placed (floor)": lambda b, n, t: run_floor(b, n, t, placed=True),
        "leaktrace": leaktrace_mode([]),
        "leaktrace --unwind fp": leaktrace_mode(["--unwind", "fp"]),
    }
    if args.extra:
        table[f"leaktrace {args.extra}"] = leaktrace_mode(shlex.split(args.extra))
    if not args.skip_memleak:
        table["bcc memleak"] = memleak_mode
    return table


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5_000_000)
    parser.add_argument("--traced-pairs", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-memleak", action="store_true")
    parser.add_argument("--extra", default="", help="attach options of one more leaktrace mode")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("malloc_bench.py: run as root")
    headers.ensure_kernel_source(lambda msg: None)
    runs = modes(args)
    samples = {name: [] for name in ["untraced"] + list(runs)}
    walls = {name: [] for name in samples}
    attach = {name: [] for name in samples}
    with tempfile.TemporaryDirectory() as tmp:
        binary = build(tmp)
        for _ in range(args.rounds):
            for name in samples:
                run = runs.get(name, lambda b, n, t: run_untraced(b, args.pairs, t))
                ns, attach_s = run(binary, args.traced_pairs, args.threads)
                samples[name].append(ns)
                walls[name].append(LAST_WALL[-1])
                if attach_s is not None:
                    attach[name].append(attach_s)
    print_table(samples, walls, attach, args)
    return 0


def print_table(samples: dict, walls: dict, attach: dict, args) -> None:
    med = {name: statistics.median(values) for name, values in samples.items()}
    base = med["untraced"]
    floor = med["empty probes placed (floor)"] - base
    memleak = med.get("bcc memleak")
    print(f"malloc(64)+free pairs, {args.threads} thread(s), {args.traced_pairs} traced pairs per thread, "
          f"medians of {args.rounds} rounds; overhead = CPU ns/pair minus untraced")
    print(f"{'mode':30} {'cpu ns':>9} {'wall ns':>9} {'overhead':>9} {'vs floor':>9} "
          f"{'vs memleak':>10} {'attach s':>8}  cpu ns per round")
    for name, values in samples.items():
        over = med[name] - base
        traced = name != "untraced"
        vs_floor = f"{over / floor:.2f}x" if traced and floor > 0 else ""
        vs_memleak = f"{over / (memleak - base):.3f}x" if traced and memleak else ""
        attach_s = f"{statistics.median(attach[name]):.2f}" if attach[name] else ""
        print(f"{name:30} {med[name]:9.1f} {statistics.median(walls[name]):9.1f} {over:9.1f} "
              f"{vs_floor:>9} {vs_memleak:>10} {attach_s:>8}  " + " ".join(f"{v:.0f}" for v in values))


if __name__ == "__main__":
    sys.exit(main())
