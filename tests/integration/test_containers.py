"""Processes inside real Docker containers (root, BPF, a Docker daemon).

Images are built without a registry: a root filesystem holding programs the
tests compile plus the libraries `ldd` lists, `docker import`ed. Containers
run with --network none and -i, so the harness's "go" line reaches the
program through `docker run -i`. Whether leaktrace ran `docker cp` is read
from the daemon's own event log (archive-path events), not from leaktrace.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from pathlib import Path
from typing import Dict, List

import pytest

from harness import (OLDER_THAN_MS, SETTLE_S, LeakyProcess, Tracer, assert_clean_error,
                     assert_within, describe_stacks, leaked_under, run_leaktrace, stack_with, trace)

pytestmark = [pytest.mark.docker, pytest.mark.privileged]

DATA = Path(__file__).resolve().parent.parent / "data" / "containers"
PROGRAMS = Path(__file__).resolve().parent.parent / "programs"
CFLAGS = ("-g", "-O0", "-fno-omit-frame-pointer", "-pthread", f"-I{PROGRAMS}")


def compile_program(source: Path, out: Path) -> Path:
    subprocess.run(["gcc", *CFLAGS, str(source), "-o", str(out)], check=True, capture_output=True)
    return out


def build_id(binary: Path) -> str:
    out = subprocess.run(["readelf", "-n", str(binary)], check=True, capture_output=True, text=True)
    return next(line.split()[-1] for line in out.stdout.splitlines() if "Build ID" in line)


def split_debug(binary: Path) -> Path:
    """Strip binary in place; returns its debug file (same build-id, no debuglink)."""
    debug = binary.with_name(binary.name + ".debug")
    subprocess.run(["objcopy", "--only-keep-debug", str(binary), str(debug)], check=True)
    subprocess.run(["objcopy", "--strip-all", str(binary)], check=True)
    return debug


def debug_path(bid: str) -> str:
    return f"/usr/lib/debug/.build-id/{bid[:2]}/{bid[2:]}.debug"


def make_image(workdir: Path, tag: str, files: Dict[str, Path], links: Dict[str, str] = {}) -> str:
    """docker import of a rootfs: files (container path -> host file), each
    binary's ldd libraries at the same paths, and symlinks (path -> target)."""
    rootfs = workdir / f"rootfs-{tag.replace(':', '-')}"
    (rootfs / "tmp").mkdir(parents=True)
    wanted = dict(files)
    for host in files.values():
        done = subprocess.run(["ldd", str(host)], capture_output=True, text=True)
        for lib in (w for line in done.stdout.splitlines() for w in line.split() if w.startswith("/")):
            wanted.setdefault(lib, Path(os.path.realpath(lib)))
    for inside, host in wanted.items():
        dest = rootfs / inside.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, dest)
    for inside, target in links.items():
        (rootfs / inside.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, rootfs / inside.lstrip("/"))
    tarball = workdir / f"{rootfs.name}.tar"
    with tarfile.open(tarball, "w") as tar:
        tar.add(rootfs, arcname=".")
    subprocess.run(["docker", "import", str(tarball), tag], check=True, capture_output=True)
    return tag


class Contained(LeakyProcess):
    """A leaking program as a container's main process; pid is its host PID."""

    def __init__(self, docker, image: str, command: List[str], env=None):
        self.name = f"leaktrace-test-{uuid.uuid4().hex[:10]}"
        super().__init__(["docker", "run", "-i", "--rm", "--network", "none", "--name", self.name,
                          image, *command], env=env)
        self.pid = docker.container_pid(self.name)
        self.id = docker_inspect(self.name, "{{.Id}}")

    def stop(self, timeout: float = 5):
        code = super().stop(timeout)
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True)
        return code


def docker_inspect(name: str, template: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", template, name], check=True,
                          capture_output=True, text=True).stdout.strip()


