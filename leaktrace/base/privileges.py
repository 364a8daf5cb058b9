"""What this process may do: its capabilities, and why the kernel refused it a
process's files (whether bpf() itself is allowed: probes/features.py).

Being root is not enough: capsh, setpriv or a container can drop CAP_BPF,
CAP_PERFMON and CAP_SYS_ADMIN from root, a seccomp filter or an LSM can refuse
bpf(), and a process holding capabilities root lacks cannot be read even by
root. Each case raises PermissionProblem (exit 77) saying which it is, before
bcc prints its own multi-line errors.
"""
from __future__ import annotations

import os

from .errors import PRIVILEGE_HINT, PermissionProblem

# linux/capability.h
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39
_CAP_NAMES = ("chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid",
              "setuid", "setpcap", "linux_immutable", "net_bind_service", "net_broadcast",
              "net_admin", "net_raw", "ipc_lock", "ipc_owner", "sys_module", "sys_rawio",
              "sys_chroot", "sys_ptrace", "sys_pacct", "sys_admin", "sys_boot", "sys_nice",
              "sys_resource", "sys_time", "sys_tty_config", "mknod", "lease", "audit_write",
              "audit_control", "setfcap", "mac_override", "mac_admin", "syslog", "wake_alarm",
              "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore")


def capabilities(pid: object = "self", field: str = "CapEff") -> int:
    """A capability set from /proc/PID/status (0 when unreadable)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def cap_names(mask: int) -> str:
    return ", ".join(f"cap_{_CAP_NAMES[bit]}" if bit < len(_CAP_NAMES) else f"cap_{bit}"
                     for bit in range(64) if mask >> bit & 1)


def check_tracing() -> None:
    """Raise PermissionProblem unless this process may load and attach BPF programs."""
    caps = capabilities()
    if caps >> CAP_SYS_ADMIN & 1 or (caps >> CAP_BPF & 1 and caps >> CAP_PERFMON & 1):
        return
    if os.geteuid() != 0:
        raise PermissionProblem("tracing needs root or CAP_BPF and CAP_PERFMON", hint=PRIVILEGE_HINT)
    raise PermissionProblem(
        "this root process lacks CAP_BPF and CAP_PERFMON (and CAP_SYS_ADMIN): they were dropped "
        "(capsh, setpriv, a container's settings)",
        hint="run leaktrace with those capabilities (docker: --cap-add BPF --cap-add PERFMON, "
             "or --privileged)")


def denied(path: str, pid: int) -> PermissionProblem:
    """The error for a process file the kernel would not let us read."""
    caps = capabilities()
    if os.geteuid() != 0 and not caps >> CAP_SYS_PTRACE & 1:
        return PermissionProblem(f"cannot read {path}", hint=PRIVILEGE_HINT)
    if not caps >> CAP_SYS_PTRACE & 1:
        missing = capabilities(pid, "CapPrm") & ~capabilities("self", "CapPrm")
        why = (f"this process lacks CAP_SYS_PTRACE"
               + (f" and PID {pid} holds capabilities it lacks ({cap_names(missing)})" if missing else ""))
        hint = "give leaktrace CAP_SYS_PTRACE (it was dropped: capsh, setpriv, a container's settings)"
    else:
        why = (f"the kernel refuses access even with CAP_SYS_PTRACE: PID {pid} is outside this "
               "process's user namespace, or a security module (Yama, SELinux, AppArmor) protects it")
        hint = "trace it from the host's initial namespace, or trace another process"
    return PermissionProblem(f"cannot read {path}: {why}", hint=hint)
