"""Locate leaktrace's BPF sources and compile them with bcc.

The .c files live in bpf/ at the top of the repository; an installed wheel
carries them as leaktrace/bpf. Settings reach the C code as -D defines, never
by editing the source text.
"""
from __future__ import annotations

import os
import re
import threading
from pathlib import Path
from typing import Mapping, Optional

from ..base import timing
from ..base.errors import PRIVILEGE_HINT, PermissionProblem, ProbeLoadError
from . import features, headers


def bpf_dir() -> Path:
    packaged = Path(__file__).resolve().parent.parent / "bpf"
    if packaged.is_dir():
        return packaged
    checkout = Path(__file__).resolve().parents[2] / "bpf"
    if checkout.is_dir():
        return checkout
    raise ProbeLoadError("leaktrace's BPF sources are missing", hint="reinstall leaktrace")


def literal(value: int) -> str:
    """A C integer literal; kernel addresses in hex, which C reads as unsigned."""
    value = int(value)
    return f"{value:#x}" if value >= 1 << 63 else str(value)


def cflags(defines: Mapping[str, int]) -> list:
    return [f"-D{name}={literal(value)}" for name, value in sorted(defines.items())] + [
        f"-I{bpf_dir()}"
    ]


def dump(name: str, defines: Mapping[str, int]) -> str:
    """The program as bcc will compile it: settings first, then the source."""
    lines = [f"/* {name} compiled with: {' '.join(cflags(defines))} */"]
    lines += [f"#define {key} {literal(value)}" for key, value in sorted(defines.items())]
    return "\n".join(lines) + "\n" + _inline_includes(name, set())


_LOCAL_INCLUDE = re.compile(r'^#include "([^"]+)"$', re.MULTILINE)


def _inline_includes(name: str, seen: set) -> str:
    """bpf/<name> with its own #include "x.h" files pasted in, once each."""
    seen.add(name)

    def paste(match: "re.Match") -> str:
        header = match.group(1)
        if header in seen or not (bpf_dir() / header).is_file():
            return match.group(0) if header not in seen else ""
        return _inline_includes(header, seen)

    return _LOCAL_INCLUDE.sub(paste, (bpf_dir() / name).read_text())


# What bcc's exceptions say when the kernel answered EPERM.
_REFUSED = ("Operation not permitted", "Need super-user privileges")


def load(name: str, defines: Mapping[str, int]):
    """Compile bpf/<name> with bcc and return the bcc.BPF object."""
    bcc = features.import_bcc()
    features.ensure_tracefs()
    headers.ensure_kernel_source()
    path = bpf_dir() / name
    try:
        with timing.step("compile", "compiling the probes"):
            return bcc.BPF(src_file=str(path).encode(), cflags=cflags(defines))
    except Exception as exc:  # bcc raises bare Exception on compile/load errors
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, PermissionError) or any(sign in str(exc) for sign in _REFUSED):
            features.check_privileges()  # names a dropped capability or a blocked bpf()
            raise PermissionProblem(f"the kernel refused to load {name}: {detail}",
                                    hint=PRIVILEGE_HINT) from None
        raise ProbeLoadError(
            f"could not load {name}: {detail}",
            hint="rerun with --dump-bpf and include the output in a bug report; "
            "check kernel headers (BCC_KERNEL_SOURCE=" + os.environ.get("BCC_KERNEL_SOURCE", "") + ")",
        ) from None


class Compiling:
    """load(name, defines) started now in a thread, so the rest of the start-up
    (symbol tables, placement, unwind tables) runs while clang compiles: bcc's
    compile is a foreign call, which releases Python's lock. result() waits and
    returns or raises what load would have. The checks that print or refuse
    (tracefs, headers) run here, in the caller's thread."""

    def __init__(self, name: str, defines: Mapping[str, int]):
        features.import_bcc()
        features.ensure_tracefs()
        headers.ensure_kernel_source()
        self.defines = dict(defines)
        self._loaded = None
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._load, args=(name,), name="compile", daemon=True)
        self._thread.start()

    def _load(self, name: str) -> None:
        try:
            self._loaded = load(name, self.defines)
        except BaseException as exc:  # handed to result(), in the caller's thread
            self._error = exc

    def result(self):
        with timing.step("waiting for the compile"):
            self._thread.join()
        if self._error is not None:
            raise self._error
        return self._loaded
