#!/usr/bin/env python3
"""Soak: leaktrace attached for a long run at a high allocation rate over many stacks.

bench/soak_target.c allocates about --rate times a second for --seconds over
3,000 stacks (churn freed at once, a 20,000-block cache whose frees hit
blocks of every age, a steady leak), then prints exactly what it leaked and
still holds. `leaktrace attach` reports every --interval seconds with the
defaults. Every --sample-every seconds this samples the tracer's memory
(RSS, and what its BPF maps have charged: the fdinfo memlock of each map),
its CPU use and the target's, and the time of its latest report. At the end
leaktrace's final report must hold exactly what the target says it leaked
plus what it still holds, with no loss counted.

Run as root from the repository (an hour, at low priority on a busy machine):
  nice -n 19 .venv/bin/python bench/soak.py --seconds 3600
  .venv/bin/python bench/soak.py --seconds 120        # a short run while developing
Options: --rate N, --interval S, --sample-every S, --json FILE (every sample).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from report_time import TIMED_CLI  # noqa: E402  (the CLI with each report stage timed)

TICKS = os.sysconf("SC_CLK_TCK")
SETTLE_S = 3  # after the target stops: everything it holds is older than --older-than


def build(out_dir: str) -> str:
    binary = os.path.join(out_dir, "soak_target")
    subprocess.run(["gcc", "-O1", "-fno-omit-frame-pointer", f"-I{HERE.parent / 'tests' / 'programs'}",
                    "-o", binary, str(HERE / "soak_target.c")], check=True)
    return binary


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def bpf_map_bytes(pid: int) -> int:
    """What the process's BPF maps have charged (memlock in each map fd's fdinfo)."""
    total = 0
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as info:
                fields = dict(line.split(":", 1) for line in info if ":" in line)
        except OSError:
            continue
        if "map_type" in fields and "memlock" in fields:
            total += int(fields["memlock"].strip())
    return total


class StageTimes:
    """Collects the timed CLI's stderr: report durations and snapshot sizes."""

    def __init__(self, stream):
        self.reports, self.buckets, self.lines = [], [], []
        self.tracing = threading.Event()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip())
            if line.startswith("leaktrace: tracing"):
                self.tracing.set()
            elif line.startswith("stage_s report="):
                self.reports.append(float(line.split("=", 1)[1]))
            elif line.startswith("outstanding="):
                self.buckets.append(int(line.split("buckets=")[1].split()[0]))


def parse_counts(lines, word: str):
    for line in lines:
        if line.startswith(word + " "):
            fields = dict(part.split("=") for part in line.split()[1:])
            return int(fields.get("bytes", 0)), int(fields["count"])
    raise RuntimeError(f"the target printed no {word} line")


def sample(tracer: int, target: int, started: float, last: dict, times: StageTimes) -> dict:
    now = time.monotonic()
    cpu_tracer, cpu_target = cpu_seconds(tracer), cpu_seconds(target)
    span = now - last["at"]
    row = {
        "t_s": round(now - started, 1),
        "tracer_rss_mb": round(rss_bytes(tracer) / 2**20, 1),
        "bpf_maps_mb": round(bpf_map_bytes(tracer) / 2**20, 1),
        "tracer_cpu_pct": round(100 * (cpu_tracer - last["tracer"]) / span, 1),
        "target_cpu_pct": round(100 * (cpu_target - last["target"]) / span, 1),
        "last_report_s": times.reports[-1] if times.reports else None,
        "buckets": times.buckets[-1] if times.buckets else None,
    }
    last.update(at=now, tracer=cpu_tracer, target=cpu_target)
    return row