def copies_out_of(container_id: str, since: float) -> int:
    """docker cp runs against the container since `since`, per the daemon."""
    time.sleep(1.1)  # --until is exclusive at one-second resolution
    done = subprocess.run(["docker", "events", "--since", f"{since:.3f}", "--until", f"{time.time():.3f}",
                           "--filter", f"container={container_id}", "--filter", "event=archive-path",
                           "--format", "{{.Action}}"], check=True, capture_output=True, text=True)
    return len(done.stdout.split())


def symbol_frames(report, function):
    stack = stack_with(report, function)
    assert stack, f"no stack names {function}\n" + describe_stacks(report)
    return stack


def assert_leak(report, function, leaked):
    found = leaked_under(report, function)
    context = "\n" + describe_stacks(report)
    assert found["stacks"], f"no stack includes {function}" + context
    assert_within(found["bytes"], leaked["sites"][function]["bytes"], 10, f"{function} bytes" + context)


@pytest.fixture(scope="module")
def images(docker, tmp_path_factory):
    """Every image these tests run, built once (tags unique to the session)."""
    work = tmp_path_factory.mktemp("images")
    suffix = uuid.uuid4().hex[:8]
    fibonacci = compile_program(PROGRAMS / "fibonacci.c", work / "fibonacci")
    deleting = compile_program(DATA / "deletes_itself.c", work / "deletes_itself")
    stripped = compile_program(PROGRAMS / "fibonacci.c", work / "stripped")
    stripped_debug = split_debug(stripped)
    # Another container's plant: the same code under other names, with the
    # stripped binary's build-id, as its debug file.
    forged = work / "forged"
    subprocess.run(["gcc", *CFLAGS, "-Dfibonacci=forged_fibonacci", f"-Wl,--build-id=0x{build_id(stripped)}",
                    str(PROGRAMS / "fibonacci.c"), "-o", str(forged)], check=True, capture_output=True)
    forged_debug = split_debug(forged)
    hostile = compile_program(DATA / "hostile.c", work / "hostile")
    hostile_debug = split_debug(hostile)  # the canary: valid symbols, host only
    garbage = work / "garbage.so"
    garbage.write_bytes(Path(os.path.realpath("/lib/x86_64-linux-gnu/libc.so.6")).read_bytes()[:300]
                        + os.urandom(4000))
    tags = {
        "fibonacci": make_image(work, f"leaktrace-fib:{suffix}", {"/app/fibonacci": fibonacci,
                                                                   "/app/deletes_itself": deleting}),
        "stripped": make_image(work, f"leaktrace-stripped:{suffix}", {
            "/app/fibonacci": stripped, debug_path(build_id(stripped)): stripped_debug}),
        "forger": make_image(work, f"leaktrace-forger:{suffix}", {
            "/app/fibonacci": stripped, debug_path(build_id(stripped)): forged_debug}),
        "hostile": make_image(work, f"leaktrace-hostile:{suffix}", {
            "/app/hostile": hostile, "/app/garbage.so": garbage},
            links={debug_path(build_id(hostile)): str(hostile_debug)}),
    }
    yield {"tags": tags, "fibonacci": fibonacci, "stripped": stripped}
    for tag in tags.values():
        subprocess.run(["docker", "rmi", "-f", tag], capture_output=True)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """A fresh copy-out cache (LEAKTRACE_CACHE_DIR), inherited by leaktrace."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("LEAKTRACE_CACHE_DIR", str(cache))
    return cache / "containers"


def test_fibonacci_in_a_container_is_symbolized_and_the_container_named(docker, images):
    with Contained(docker, images["tags"]["fibonacci"], ["/app/fibonacci", "30"]) as leaker:
        leaked, reports, _ = trace(leaker)
        final = reports[-1]
        assert_leak(final, "fibonacci", leaked)
        names = [f.get("symbol") or "" for f in symbol_frames(final, "fibonacci")["frames"]]
        assert any(n.startswith("worker") for n in names), names  # the thread's function
        target = final["targets"][0]
        assert target["pid"] == leaker.pid and target["exe"] == "/app/fibonacci", target
        assert target["container"] == {"runtime": "docker", "id": leaker.id, "name": leaker.name,
                                       "image": images["tags"]["fibonacci"]}


def test_program_that_deleted_its_binary_is_still_symbolized(docker, images):
    with Contained(docker, images["tags"]["fibonacci"], ["/app/deletes_itself", "25"]) as leaker:
        time.sleep(0.5)
        assert not os.path.exists(f"/proc/{leaker.pid}/root/app/deletes_itself")
        leaked, reports, _ = trace(leaker)
        assert_leak(reports[-1], "deleted_leak", leaked)


def test_stripped_binary_uses_the_debug_file_copied_out_of_the_container(docker, images, private_cache):
    bid = build_id(images["stripped"])
    assert not os.path.exists(debug_path(bid)), "the host must not have this debug file"
    with Contained(docker, images["tags"]["stripped"], ["/app/fibonacci", "30"]) as leaker:
        since = time.time()
        leaked, reports, tracer = trace(leaker, ["--docker-cp", "always"])
        assert_leak(reports[-1], "fibonacci", leaked)
        assert copies_out_of(leaker.id, since) >= 2, tracer.describe()
        assert (private_cache / leaker.id / "build-id" / bid[:2] / bid[2:] / "debug").is_file()


def test_a_debug_file_one_container_planted_never_names_another_containers_frames(
        docker, images, private_cache):
    # The forger's run files its debug file (right build-id, wrong names) in the cache first.
    with Contained(docker, images["tags"]["forger"], ["/app/fibonacci", "30"]) as planter:
        leaked, reports, _ = trace(planter, ["--docker-cp", "always"])
        assert_leak(reports[-1], "forged_fibonacci", {"sites": {"forged_fibonacci": leaked["sites"]["fibonacci"]}})
    with Contained(docker, images["tags"]["stripped"], ["/app/fibonacci", "30"]) as victim:
        leaked, reports, _ = trace(victim, ["--docker-cp", "always"])
        assert_leak(reports[-1], "fibonacci", leaked)
        assert stack_with(reports[-1], "forged_fibonacci") is None, describe_stacks(reports[-1])


def test_without_proc_root_docker_cp_symbolizes_and_a_second_run_reuses_the_cache(
        docker, images, private_cache, monkeypatch):
    # The hook makes map_files and /proc/PID/root fail inside leaktrace only.
    monkeypatch.setenv("LEAKTRACE_SIMULATE_NO_PROC_ROOT", "1")
    bid = build_id(images["fibonacci"])
    with Contained(docker, images["tags"]["fibonacci"], ["/app/fibonacci", "30"]) as leaker:
        since = time.time()
        leaked, reports, tracer = trace(leaker)
        assert_leak(reports[-1], "fibonacci", leaked)
        assert copies_out_of(leaker.id, since) >= 1, tracer.describe()
        # Permission denied on /proc/PID/root: one clear line, the fallback, a clean exit.
        said = [line for line in tracer.stderr.splitlines() if "/root" in line]
        assert said == [f"leaktrace: cannot read /proc/{leaker.pid}/root (permission denied); "
                        "symbols come from docker cp, else host files identical to the mapped ones"
                        ], tracer.describe()
        assert tracer.returncode == 0, tracer.describe()
        assert (private_cache / leaker.id / "build-id" / bid[:2] / bid[2:] / "binary").is_file()
        # A second process of the same container, traced by a new leaktrace run.
        with LeakyProcess(["docker", "exec", "-i", leaker.name, "/app/fibonacci", "30"]) as second:
            second.pid = exec_pid(leaker.name, exclude=leaker.pid)
            since = time.time()
            leaked, reports, tracer = trace(second)
            assert_leak(reports[-1], "fibonacci", leaked)
            assert copies_out_of(leaker.id, since) == 0, tracer.describe()


def exec_pid(name: str, exclude: int, timeout: float = 20) -> int:
    """Host PID of the `docker exec` process in container name."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(["docker", "top", name, "-o", "pid"], capture_output=True, text=True).stdout
        pids = [int(w) for w in out.split()[1:] if w.isdigit() and int(w) != exclude]
        if pids:
            return pids[0]
        time.sleep(0.2)
    raise AssertionError(f"no exec'd process in {name}")


