"""Helpers the integration tests share: build the leaking programs, drive them,
drive leaktrace, and look things up in its JSON reports.

The leaking programs (tests/programs/, protocol in leaky.h) wait for a line on
stdin, allocate, print `SITE fn=F bytes=N count=M` lines and a final
`LEAKED bytes=N count=M`, then linger until stdin closes. leaktrace is driven
through its real entry point, the way a user runs it; its stdout carries one
JSON report per line and its stderr a `leaktrace: tracing` line once the
probes are live.
"""
from __future__ import annotations

import json
import os
import pwd
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence

REPO = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "programs"
# Frame pointers everywhere: the probes unwind with them.
BASE_CFLAGS = ("-g", "-O0", "-fno-omit-frame-pointer", "-pthread")
# Slow machines (the kernel matrix's emulated guests) stretch every wait.
TIMEOUT_SCALE = float(os.environ.get("LEAKTRACE_TIMEOUT_SCALE", "1"))
_RESULT_LINE = re.compile(r"^(SITE fn=(?P<fn>\S+)|LEAKED) bytes=(?P<bytes>\d+) count=(?P<count>\d+)$")


def compile_c(src_name: str, out_dir: Path, flags: Sequence[str] = (), cxx: bool = False,
              out_name: Optional[str] = None) -> Path:
    """Compile tests/programs/<src_name> into out_dir; flags go after the source
    (so -l, -static, -shared work). Returns the output path."""
    src = PROGRAMS / src_name
    out = Path(out_dir) / (out_name or src.stem)
    compiler = "g++" if cxx else "gcc"
    cmd = [compiler, *BASE_CFLAGS, f"-I{PROGRAMS}", str(src), "-o", str(out), *flags]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise AssertionError(f"compiling {src_name} failed: {' '.join(cmd)}\n{done.stderr}")
    return out


