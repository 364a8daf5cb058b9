"""Smoke checks: does leaktrace work on the running kernel?

Run inside each guest of scripts/kernel-matrix.sh (by guest_run.sh), or as
root on any machine:

    .venv/bin/python tests/matrix/checks.py [--checks smoke|NAME,...] [--timeout S] [--results FILE]

Each check drives leaktrace the way a user does and judges it by the test
suite's ground truth (tests/harness.py: what the program itself says it
leaked, bytes and counts within ±10%). It runs in its own process group, killed
at --timeout. --results receives JSON lines: first {"kernel": {...}}, then one
{"check", "status" (PASS/FAIL/SKIP), "seconds", "summary", "detail", "warnings",
"probes"} per check (the last two from the report the check judged: what
leaktrace said about this kernel), then {"done": true}. Progress goes to stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Dict, List

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: harness

from harness import (  # noqa: E402
    OLDER_THAN_MS, REPO, SETTLE_S, TIMEOUT_SCALE, LeakyProcess, Tracer, assert_within, compile_c,
    describe_stacks, frame_symbols, leaked_under, leaktrace_command, parse_leaked, stack_with, trace, trace_leaker,
)
from integration import test_follow_forks as forks_test  # noqa: E402  (its prefork server)
from integration import test_kernel as kernel_test  # noqa: E402  (its kernel_holder driver)
from leaktrace.triage.growers import STARTUP_S  # noqa: E402
from matrix import kernel_facts  # noqa: E402

DATA = REPO / "tests" / "data"


class Skip(Exception):
    """The check cannot run on this kernel; the message says why."""


def assert_site(report: Dict, function: str, expected: Dict) -> Dict:
    """The stacks under function hold what the program says it leaked (±10%)."""
    found = leaked_under(report, function)
    context = f"\n{function}: {found}, program says {expected}\n" + describe_stacks(report)
    assert found["stacks"], f"no heap stack includes {function}" + context
    assert_within(found["bytes"], expected["bytes"], 10, f"{function} bytes" + context)
    assert_within(found["count"], expected["count"], 10, f"{function} count" + context)
    return found


class Checks:
    """One method per check; each returns the final report it judged ({} if none)."""

    def __init__(self, workdir: Path):
        self.workdir = workdir

    def build(self, src: str, flags=(), name=None) -> Path:
        return compile_c(src, self.workdir, flags, out_name=name)

    def attach(self) -> Dict:
        """The demo app (scripts/demo.sh --check): fibonacci <- child, growth as logged."""
        out = self.workdir / "demo"
        done = subprocess.run(["bash", str(REPO / "scripts" / "demo.sh"), "--no-setup", "--no-docker",
                               "--leaky", "--seconds", "20", "--check", "--out", str(out)],
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              env=dict(os.environ, LEAKTRACE_DEMO_MEMLEAK=""))  # leaktrace alone
        context = f"exit {done.returncode}\n{done.stdout[-1500:]}\n{done.stderr[-2500:]}"
        assert done.returncode == 0 and json.loads(done.stdout)["ok"], context
        final = json.loads((out / "mem-leak.reports.jsonl").read_text().splitlines()[-1])
        top = frame_symbols(final["stacks"][0])[:2]
        assert top == ["fibonacci", "child"], f"top stack {top}\n" + context
        return final

    def run(self) -> Dict:
        """`leaktrace run` sees the allocations of main's first microseconds."""
        with Tracer(["run", "--format", "json", "--older-than", OLDER_THAN_MS, "--",
                     self.build("early_leak.c"), "1500"]) as tracer:
            assert tracer.wait(60) == 0, tracer.describe()
        leaked, reports = parse_leaked(tracer.other_output()), tracer.reports()
        assert reports, "no report when the command exited\n" + tracer.describe()
        assert_site(reports[-1], "early_leak", leaked["sites"]["early_leak"])
        return reports[-1]

    def jemalloc(self) -> Dict:
        """A program linked with jemalloc: jemalloc is found and hooked."""
        program = self.build("fibonacci.c", ["-ljemalloc"], "fibonacci_jemalloc")
        leaked, reports, _ = trace_leaker([program, "40"])
        target = reports[-1]["targets"][0]
        assert "jemalloc" in target["allocator"] + target.get("allocator_name", ""), target
        assert_site(reports[-1], "fibonacci", leaked["sites"]["fibonacci"])
        return reports[-1]

    def cxx_bad_alloc(self) -> Dict:
        """A C++ program catching bad_alloc from jemalloc's new survives tracing, with its throwing
        new hooked (the return address is put back at each throw); SKIP on a kernel in lockdown."""
        program = compile_c("cxx_bad_alloc.cpp", self.workdir, ["-Wl,--no-as-needed", "-ljemalloc"], cxx=True)
        with LeakyProcess([program]) as leaker:
            leaked, reports, _ = trace(leaker)
            leaker.wait_line("CAUGHT 16")
            assert leaker.stop() == 0, "the traced program died"
        final = reports[-1]
        hooked = [s for names in final["targets"][0]["hooked"].values() for s in names]
        if any(w.startswith("the throwing operator new") for w in final["warnings"]):
            raise Skip("this kernel refuses bpf_probe_write_user (lockdown): the throwing new is not hooked")
        assert "_Znwm" in hooked and "_Unwind_RaiseException" in hooked, hooked
        found, expected = leaked_under(final, "Parser::keep()"), leaked["sites"]["Parser::keep"]
        assert (found["count"], found["bytes"]) == (expected["count"], expected["bytes"]), describe_stacks(final)
        return final

    def cfi(self) -> Dict:
        """strdup in a shared library, through Debian's libc (no frame pointers)."""
        lib = self.build("libcache.c", ["-shared", "-fPIC"], "libcache.so")
        program = self.build("uses_libcache.c", [f"-L{lib.parent}", "-lcache", f"-Wl,-rpath,{lib.parent}"])
        leaked, reports, _ = trace_leaker([program])
        stack = stack_with(reports[-1], "lib_cache_put")
        assert stack is not None, describe_stacks(reports[-1])
        names = frame_symbols(stack)
        assert "strdup" in names[0] and names[1:4] == ["lib_cache_put", "store_names", "main"], names
        assert stack["frames"][1]["unwind"] == "cfi", stack["frames"][1]
        assert_site(reports[-1], "lib_cache_put", leaked["sites"]["lib_cache_put"])
        return reports[-1]

    def unwind_fp(self) -> Dict:
        """--unwind fp on a program built with frame pointers."""
        leaked, reports, _ = trace_leaker([self.build("fibonacci.c"), "30"], ["--unwind", "fp"])
        stack = stack_with(reports[-1], "fibonacci")
        assert stack is not None, describe_stacks(reports[-1])
        assert {f["unwind"] for f in stack["frames"]} == {"fp"}, stack["frames"]
        assert_site(reports[-1], "fibonacci", leaked["sites"]["fibonacci"])
        return reports[-1]

    def forks(self) -> Dict:
        """--follow-forks: workers forked after attach, each leak under its own pid."""
        return forks_test.check_prefork_server(self.build)

    def exit_report(self) -> Dict:
        """The target exits: leaktrace prints its final report and exits by itself."""
        with LeakyProcess([self.build("fibonacci.c"), "20"]) as leaker, Tracer(
                ["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            leaker.stop()
            assert tracer.wait(60) == 0, tracer.describe()
        reports = tracer.reports()
        assert reports and "stopped (target exited)" in tracer.stderr, tracer.describe()
        assert_site(reports[-1], "fibonacci", leaked["sites"]["fibonacci"])
        return reports[-1]

    def kernel(self) -> Dict:
        """Held pipes: attributed to the process and its stacks, two `filp`
        objects (the pipe's two files) per pipe; gone once closed."""
        pipes = 300
        filp = kernel_test.merged_name("filp")
        holder = kernel_test.Holder(self.build("kernel_holder.c"), "pipes", pipes)
        with Tracer(["kernel", kernel_test.INTERVAL_S, "--format", "json", "--older-than",
                     kernel_test.OLDER_THAN_MS, "--top", 500, "--kind", "kmalloc,cache"]) as tracer:
            try:
                tracer.wait_tracing()
                holder.say("go", "HELD")
                try:
                    held = kernel_test.wait_report(
                        tracer, lambda r: kernel_test.count_for(r, holder.pid, filp) >= 2 * pipes,
                        30 * TIMEOUT_SCALE)
                except AssertionError as exc:
                    raise AssertionError(f"{2 * pipes} {filp} objects not seen; the process's rows: "
                                         f"{holder_rows(tracer.reports()[-1], holder.pid)}") from exc
                rows = kernel_test.rows_of(held, holder.pid)
                assert {r["comm"] for r in rows} == {kernel_test.COMM}, rows
                symbols = {s for r in rows for s in kernel_test.symbols_of(r)}
                assert {"do_pipe2", "create_pipe_files", "alloc_pipe_info"} & symbols, symbols
                assert_within(kernel_test.count_for(held, holder.pid, filp), 2 * pipes, 10, "filp objects")
                holder.say("release", "RELEASED")
                try:
                    kernel_test.wait_report(
                        tracer, lambda r: kernel_test.count_for(r, holder.pid, filp) < pipes // 10,
                        30 * TIMEOUT_SCALE)
                except AssertionError as exc:
                    last = tracer.reports()[-1]
                    raise AssertionError(f"closed pipes still listed: {holder_rows(last, holder.pid)}; "
                                         f"losses {last['losses']}, events {last['events']}") from exc
            finally:
                holder.stop()
            tracer.stop()
        return held

    def triage(self) -> Dict:
        """A heap grower is the top user_anon grower, verdict leak, at the rate
        its RssAnon grew over triage's own window (±20%, as
        tests/integration/test_triage.py; measured, since a slow guest falls
        behind the nominal 8000 KiB/s, and slows it most while triage samples)."""
        binary = self.workdir / "grow_heap"
        subprocess.run(["gcc", "-O1", "-o", str(binary), str(DATA / "triage" / "grow_heap.c")], check=True)
        for _attempt in range(3):  # as the test: on a shared host another process may grow faster
            pid, report, rate = self._triage_with(binary)
            if (report["growers"].get("user_anon") or [{}])[0].get("pid") == pid:
                break
        verdict = next(v for v in report["verdicts"] if v["category"] == "user_anon")
        assert report["growers"].get("user_anon"), f"no user_anon grower ranked: {report['growers']}"
        top = report["growers"]["user_anon"][0]
        assert (top["pid"], verdict["verdict"]) == (pid, "leak"), (top, verdict)
        assert_within(top["rate"], rate, 20, "grow_heap's rate (RssAnon growth over triage's window)")
        return {}

    def _triage_with(self, binary: Path):
        """Triage beside the grower, whose RssAnon is sampled from triage's
        "sampling memory" line on and fitted over triage's window."""
        program = subprocess.Popen([str(binary), "800", "100"])
        out = self.workdir / "triage.json"
        try:
            time.sleep(STARTUP_S)  # triage does not rank a process that may still be starting
            with open(out, "w") as stdout:  # a file: a full stdout pipe would stall triage
                triage = subprocess.Popen([*leaktrace_command(), "triage", "--format", "json", "--window", "5s",
                                           "--samples", "6"], stdout=stdout, stderr=subprocess.PIPE, text=True,
                                          stdin=subprocess.DEVNULL)
            try:
                stderr, points = read_until(triage, "sampling memory"), []
                while triage.poll() is None:
                    points.append((time.clock_gettime(time.CLOCK_BOOTTIME), rss_anon(program.pid)))
                    time.sleep(0.25)
                stderr += triage.stderr.read()
            finally:
                triage.kill()
                triage.wait()
        finally:
            program.kill()
            program.wait()
        assert triage.returncode == 0 and points, stderr
        report = json.loads(out.read_text())
        window = [(t, rss) for t, rss in points if t <= points[0][0] + report["window_s"]]
        return program.pid, report, statistics.linear_regression(*zip(*window)).slope


def read_until(proc: subprocess.Popen, marker: str) -> str:
    """proc's stderr up to and including the line holding marker (or its end)."""
    lines = [proc.stderr.readline()]
    while lines[-1] and marker not in lines[-1]:
        lines.append(proc.stderr.readline())
    return "".join(lines)


def holder_rows(report: Dict, pid: int) -> str:
    return "; ".join(f"{r['cache']}/{r['kind']} n={r['count']} {kernel_test.symbols_of(r)[:4]}"
                     for r in kernel_test.rows_of(report, pid))


def rss_anon(pid: int) -> int:
    """Bytes of resident anonymous memory, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no RssAnon in /proc/{pid}/status")


SMOKE = ("attach", "run", "jemalloc", "cfi", "kernel", "triage", "unwind_fp", "exit_report", "cxx_bad_alloc",
         "forks")


def run_one(name: str) -> None:
    """Child side: run one check, print its result as one JSON line."""
    started = time.monotonic()
    status, summary, detail, report = "PASS", "", "", {}
    with tempfile.TemporaryDirectory(prefix=f"matrix-{name}.") as tmp:
        os.chmod(tmp, 0o755)
        try:
            report = getattr(Checks(Path(tmp)), name)()
        except Skip as why:
            status, summary = "SKIP", str(why)
        except Exception as exc:  # an assertion or anything unexpected: the check failed
            status, detail = "FAIL", traceback.format_exc()[-4000:]
            summary = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    print(json.dumps({"check": name, "status": status, "seconds": round(time.monotonic() - started, 1),
                      "summary": summary, "detail": detail, "warnings": report.get("warnings", []),
                      "probes": report.get("probes", [])}))


def failed(name: str, started: float, why: str) -> Dict:
    return {"check": name, "status": "FAIL", "seconds": round(time.monotonic() - started, 1),
            "summary": why, "detail": "", "warnings": []}


def run_isolated(name: str, timeout: float) -> Dict:
    """Run one check in its own process group; kill the group at timeout."""
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, __file__, "--one", name], stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return failed(name, started, f"timed out after {timeout:.0f} s")
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever the check left behind
        except ProcessLookupError:
            pass
    lines = [line for line in out.splitlines() if line.startswith('{"check"')]
    if not lines:
        return failed(name, started, f"the check exited {proc.returncode} without a result")
    return json.loads(lines[-1])


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checks", default="smoke", help="smoke, or check names separated by commas")
    parser.add_argument("--timeout", type=float, default=300, help="seconds per check")
    parser.add_argument("--results", default="-", help="where the JSON lines go (default stdout)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = list(SMOKE) if args.checks == "smoke" else args.checks.split(",")
    unknown = [n for n in names if n not in SMOKE]
    if unknown:
        parser.error(f"unknown checks {unknown}; known: {', '.join(SMOKE)}")
    args.names = names
    return args


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    if args.one:
        run_one(args.one)
        return 0
    out = sys.stdout if args.results == "-" else open(args.results, "w", buffering=1)

    def emit(record: Dict) -> None:
        out.write(json.dumps(record) + "\n")
        out.flush()

    emit({"kernel": kernel_facts.collect()})
    failed = 0
    for name in args.names:
        print(f"matrix: {name} ...", file=sys.stderr, flush=True)
        result = run_isolated(name, args.timeout)
        print(f"matrix: {name} {result['status']} in {result['seconds']} s {result['summary']}\n"
              f"{result['detail'][-2000:]}", file=sys.stderr, flush=True)
        emit(result)
        failed += result["status"] == "FAIL"
    emit({"done": True})
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