def soak(binary: str, args) -> dict:
    target = subprocess.Popen([binary, str(args.seconds), str(args.rate)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert target.stdout.readline().strip() == "ready"
    out = tempfile.NamedTemporaryFile("w+", prefix="soak-reports-", suffix=".jsonl")
    tracer = subprocess.Popen([sys.executable, "-c", TIMED_CLI, "attach", "-p", str(target.pid),
                               "--format", "json", "--top", "20", str(args.interval)],
                              stdout=out, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONUNBUFFERED="1"))
    times = StageTimes(tracer.stderr)
    samples = []
    try:
        if not times.tracing.wait(300):
            raise RuntimeError("leaktrace did not start:\n" + "\n".join(times.lines))
        started = time.monotonic()
        last = {"at": started, "tracer": cpu_seconds(tracer.pid), "target": cpu_seconds(target.pid)}
        target.stdin.write("go\n")
        target.stdin.flush()
        lines = []
        reader = threading.Thread(target=lambda: lines.extend(iter(target.stdout.readline, "")),
                                  daemon=True)
        reader.start()
        while not any(line.startswith("HELD ") for line in lines):
            time.sleep(min(args.sample_every, 1))
            if time.monotonic() - last["at"] >= args.sample_every:
                samples.append(sample(tracer.pid, target.pid, started, last, times))
                print(json.dumps(samples[-1]), flush=True)
        time.sleep(SETTLE_S)
        samples.append(sample(tracer.pid, target.pid, started, last, times))
        tracer.send_signal(signal.SIGINT)
        tracer.wait(600)
    finally:
        if tracer.poll() is None:
            tracer.kill()
        target.stdin.close()
        target.wait()
    out.seek(0)
    reports = [json.loads(line) for line in out if line.startswith("{")]
    return {"samples": samples, "final": reports[-1], "reports": len(reports), "lines": lines,
            "report_times": times.reports}


def summarize(result: dict, args) -> int:
    samples, final, lines = result["samples"], result["final"], result["lines"]
    leaked, held = parse_counts(lines, "LEAKED"), parse_counts(lines, "HELD")
    allocations = parse_counts(lines, "ALLOCATIONS")[1]
    expected = (leaked[0] + held[0], leaked[1] + held[1])
    got = (final["totals"]["bytes"], final["totals"]["count"])
    losses = {k: v for k, v in final["losses"].items() if v}
    peak = max(samples, key=lambda s: s["tracer_rss_mb"])
    cpu = [s["tracer_cpu_pct"] for s in samples[1:]] or [0]
    print(f"\nsoak: {args.seconds} s, {allocations:,} allocations ({allocations / args.seconds:,.0f}/s), "
          f"3,000 stacks, {result['reports']} reports")
    print(f"  tracer RSS: first {samples[0]['tracer_rss_mb']} MB, peak {peak['tracer_rss_mb']} MB "
          f"at {peak['t_s']} s, last {samples[-1]['tracer_rss_mb']} MB")
    print(f"  BPF maps: first {samples[0]['bpf_maps_mb']} MB, last {samples[-1]['bpf_maps_mb']} MB")
    print(f"  tracer CPU: mean {sum(cpu) / len(cpu):.1f}%, max {max(cpu):.1f}%; "
          f"target CPU mean {sum(s['target_cpu_pct'] for s in samples) / len(samples):.1f}%")
    times = result["report_times"]
    print(f"  report time: median {sorted(times)[len(times) // 2]:.3f} s, max {max(times):.3f} s; "
          f"age buckets in the last snapshot: {samples[-1]['buckets']}")
    print(f"  held at the end: target {expected[0]:,} B in {expected[1]:,} blocks "
          f"(leaked {leaked[1]:,}, cache {held[1]:,}); leaktrace {got[0]:,} B in {got[1]:,}; "
          f"losses {losses or 'none'}")
    exact = got == expected and not losses
    print("  exact: yes" if exact else "  exact: NO")
    if args.json:
        Path(args.json).write_text(json.dumps({"samples": samples, "expected": expected, "got": got,
                                               "losses": final["losses"]}, indent=1))
    return 0 if exact else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=3600)
    parser.add_argument("--rate", type=int, default=50000, help="allocations a second")
    parser.add_argument("--interval", type=float, default=5.0, help="leaktrace's report interval")
    parser.add_argument("--sample-every", type=float, default=30.0)
    parser.add_argument("--json", help="write every sample to this file")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("soak.py: run as root")
    with tempfile.TemporaryDirectory() as tmp:
        result = soak(build(tmp), args)
    return summarize(result, args)


if __name__ == "__main__":
    sys.exit(main())