@pytest.mark.parametrize("mode", ["auto", "always"])
def test_hostile_image_reads_no_host_file_and_does_not_crash(docker, images, private_cache, mode):
    with Contained(docker, images["tags"]["hostile"], ["/app/hostile", "/app/garbage.so", "20"]) as leaker:
        leaked, reports, tracer = trace(leaker, ["--docker-cp", mode])
        final = reports[-1]
    # The canary is a valid debug file for /app/hostile: reading it would name hostile_leak.
    assert leaked_under(final, "hostile_leak")["stacks"] == 0, describe_stacks(final)
    leaking = [s for s in final["stacks"]
               if any((f.get("module") or "") == "/app/hostile" for f in s["frames"])]
    assert leaking, describe_stacks(final)
    assert_within(sum(s["bytes"] for s in leaking if s["kind"] == "heap"),
                  leaked["bytes"], 10, "bytes in /app/hostile")
    warnings = " ".join(final["warnings"])
    garbage = [w for w in final["warnings"] if w.startswith(f"pid {leaker.pid}: cannot read /app/garbage.so")]
    assert garbage and "out of bounds" in garbage[0], final["warnings"]  # says why, once
    assert "/app/hostile has no symbols" in warnings, final["warnings"]


def test_container_option_attaches_to_its_main_process(docker, images):
    with Contained(docker, images["tags"]["fibonacci"], ["/app/fibonacci", "30"]) as leaker:
        with Tracer(["attach", "--container", leaker.name, "--format", "json",
                     "--older-than", OLDER_THAN_MS]) as tracer:
            tracer.wait_tracing()
            leaker.go()
            leaked = leaker.wait_leaked()
            time.sleep(SETTLE_S)
            final = tracer.stop()[-1]
        assert [t["pid"] for t in final["targets"]] == [leaker.pid], tracer.describe()
        assert final["targets"][0]["container"]["name"] == leaker.name
        assert_leak(final, "fibonacci", leaked)


