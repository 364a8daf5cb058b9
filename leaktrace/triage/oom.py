"""OOM check: how an out-of-memory event would hurt this host.

Contract: read_oom_settings(proc_root) reads the real sysctls, /proc/cmdline,
/proc/consoles and the biggest processes into OomSettings (plain data);
assess(settings) is pure and returns one OomCheck per setting, each with a
one-line explanation of the risk and its trade-off.

Why it matters: the OOM killer prints its report with oom_lock held, and every
task that fails an allocation waits on that lock. printk to a serial console
is synchronous, so a long report at a low baud rate stalls the machine.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from leaktrace.triage import procfs

# Kernel log levels the OOM report uses (mm/oom_kill.c): the "Killed process"
# line is pr_err, the header, stack and memory summary are pr_warn/default,
# the task list is pr_info. The console prints a message when level < loglevel.
KILL_LEVEL, HEADER_LEVEL, TASKS_LEVEL = 3, 4, 6
KILL_BYTES, HEADER_BYTES, TASK_LINE_BYTES = 150, 4096, 110
DEFAULT_SERIAL_BAUD = 9600  # what 8250 and most UARTs use with no options
SERIAL_PREFIXES = ("ttyS", "ttyAMA", "ttyUSB", "ttymxc", "ttySAC", "ttyO", "ttyPS")
BIGGEST = 5


@dataclass(frozen=True)
class BigProcess:
    pid: int
    comm: str
    rss: int
    oom_score: int
    oom_score_adj: int


@dataclass(frozen=True)
class OomSettings:
    oom_dump_tasks: int
    process_count: int
    console_loglevel: int
    serial_console: Optional[str]  # device, e.g. ttyS0
    serial_baud: int  # 0 without a serial console
    baud_given: bool  # False when the kernel default applies
    panic_on_oom: int
    kernel_panic: int  # seconds before reboot after a panic; 0 = hang
    overcommit_memory: int
    commit_limit: int
    committed: int
    biggest: Tuple[BigProcess, ...]


@dataclass(frozen=True)
class OomCheck:
    setting: str
    value: str
    status: str  # ok, risk, info
    explanation: str


def _int(path: Path, default: int = 0) -> int:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def serial_console(cmdline: str, consoles: str) -> Tuple[Optional[str], int, bool]:
    """(device, baud, baud_given) of the last serial console= on the command line."""
    found: Tuple[Optional[str], int, bool] = (None, 0, False)
    for arg in cmdline.split():
        if arg == "--":  # what follows belongs to init, not the kernel
            break
        if not arg.startswith("console="):
            continue
        device, _, options = arg[len("console="):].partition(",")
        if device.startswith(SERIAL_PREFIXES):
            baud = re.match(r"\d*", options).group(0)
            found = (device, int(baud) if baud else DEFAULT_SERIAL_BAUD, bool(baud))
    enabled = [line.split()[0] for line in consoles.splitlines() if line.strip()]
    if found[0] and consoles and found[0] not in enabled:
        return (None, 0, False)  # named on the command line but not registered
    return found


def _processes(proc_root: Path) -> Tuple[int, Tuple[BigProcess, ...]]:
    """(task lines an OOM report would dump, the biggest processes by RSS).
    The kernel's dump_tasks skips init, kernel threads and tasks without
    memory; in /proc the last two have no VmRSS line."""
    procs, dumped = [], 0
    for entry in proc_root.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            name, rss, _ = procfs.parse_status(status)
            score = int((entry / "oom_score").read_text())
            adj = int((entry / "oom_score_adj").read_text())
        except (OSError, ValueError):  # exited while read
            continue
        dumped += entry.name != "1" and "\nVmRSS:" in status
        procs.append(BigProcess(int(entry.name), name, rss, score, adj))
    procs.sort(key=lambda p: p.rss, reverse=True)
    return dumped, tuple(procs[:BIGGEST])


def read_oom_settings(proc_root: Path = Path("/proc")) -> OomSettings:
    sys_vm, sys_kernel = proc_root / "sys/vm", proc_root / "sys/kernel"
    try:
        cmdline = (proc_root / "cmdline").read_text()
    except OSError:
        cmdline = ""
    try:
        consoles = (proc_root / "consoles").read_text()
    except OSError:
        consoles = ""
    device, baud, given = serial_console(cmdline, consoles)
    dumped, biggest = _processes(proc_root)
    try:
        meminfo = procfs.parse_meminfo((proc_root / "meminfo").read_text())
    except OSError:
        meminfo = {}
    return OomSettings(
        oom_dump_tasks=_int(sys_vm / "oom_dump_tasks"),
        process_count=dumped,
        console_loglevel=_int(sys_kernel / "printk", 7),
        serial_console=device,
        serial_baud=baud,
        baud_given=given,
        panic_on_oom=_int(sys_vm / "panic_on_oom"),
        kernel_panic=_int(sys_kernel / "panic"),
        overcommit_memory=_int(sys_vm / "overcommit_memory"),
        commit_limit=meminfo.get("CommitLimit", 0),
        committed=meminfo.get("Committed_AS", 0),
        biggest=biggest,
    )


def console_report_bytes(settings: OomSettings) -> int:
    """Bytes of one OOM report that reach the console at its loglevel."""
    size = KILL_BYTES if KILL_LEVEL < settings.console_loglevel else 0
    if HEADER_LEVEL < settings.console_loglevel:
        size += HEADER_BYTES
    if TASKS_LEVEL < settings.console_loglevel and settings.oom_dump_tasks:
        size += TASK_LINE_BYTES * settings.process_count
    return size


def console_seconds(settings: OomSettings) -> float:
    """Seconds a serial console needs per OOM report (8N1: 10 bits a byte)."""
    if not settings.serial_baud:
        return 0.0
    return console_report_bytes(settings) * 10 / settings.serial_baud


def _check_dump_tasks(s: OomSettings) -> OomCheck:
    value = str(s.oom_dump_tasks)
    if not s.oom_dump_tasks:
        return OomCheck("vm.oom_dump_tasks", value, "info",
                        "off: OOM reports are short, but do not show who held the memory")
    on_console = TASKS_LEVEL < s.console_loglevel
    where = "to the console and dmesg" if on_console else "to dmesg only (below console loglevel)"
    status = "risk" if on_console and s.serial_console else "ok"
    return OomCheck("vm.oom_dump_tasks", value, status,
                    f"each OOM kill logs {s.process_count} task lines "
                    f"(~{s.process_count * TASK_LINE_BYTES // 1024} KiB) {where}; "
                    "set 0 to shorten reports at the cost of the culprit list")


def _check_loglevel(s: OomSettings) -> OomCheck:
    level = s.console_loglevel
    if level <= KILL_LEVEL:
        text, status = "the console shows nothing of an OOM kill; dmesg has it all", "info"
    elif level <= HEADER_LEVEL:
        text, status = "the console shows only the 'Killed process' line; the report goes to dmesg", "ok"
    elif level <= TASKS_LEVEL:
        text, status = "the console prints the OOM header and memory summary (~4 KiB) per kill", "info"
    else:
        text, status = "the console prints the whole OOM report including the task list", "risk"
    return OomCheck("kernel.printk", f"console_loglevel {level}", status,
                    text + "; a lower loglevel keeps OOM fast at the cost of console detail")


def _check_console(s: OomSettings) -> OomCheck:
    if not s.serial_console:
        return OomCheck("console", "no serial console", "ok",
                        "OOM reports are not written to a slow UART")
    seconds = console_seconds(s)
    baud = f"{s.serial_baud} baud" + ("" if s.baud_given else " (default, none on cmdline)")
    status = "risk" if seconds >= 1 else "ok"
    return OomCheck("console", f"{s.serial_console} {baud}", status,
                    f"~{seconds:.2f} s per OOM report on the serial line while every allocating "
                    "task waits on oom_lock; raise the baud rate or the loglevel threshold")


def _check_panic(s: OomSettings) -> OomCheck:
    if s.panic_on_oom == 0:
        return OomCheck("vm.panic_on_oom", "0", "ok",
                        "the OOM killer kills one process; the host stays up")
    reboot = f"reboots after {s.kernel_panic} s" if s.kernel_panic > 0 else "hangs (kernel.panic=0)"
    scope = "any OOM, even in a cgroup" if s.panic_on_oom == 2 else "a system-wide OOM"
    return OomCheck("vm.panic_on_oom", str(s.panic_on_oom), "risk",
                    f"{scope} panics the kernel, which then {reboot}: deterministic, but a leak "
                    "takes the whole host down")


def _check_overcommit(s: OomSettings) -> OomCheck:
    mode = s.overcommit_memory
    if mode == 2:
        return OomCheck("vm.overcommit_memory", "2", "info",
                        f"strict: allocations fail with ENOMEM past CommitLimit "
                        f"({s.commit_limit >> 20} MiB, {s.committed >> 20} MiB committed), "
                        "so a leak fails in the leaker rather than waking the OOM killer")
    if mode == 1:
        return OomCheck("vm.overcommit_memory", "1", "risk",
                        "always overcommit: no allocation fails, so every leak ends in the OOM "
                        "killer; needed by some sparse-memory workloads")
    return OomCheck("vm.overcommit_memory", "0", "ok",
                    "heuristic: absurd requests fail, a slow leak still ends in the OOM killer")


def _check_victims(s: OomSettings) -> Tuple[OomCheck, ...]:
    checks = []
    for proc in s.biggest:
        value = f"pid {proc.pid} {proc.comm} {proc.rss >> 20} MiB adj {proc.oom_score_adj}"
        if proc.oom_score_adj == -1000:
            checks.append(OomCheck("oom_score_adj", value, "risk",
                                   "never OOM-killed: if it leaks, other processes die instead"))
        else:
            checks.append(OomCheck("oom_score_adj", value, "info",
                                   f"oom_score {proc.oom_score}: higher is killed first"))
    return tuple(checks)


def assess(settings: OomSettings) -> Tuple[OomCheck, ...]:
    return (
        _check_dump_tasks(settings),
        _check_loglevel(settings),
        _check_console(settings),
        _check_panic(settings),
        _check_overcommit(settings),
    ) + _check_victims(settings)
