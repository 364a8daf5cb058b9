"""One error family: every failure a user can cause or meet, with an exit code.

The CLI catches LeaktraceError at the top and prints `leaktrace: <message>`
(plus a hint) on one line each, never a traceback. Exit codes follow
sysexits(3) where one fits, so scripts can tell usage from environment.
"""
from __future__ import annotations

EX_USAGE = 64  # bad option values, bad PID
EX_NOINPUT = 66  # target process or file does not exist
EX_UNAVAILABLE = 69  # a required facility is missing: bcc, headers, tracefs
EX_SOFTWARE = 70  # the BPF program failed to load
EX_NOPERM = 77  # not root / missing capabilities


class LeaktraceError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str = "", exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(LeaktraceError):
    exit_code = EX_USAGE


class TargetError(LeaktraceError):
    """The process to trace is missing, gone, or cannot be traced."""

    exit_code = EX_NOINPUT


class EnvironmentProblem(LeaktraceError):
    """bcc, kernel headers, tracefs or a tracepoint is missing."""

    exit_code = EX_UNAVAILABLE


class PermissionProblem(LeaktraceError):
    exit_code = EX_NOPERM


class ProbeLoadError(LeaktraceError):
    exit_code = EX_SOFTWARE


PRIVILEGE_HINT = (
    "run as root (sudo leaktrace ...), or grant CAP_BPF, CAP_PERFMON and "
    "CAP_SYS_PTRACE; inside a container add --privileged or those capabilities "
    "and mount /sys/kernel/tracing"
)