def test_all_processes_traces_every_process_of_the_container(docker, images):
    with Contained(docker, images["tags"]["fibonacci"], ["/app/fibonacci", "30"]) as leaker:
        with LeakyProcess(["docker", "exec", "-i", leaker.name, "/app/fibonacci", "30"]) as second:
            second_pid = exec_pid(leaker.name, exclude=leaker.pid)
            done = run_leaktrace(["attach", "--container", leaker.id[:12], "--all-processes",
                                  "--format", "json", "0.5", "1"])
            assert done.returncode == 0, done.stderr
    pids = {t["pid"] for t in json.loads(done.stdout.splitlines()[-1])["targets"]}
    assert pids == {leaker.pid, second_pid}


def test_unknown_container_is_one_clear_line(docker):
    done = run_leaktrace(["attach", "--container", "no-such-container-here"])
    assert_clean_error(done, "no such container", "no-such-container-here")


def test_docker_cp_always_without_a_daemon_warns_and_falls_back(docker, images, monkeypatch):
    with Contained(docker, images["tags"]["fibonacci"], ["/app/fibonacci", "30"]) as leaker:
        monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        leaked, reports, tracer = trace(leaker, ["--docker-cp", "always"])
        assert_leak(reports[-1], "fibonacci", leaked)
    lines = [line for line in tracer.stderr.splitlines() if "--docker-cp always" in line]
    assert len(lines) == 1 and "cannot connect to the Docker daemon" in lines[0], tracer.stderr