class _LineReader:
    """Collects a pipe's lines on a thread, so nothing blocks on a full pipe."""

    def __init__(self, pipe):
        self.lines: List[str] = []
        self._changed = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._pump, args=(pipe,), daemon=True)
        self._thread.start()

    def _pump(self, pipe) -> None:
        for line in pipe:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def wait_for(self, predicate, timeout: float) -> Optional[str]:
        """The first line matching predicate, waiting up to timeout; None if none."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for line in self.lines:
                    if predicate(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return None
                self._changed.wait(left)

    def join(self, timeout: float = 5) -> None:
        self._thread.join(timeout)

    def text(self) -> str:
        with self._changed:
            return "\n".join(self.lines)


class LeakyProcess:
    """A leaking test program, started with a stdin pipe and held until stop()."""

    def __init__(self, command: Sequence[str], env: Optional[dict] = None):
        self.command = [str(c) for c in command]
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        self.pid = self.proc.pid
        self._out = _LineReader(self.proc.stdout)
        self._err = _LineReader(self.proc.stderr)

    def go(self) -> None:
        """Tell the program to start allocating."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait_line(self, line: str, timeout: float = 10) -> None:
        """Until the program prints exactly this line."""
        if self._out.wait_for(lambda printed: printed == line, timeout * TIMEOUT_SCALE) is None:
            raise AssertionError(f"{self.command[0]} did not print {line!r} in {timeout}s; "
                                 f"stdout={self._out.text()!r} stderr={self._err.text()!r}")

    def wait_leaked(self, timeout: float = 20) -> Dict:
        """{"bytes", "count", "sites": {function: {"bytes", "count"}}} as printed."""
        timeout *= TIMEOUT_SCALE
        if self._out.wait_for(lambda l: l.startswith("LEAKED "), timeout) is None:
            raise AssertionError(f"{self.command[0]} printed no LEAKED line in {timeout}s; "
                                 f"exit={self.proc.poll()} stdout={self._out.text()!r} "
                                 f"stderr={self._err.text()!r}")
        return parse_leaked(self._out.lines)

    def stop(self, timeout: float = 5) -> Optional[int]:
        """Close stdin (the program exits), kill it if it lingers. Returns its exit code."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except BrokenPipeError:
                pass
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "LeakyProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def parse_leaked(lines: Iterable[str]) -> Dict:
    """Parse SITE/LEAKED lines (other lines are ignored)."""
    result: Dict = {"sites": {}}
    for line in lines:
        match = _RESULT_LINE.match(line.strip())
        if not match:
            continue
        numbers = {"bytes": int(match["bytes"]), "count": int(match["count"])}
        if match["fn"]:
            result["sites"][match["fn"]] = numbers
        else:
            result.update(numbers)
    if "bytes" not in result:
        raise AssertionError(f"no LEAKED line among {list(lines)!r}")
    return result


def leaktrace_command() -> List[str]:
    """The installed console script next to this interpreter, else `python -m leaktrace`."""
    script = Path(sys.executable).parent / "leaktrace"
    return [str(script)] if script.exists() else [sys.executable, "-m", "leaktrace"]


class Tracer:
    """leaktrace running as a subprocess; reports are the JSON lines of its stdout.

    SIGHUP is set to `hangup` in leaktrace (default: the default action), so a
    suite started under nohup tests what a user's terminal session sees."""

    def __init__(self, args: Sequence[str], env: Optional[dict] = None,
                 prefix: Sequence[str] = (), stdin=subprocess.DEVNULL, hangup=signal.SIG_DFL):
        self.command = [*prefix, *leaktrace_command(), *[str(a) for a in args]]
        self.proc = subprocess.Popen(self.command, stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env,
                                     preexec_fn=lambda: signal.signal(signal.SIGHUP, hangup))
        self._out = _LineReader(self.proc.stdout)
        self._err = _LineReader(self.proc.stderr)

    @property
    def stderr(self) -> str:
        return self._err.text()

    @property
    def returncode(self) -> Optional[int]:
        return self.proc.returncode

    def describe(self) -> str:
        """What the tracer did so far, for assertion messages."""
        return (f"command: {' '.join(self.command)}\nexit: {self.proc.poll()}\n"
                f"stderr:\n{self.stderr}\nstdout (first 2000 chars):\n{self._out.text()[:2000]}")

    def wait_tracing(self, timeout: float = 60) -> None:
        """Block until the probes are live (the `leaktrace: tracing` stderr line)."""
        # An internal error or traceback ends the wait at once, even if the
        # process lingers after printing it.
        timeout *= TIMEOUT_SCALE
        line = self._err.wait_for(lambda l: l.startswith("leaktrace: tracing") or any(
            sign in l for sign in ("internal error", "Traceback")), timeout)
        if line is None or not line.startswith("leaktrace: tracing"):
            raise AssertionError(f"leaktrace did not start tracing (waited up to {timeout}s)\n"
                                 + self.describe())

    def go_until_leaked(self, timeout: float = 30) -> None:
        """`run` with stdin=PIPE: once tracing, tell the command to go and wait for its LEAKED line."""
        self.wait_tracing()
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout * TIMEOUT_SCALE
        while not any(line.startswith("LEAKED ") for line in self.other_output()):
            assert time.monotonic() < deadline, "no LEAKED line\n" + self.describe()
            time.sleep(0.05)

    def reports(self) -> List[Dict]:
        """Every JSON report printed so far (non-JSON stdout lines are skipped)."""
        found = []
        for line in list(self._out.lines):
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except ValueError as exc:
                    raise AssertionError(f"bad JSON report line: {line[:300]!r}: {exc}")
        return found

    def other_output(self) -> List[str]:
        """stdout lines that are not reports (e.g. the output of a `run` target)."""
        return [line for line in self._out.lines if not line.startswith("{")]

    def wait(self, timeout: float = 30) -> int:
        """Wait for leaktrace to exit by itself; returns its exit code."""
        timeout *= TIMEOUT_SCALE
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"leaktrace still running after {timeout}s\n" + self.describe())
        self._out.join()
        self._err.join()
        return self.proc.returncode

    def stop(self, timeout: float = 30) -> List[Dict]:
        """SIGINT (Ctrl-C), wait for the final report; returns all reports."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        self.wait(timeout)
        return self.reports()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> "Tracer":
        return self

    def __exit__(self, *exc) -> None:
        self.kill()


def run_leaktrace(args: Sequence[str], env: Optional[dict] = None, prefix: Sequence[str] = (),
                  timeout: float = 60, python: Optional[Sequence[str]] = None):
    """Run leaktrace to completion; python replaces the entry point (e.g. another venv)."""
    entry = list(python) + ["-m", "leaktrace"] if python else leaktrace_command()
    cmd = [*prefix, *entry, *[str(a) for a in args]]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout * TIMEOUT_SCALE,
                          stdin=subprocess.DEVNULL)


# An unprivileged user for the tests of what other users can do.
NOBODY = pwd.getpwnam("nobody")
AS_NOBODY = ("setpriv", f"--reuid={NOBODY.pw_uid}", f"--regid={NOBODY.pw_gid}", "--clear-groups")


# Age filter the tests pass, and how long they let allocations age past it
# (the probes' age buckets are ~268 ms wide).
OLDER_THAN_MS = 200
SETTLE_S = 1.2


def trace(leaker: "LeakyProcess", tracer_args: Sequence[str] = ()):
    """Attach to a waiting leaking program, let it leak, Ctrl-C the tracer.
    Returns (what the program says it leaked, every report, the Tracer)."""
    with Tracer(["attach", "-p", leaker.pid, "--format", "json", "--older-than", OLDER_THAN_MS,
                 *tracer_args]) as tracer:
        tracer.wait_tracing()
        leaker.go()
        leaked = leaker.wait_leaked()
        time.sleep(SETTLE_S)
        reports = tracer.stop()
        assert tracer.returncode == 0, "leaktrace failed after SIGINT\n" + tracer.describe()
        assert reports, "no JSON report after SIGINT\n" + tracer.describe()
    return leaked, reports, tracer


def trace_leaker(command: Sequence[str], tracer_args: Sequence[str] = ()):
    """trace() on a program started for the purpose and stopped afterwards."""
    with LeakyProcess(command) as leaker:
        return trace(leaker, tracer_args)


# ---- finders over one JSON report ----------------------------------------------------------


def frame_symbols(stack: Dict) -> List[str]:
    return [frame.get("symbol") or "" for frame in stack.get("frames", [])]


def _has_symbol(stack: Dict, function_name: str) -> bool:
    return any(symbol.startswith(function_name) for symbol in frame_symbols(stack))


def stacks_with(report: Dict, function_name: str, kind: Optional[str] = None) -> List[Dict]:
    """Every stack whose frames include function_name (prefix of the demangled
    symbol, so `Cache::insert` matches `Cache::insert(std::...)`)."""
    return [s for s in report.get("stacks", [])
            if _has_symbol(s, function_name) and (kind is None or s.get("kind") == kind)]


def stack_with(report: Dict, function_name: str, kind: Optional[str] = None) -> Optional[Dict]:
    """The first (largest) stack that includes function_name, or None."""
    found = stacks_with(report, function_name, kind)
    return found[0] if found else None


def leaked_under(report: Dict, function_name: str, kind: Optional[str] = "heap") -> Dict:
    """Bytes and count summed over every stack that includes function_name."""
    found = stacks_with(report, function_name, kind)
    return {"bytes": sum(s["bytes"] for s in found), "count": sum(s["count"] for s in found),
            "stacks": len(found)}


def describe_stacks(report: Dict, limit: int = 10) -> str:
    """The report's stacks in a few lines, for assertion messages."""
    lines = [f"totals={report.get('totals')} losses={report.get('losses')} "
             f"warnings={report.get('warnings')}"]
    for stack in report.get("stacks", [])[:limit]:
        names = " <- ".join(s or "?" for s in frame_symbols(stack)[:8])
        lines.append(f"  #{stack.get('rank')} {stack.get('kind')} bytes={stack.get('bytes')} "
                     f"count={stack.get('count')}: {names}")
    return "\n".join(lines)


def assert_within(actual: float, expected: float, pct: float = 10, what: str = "value") -> None:
    """actual is within ±pct% of expected."""
    margin = abs(expected) * pct / 100
    assert abs(actual - expected) <= margin, (
        f"{what}: got {actual}, expected {expected} ±{pct}% ({expected - margin}..{expected + margin})")


def assert_clean_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """A user-facing failure: non-zero exit, no traceback, a `leaktrace:` line
    (plus at most a hint line) on stderr naming each of words. Returns stderr."""
    err = done.stderr.strip()
    context = f"exit={done.returncode}\nstderr:\n{done.stderr}\nstdout:\n{done.stdout[:500]}"
    assert done.returncode != 0, "expected a non-zero exit\n" + context
    assert "Traceback" not in done.stderr + done.stdout, "traceback shown\n" + context
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[0].startswith("leaktrace: "), "no `leaktrace: ` line\n" + context
    assert len(lines) <= 2, "more than a message and a hint line\n" + context
    for word in words:
        assert word.lower() in err.lower(), f"stderr does not mention {word!r}\n" + context
    return err
