"""Build and run the small C/C++ programs the symbolizer tests read.

Ground truth comes from binutils, not from leaktrace: `nm` gives each
function's address and size, `readelf` the file type and build-id, and the
live /proc/PID/maps the load base (start of the file's offset-0 mapping).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, Iterator, Tuple

import pytest

DATA = Path(__file__).resolve().parent.parent / "data" / "symbols"


def need_tool(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing and not os.environ.get("CI"):
        pytest.skip(f"needs {', '.join(missing)} (scripts/setup.sh installs them)")


def compile_program(out: Path, source: str, *flags: str) -> Path:
    """Compile tests/data/symbols/<source> into `out` with debug info."""
    compiler = "g++" if source.endswith(".cpp") else "gcc"
    need_tool(compiler, "nm", "readelf", "objcopy")
    subprocess.run([compiler, "-g", "-O1", "-o", str(out), str(DATA / source), *flags],
                   check=True, capture_output=True)
    return out


def build_shape(tmp: Path, *flags: str) -> Tuple[Path, Path]:
    """libshape.so and a program linked against it (found through its rpath)."""
    lib = compile_program(tmp / "libshape.so", "shape.c", "-shared", "-fPIC")
    program = compile_program(tmp / "uses_shape", "uses_shape.c", *flags,
                              f"-L{tmp}", "-lshape", f"-Wl,-rpath,{tmp}")
    return program, lib


def strip_with_debuglink(binary: Path, debug: Path) -> None:
    """Split debug info out the way distributions do, linking it back by name."""
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-all", f"--add-gnu-debuglink={debug}", str(binary)],
                   check=True, cwd=debug.parent)


def nm_functions(binary: Path) -> Dict[str, Tuple[int, int]]:
    """name -> (address, size) of every sized function symbol, per nm."""
    out = subprocess.run(["nm", "-S", "--defined-only", str(binary)],
                         check=True, capture_output=True, text=True).stdout
    functions = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "Tt":
            functions.setdefault(fields[3], (int(fields[0], 16), int(fields[1], 16)))
    return functions


def build_id(binary: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(binary)], check=True,
                         capture_output=True, text=True).stdout
    return re.search(r"Build ID: ([0-9a-f]+)", out).group(1)


def is_pie_or_shared(binary: Path) -> bool:
    out = subprocess.run(["readelf", "-h", str(binary)], check=True,
                         capture_output=True, text=True).stdout
    return "EXEC" not in re.search(r"Type:\s+(\S+)", out).group(1)


def load_base(pid: int, binary: Path) -> int:
    """Where the file's offset 0 is mapped: its load bias, for gcc's layouts."""
    target = os.stat(binary).st_ino
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 6 and int(fields[4]) == target and int(fields[2], 16) == 0:
            return int(fields[0].split("-")[0], 16)
    raise AssertionError(f"{binary} is not mapped in {pid}")


def runtime_address(pid: int, binary: Path, vaddr: int) -> int:
    return vaddr + load_base(pid, binary) if is_pie_or_shared(binary) else vaddr


@contextlib.contextmanager
def running(program: Path, cwd: Path = None) -> Iterator[subprocess.Popen]:
    """Run a test program until it says "ready"; stop it on exit."""
    process = subprocess.Popen([str(program)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               cwd=cwd, text=True)
    try:
        line = process.stdout.readline()
        assert line.startswith("ready"), f"{program} did not start: {line!r}"
        yield process
    finally:
        stop(process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.stdin.close()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
