"""A cache planted by another user cannot harm a traced program (issue #23.1).

The attack, for real: an unprivileged user (nobody) computes the placement
cache file for libc (every input of its name is world-readable), plants
`free` at offset 2 (inside its first instruction) and garbage unwind rows for
libc's build-id in the cache directory its own HOME gives, and root runs
leaktrace with that user's environment (`sudo -E`). leaktrace must not read
the planted files: the traced program's output stays exactly that of an
untraced run (a probe inside `test rdi, rdi` makes frees stop freeing),
every free is seen, and the planted files stay as planted.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness import AS_NOBODY, NOBODY, REPO, Tracer

pytestmark = pytest.mark.privileged

LIBC = "/lib/x86_64-linux-gnu/libc.so.6"
ROUNDS = 2
REAL_FREES_PER_ROUND = 1000  # alloc_rounds.c: 5 frees x 200 calls

PLANT = """
import json, struct, sys
from leaktrace.probes import placement_cache
from leaktrace.symbols import open_elf
from leaktrace.unwind import tables
libc = sys.argv[1]
placement = placement_cache.cache_file(libc)
placement.write_text(json.dumps({"free rdi": [2, "planted"], "malloc rdi": [1, "planted"]}))
rows = b"".join(tables.ROW.pack(pc, 8, 1, 0) for pc in range(0, 4096, 16))
unwind = tables.cache.directory("unwind") / (open_elf(libc).build_id + ".rows")
unwind.write_bytes(tables.HEADER.pack(tables.CACHE_MAGIC, len(rows) // tables.ROW.size, 1) + rows)
print(placement)
print(unwind)
"""


@pytest.fixture
def nobody_home():
    """A HOME that belongs to nobody, in a directory nobody can reach."""
    top = tempfile.mkdtemp(prefix="leaktrace-planted-")
    os.chmod(top, 0o755)
    home = Path(top) / "home"
    home.mkdir()
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    yield home
    shutil.rmtree(top, ignore_errors=True)


def nobody_env(home: Path) -> dict:
    """nobody's environment as `sudo -E` would hand it to root."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("LEAKTRACE_CACHE_DIR", "XDG_CACHE_HOME", "BCC_KERNEL_SOURCE")}
    env["HOME"] = str(home)
    return env


def plant(home: Path) -> list:
    done = subprocess.run([*AS_NOBODY, sys.executable, "-c", PLANT, LIBC], env=nobody_env(home),
                          capture_output=True, text=True, cwd=REPO, timeout=60)
    assert done.returncode == 0, done.stderr
    files = [Path(line) for line in done.stdout.split()]
    for file in files:  # planted where root would have looked with nobody's HOME
        assert str(file).startswith(str(home / ".cache" / "leaktrace")), file
        assert file.stat().st_uid == NOBODY.pw_uid
    return files


def rounds_of(command, env=None, tracer_args=None):
    """Run alloc_rounds for ROUNDS rounds, traced by leaktrace when tracer_args
    is given. Returns (program stdout lines, exit code, final report, tracer)."""
    program = subprocess.Popen([str(c) for c in command], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    tracer = None
    try:
        if tracer_args is not None:
            tracer = Tracer(["attach", "-p", program.pid, "--format", "json", *tracer_args], env=env)
            tracer.wait_tracing()
        lines = []
        for number in range(1, ROUNDS + 1):
            program.stdin.write("go\n")
            program.stdin.flush()
            while not (line := program.stdout.readline()).startswith(f"ROUND {number} ") and line:
                lines.append(line.rstrip("\n"))
            lines.append(line.rstrip("\n"))
        reports = tracer.stop() if tracer else []
    finally:
        if tracer:
            tracer.kill()
        program.stdin.close()
        rest = program.stdout.read()
        code = program.wait(30)
    lines += rest.splitlines()
    return lines, code, (reports[-1] if reports else None), tracer


@pytest.mark.parametrize("how", ["sudo -E (HOME kept)", "LEAKTRACE_CACHE_DIR kept"])
def test_a_cache_planted_by_another_user_cannot_harm_the_target(build, nobody_home, how):
    program = build("alloc_rounds.c")
    planted = plant(nobody_home)
    before = {file: file.read_bytes() for file in planted}
    env = nobody_env(nobody_home)
    if how.startswith("LEAKTRACE_CACHE_DIR"):
        env["LEAKTRACE_CACHE_DIR"] = str(nobody_home / ".cache" / "leaktrace")

    untraced, untraced_code, _, _ = rounds_of([program])
    traced, code, final, tracer = rounds_of([program], env=env, tracer_args=[])

    context = f"untraced:\n{untraced}\ntraced:\n{traced}\n" + tracer.describe()
    assert (code, traced) == (untraced_code, untraced) == (0, untraced), context
    assert final["events"]["frees"] >= ROUNDS * REAL_FREES_PER_ROUND, final["events"]
    assert {file: file.read_bytes() for file in planted} == before  # never rewritten by root
    owners = {path.stat().st_uid for path in nobody_home.rglob("*")}
    assert owners == {NOBODY.pw_uid}, "root wrote into nobody's home"
    warnings = [line for line in tracer.stderr.splitlines() if "cache" in line and "warning" in line]
    if how.startswith("LEAKTRACE_CACHE_DIR"):
        assert len(warnings) == 1 and "belongs to user" in warnings[0], tracer.stderr
    else:
        assert warnings == [], tracer.stderr  # root's own cache, /var/cache/leaktrace
    assert "Traceback" not in tracer.stderr
    json.dumps(final)  # the report is whole
