"""One QEMU guest of the kernel matrix, from boot to power-off, bounded.

The guest's root is the host's own root filesystem: virtiofsd shares a
read-only bind of / (made in a private mount namespace, so the guest cannot
write to the host), the initramfs puts a tmpfs overlay on it and chroots
(guest_init.sh). So the guest runs this checkout, its .venv and the host's
bcc, compilers and libraries, exactly what the test suite runs, under another
kernel; building a Debian image per run would take minutes and test a
different userland.

Everything a guest needs (virtiofsd socket, initramfs, serial logs) lives in
a private temporary directory, so runs never collide. virtiofsd and QEMU die
with this process (PR_SET_PDEATHSIG) and are killed on exit, timeout or
Ctrl-C; nothing is left running.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from . import initramfs
from .kernels import Kernel

QEMU = "qemu-system-x86_64"
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
PR_SET_PDEATHSIG = 1
KVM_FAILED = "KVM internal error"


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass(frozen=True)
class GuestConfig:
    checkout: Path
    checks: str = "smoke"
    check_timeout: float = 900  # per check, inside the guest
    memory_mb: int = 3072
    cpus: int = 2
    tmpfs: str = "2G"
    run: str = ""  # a shell command to run instead of the checks (debugging)


def qemu_command(kernel: Kernel, initrd: Path, socket: Path, serial_log: Path, results: Path,
                 accel: str, config: GuestConfig) -> List[str]:
    """The QEMU command line; pure."""
    memory = f"{config.memory_mb}M"
    # Multi-threaded TCG runs stale code after the kernel patches its own text
    # (static keys flipped as probes come and go): a 6.18 guest died of an
    # "Oops: int3" in __schedule. One thread for all vCPUs keeps that exact.
    accel_option = "tcg,thread=single" if accel == "tcg" else accel
    return [
        QEMU, "-accel", accel_option, "-cpu", "max", "-m", memory, "-smp", str(config.cpus),
        "-object", f"memory-backend-memfd,id=mem,size={memory},share=on", "-numa", "node,memdev=mem",
        "-chardev", f"socket,id=vfs,path={socket}", "-device", "vhost-user-fs-pci,chardev=vfs,tag=host",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
        "-append", "console=ttyS0 panic=-1 loglevel=4",
        "-nodefaults", "-display", "none", "-no-reboot",
        "-serial", f"file:{serial_log}", "-serial", f"file:{results}",
    ]


def parse_results(text: str) -> Dict:
    """The JSON lines the guest wrote to its results port (serial adds \\r, may cut lines)."""
    parsed: Dict = {"kernel": None, "checks": [], "done": False, "boot_failed": None}
    for line in text.replace("\r", "").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "check" in record:
            parsed["checks"].append(record)
        elif "kernel" in record:
            parsed["kernel"] = record["kernel"]
        elif "done" in record:
            parsed["done"] = True
        elif "boot_failed" in record:
            parsed["boot_failed"] = record["boot_failed"]
    return parsed


class Guest:
    """with Guest(kernel, config, accel) as guest: guest.wait(timeout) -> results."""

    def __init__(self, kernel: Kernel, config: GuestConfig, accel: str):
        self.kernel, self.config, self.accel = kernel, config, accel
        self.dir = Path(tempfile.mkdtemp(prefix="leaktrace-matrix."))
        self.serial_log = self.dir / "console.log"
        self.results = self.dir / "results.jsonl"
        self._procs: List[subprocess.Popen] = []

    def __enter__(self) -> "Guest":
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _start(self) -> None:
        settings = {
            "MATRIX_CHECKOUT": str(self.config.checkout), "MATRIX_KERNEL_ROOT": str(self.kernel.root),
            "MATRIX_CHECKS": self.config.checks, "MATRIX_CHECK_TIMEOUT": str(int(self.config.check_timeout)),
            "MATRIX_TMPFS": self.config.tmpfs, "MATRIX_ACCEL": self.accel,
            "MATRIX_TIMEOUT_SCALE": "1" if self.accel == "kvm" else "10", "MATRIX_RUN": self.config.run,
        }
        initrd = self.dir / "initramfs.cpio"
        initramfs.build(self.kernel.modules, settings, initrd)
        socket = self.dir / "vfs.sock"
        self._start_virtiofsd(socket)
        log = open(self.dir / "qemu.log", "wb")
        self._procs.append(subprocess.Popen(
            qemu_command(self.kernel, initrd, socket, self.serial_log, self.results, self.accel, self.config),
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))
        log.close()

    def _start_virtiofsd(self, socket: Path) -> None:
        """virtiofsd on a read-only, non-recursive bind of / in its own mount namespace."""
        shared = self.dir / "root"
        shared.mkdir()
        script = ('mount --bind / "$1" && mount -o remount,bind,ro "$1" && '
                  f'exec {VIRTIOFSD} --socket-path="$2" -o source="$1" -o cache=always -o sandbox=chroot')
        log = open(self.dir / "virtiofsd.log", "wb")
        self._procs.append(subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", str(shared), str(socket)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent))
        log.close()
        deadline = time.monotonic() + 20
        while not socket.exists():
            if self._procs[-1].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("virtiofsd did not start: " + self.log("virtiofsd.log")[-500:])
            time.sleep(0.05)

    def log(self, name: str) -> str:
        try:
            return (self.dir / name).read_text(errors="replace")
        except OSError:
            return ""

    def read_results(self) -> Dict:
        return parse_results(self.log("results.jsonl"))

    def kvm_failed(self, exited: bool) -> bool:
        """KVM stopped the guest, or QEMU exited before the guest printed anything."""
        if self.accel != "kvm":
            return False
        return (exited and not self.log("console.log").strip()) or KVM_FAILED in self.log("qemu.log")

    def wait(self, timeout: float, on_progress=None) -> Dict:
        """Until the guest powers off, KVM fails or timeout; returns parsed results
        with "ended": poweroff | timeout | kvm-failed."""
        qemu = self._procs[-1]
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            # Read once: QEMU exiting between two reads passed a KVM failure off as a poweroff.
            exited = qemu.poll() is not None
            results = self.read_results()
            if on_progress and len(results["checks"]) > seen:
                for record in results["checks"][seen:]:
                    on_progress(record)
                seen = len(results["checks"])
            if self.kvm_failed(exited):
                return dict(results, ended="kvm-failed")
            if exited:
                return dict(results, ended="poweroff")
            if time.monotonic() > deadline:
                return dict(results, ended="timeout")
            time.sleep(0.5)

    def close(self, keep_logs: Optional[Path] = None) -> None:
        for proc in reversed(self._procs):  # QEMU first, then virtiofsd
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs = []
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for name in ("console.log", "results.jsonl", "qemu.log", "virtiofsd.log"):
                if (self.dir / name).exists():
                    shutil.copy2(self.dir / name, keep_logs / name)
        shutil.rmtree(self.dir, ignore_errors=True)
