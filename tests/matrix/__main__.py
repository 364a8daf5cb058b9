"""The kernel matrix: leaktrace's smoke checks on Debian's kernels under QEMU.

    python -m matrix [--kernels 5.10,6.1,6.12,6.18] [--checks smoke|NAME,...] [--json FILE]

(scripts/kernel-matrix.sh runs it as root with tests/ on the path.) For each
kernel series: fetch Debian's cloud kernel (kernels.py, cached), boot it
with the host's root as the guest's (guest.py), run checks.py inside,
collect its results from the second serial port, and finally print one table
(table.py). "host" runs the checks on the running kernel, no guest. KVM is
tried first and TCG used once KVM fails. Exit status 1 when any check failed
or a guest gave no result, 2 on bad arguments.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import List, Optional, Tuple

from . import checks, kernels
from .guest import Guest, GuestConfig, parse_results
from .table import KernelRun, merge_runs, render, render_markdown

REPO = Path(__file__).resolve().parents[2]
DEFAULT_KERNELS = "5.10,6.1,6.12,6.18"
BOOT_BUDGET_S = {"kvm": 120, "tcg": 300}  # boot, modules, mounts, before the first check
CHECK_TIMEOUT_S = {"kvm": 300, "tcg": 900}


def log(message: str) -> None:
    print(f"matrix: {message}", file=sys.stderr, flush=True)


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="kernel-matrix.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernels", default=DEFAULT_KERNELS,
                        help=f"kernel series, comma-separated, or host (default {DEFAULT_KERNELS})")
    parser.add_argument("--checks", default="smoke", help="smoke, or check names: " + ",".join(checks.SMOKE))
    parser.add_argument("--accel", choices=("auto", "kvm", "tcg"), default="auto",
                        help="auto: KVM, then TCG once KVM fails (default)")
    parser.add_argument("--check-timeout", type=float, help="seconds per check (default 300 KVM, 900 TCG)")
    parser.add_argument("--kernel-timeout", type=float,
                        help="seconds per kernel, boot and every check (default: the boot's budget plus "
                             "--check-timeout per check); checks not run by then are reported as such")
    parser.add_argument("--json", type=Path, help="also write the results as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="also write the README's Supported kernels table here")
    parser.add_argument("--logs", type=Path, help="keep each guest's console and results under this directory")
    parser.add_argument("--from", dest="saved", type=Path, nargs="+", metavar="JSON",
                        help="boot nothing: print the table (and --markdown) of earlier --json results; a "
                             "kernel's later results (a check run again) replace its earlier ones")
    parser.add_argument("--run", default="", metavar="COMMAND",
                        help="run this shell command in each guest instead of the checks; its output "
                             "is the guest's console (see --logs)")
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--memory-mb", type=int, default=3072)
    args = parser.parse_args(argv)
    args.kernel_list = [k.strip() for k in args.kernels.split(",") if k.strip()]
    names = checks.SMOKE if args.checks == "smoke" else tuple(args.checks.split(","))
    unknown = [n for n in names if n not in checks.SMOKE]
    if unknown or not args.kernel_list:
        parser.error(f"unknown checks {unknown}" if unknown else "no kernels given")
    args.check_names = list(names)
    return args


def first_accel(wanted: str) -> str:
    if wanted != "auto":
        return wanted
    return "kvm" if os.access("/dev/kvm", os.R_OK | os.W_OK) else "tcg"


def kernel_budget(kernel_timeout: Optional[float], accel: str, check_timeout: float, checks: int) -> float:
    """Seconds one guest may run, boot and checks: --kernel-timeout, else room for every check."""
    return kernel_timeout or BOOT_BUDGET_S[accel] + check_timeout * checks


class Matrix:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.accel = first_accel(args.accel)

    def config(self, accel: str) -> GuestConfig:
        timeout = self.args.check_timeout or CHECK_TIMEOUT_S[accel]
        return GuestConfig(checkout=REPO, checks=",".join(self.args.check_names), check_timeout=timeout,
                           memory_mb=self.args.memory_mb, cpus=self.args.cpus, run=self.args.run)

    def run_kernel(self, series: str) -> KernelRun:
        if series == "host":
            return self.run_host()
        kernel = kernels.fetch(series, log=log)
        headers = "debian" if kernel.has_headers else "fallback"
        while True:
            accel = self.accel
            run = KernelRun(series, kernel.release, accel, headers)
            started = time.monotonic()
            results = self.boot(kernel, accel, run)
            run.seconds = time.monotonic() - started
            if results["ended"] == "kvm-failed" and self.args.accel == "auto":
                log(f"{kernel.release}: KVM failed in the guest ({results.get('kvm_error', '')}); using TCG")
                self.accel = "tcg"
                continue
            return run

    def boot(self, kernel: kernels.Kernel, accel: str, run: KernelRun) -> dict:
        config = self.config(accel)
        budget = kernel_budget(self.args.kernel_timeout, accel, config.check_timeout, len(self.args.check_names))
        log(f"{kernel.release}: booting under {accel} (at most {budget:.0f} s)")

        def progress(record):
            log(f"{kernel.release}: {record['check']} {record['status']} in {record['seconds']} s")

        with Guest(kernel, config, accel) as guest:
            results = guest.wait(budget, progress)
            logs = self.args.logs / kernel.release if self.args.logs else None
            if self.args.run and results["ended"] != "kvm-failed":
                print(f"=== {kernel.release} ({accel}) ===\n{guest.log('console.log')}", flush=True)
            if results["ended"] == "kvm-failed":
                results["kvm_error"] = next((line for line in guest.log("qemu.log").splitlines()
                                             if line.strip()), "no output")
            else:
                run.results = {r["check"]: r for r in results["checks"]}
                run.facts = results["kernel"] or {}
                run.problem = problem_of(results, guest.log("console.log"))
            guest.close(keep_logs=logs)
        return results

    def run_host(self) -> KernelRun:
        """The checks on the running kernel, as the guest runs them."""
        run = KernelRun("host", os.uname().release, "host",
                        "debian" if os.path.isdir(f"/lib/modules/{os.uname().release}/build") else "fallback")
        started = time.monotonic()
        timeout = self.args.check_timeout or CHECK_TIMEOUT_S["kvm"]
        done = subprocess.run([sys.executable, str(Path(checks.__file__)), "--checks", ",".join(self.args.check_names),
                               "--timeout", str(timeout)], stdout=subprocess.PIPE, text=True, cwd=REPO)
        results = parse_results(done.stdout)
        run.results = {r["check"]: r for r in results["checks"]}
        run.facts = results["kernel"] or {}
        run.seconds = time.monotonic() - started
        return run


def problem_of(results: dict, console: str) -> str:
    """Why the guest's results are incomplete, in one line; "" when they are not."""
    if results["boot_failed"]:
        return f"guest boot failed: {results['boot_failed']}"
    if results["ended"] == "timeout":
        return "guest timed out" + ("" if results["kernel"] else " before the checks started")
    if not results["done"]:
        tail = [line for line in console.replace("\r", "").splitlines() if line.strip()][-3:]
        return "guest stopped before the checks ended: " + " | ".join(tail)
    return ""


def saved_runs(paths: List[Path]) -> Tuple[List[KernelRun], str]:
    """The runs of earlier --json files, one per kernel (merge_runs), and the date of the newest."""
    documents = [json.loads(path.read_text()) for path in paths]
    runs = merge_runs([KernelRun(**run) for doc in documents for run in doc["runs"]])
    return runs, max(doc["measured"] for doc in documents)


def main(argv: List[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: guests are stopped
    runs: List[KernelRun] = []
    measured = time.strftime("%Y-%m-%d")
    if args.saved:
        runs, measured = saved_runs(args.saved)
    matrix = Matrix(args)
    try:
        for series in [] if args.saved else args.kernel_list:
            runs.append(matrix.run_kernel(series))
    except KeyboardInterrupt:
        log("interrupted; guests stopped")
        return 130
    if args.run:
        return 0
    print(render(runs, args.check_names))
    if args.json:
        args.json.write_text(json.dumps({"measured": measured, "runs": [asdict(r) for r in runs]}, indent=1))
    if args.markdown:
        args.markdown.write_text(render_markdown(runs, args.check_names, measured) + "\n")
    return 1 if any(r.failed for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
