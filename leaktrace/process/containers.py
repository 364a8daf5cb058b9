"""Which container a process runs in, and which processes a container runs.

Contract:
- container_of(pid) names the container of a host PID: the engine and id from
  /proc/PID/cgroup (cgroups.container_from_proc_cgroup, cgroup v1 and v2),
  the name and image from `docker inspect` for Docker containers when the
  docker CLI answers. A process in another mount namespace that no engine
  claims is reported as runtime "mount-ns" (its files are still reached
  through /proc/PID/root). None for a process that shares our filesystem view.
- find_container(name_or_id) asks the Docker daemon for a running container
  and its main PID; container_pids(pid) lists every process in the cgroup
  of that PID (its cgroup.procs and those of nested cgroups).
Bad input (no docker, daemon down, no such container, container stopped)
raises a LeaktraceError with a one-line message and a hint.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

from . import cgroups
from ..base.errors import EnvironmentProblem, TargetError
from ..base.model import Container

DOCKER_TIMEOUT_S = 15
MOUNT_NS_RUNTIME = "mount-ns"
_INSPECT_FORMAT = "{{json .}}"


@dataclass(frozen=True)
class RunningContainer:
    """A container as the Docker daemon describes it."""

    container: Container
    pid: int  # host PID of its main process; 0 when it is not running


def mount_namespace(pid: int, proc: str = "/proc") -> Optional[str]:
    """The mount namespace of pid (`mnt:[4026531841]`), None when unreadable."""
    try:
        return os.readlink(f"{proc}/{pid}/ns/mnt")
    except OSError:
        return None


def in_other_mount_namespace(pid: int, proc: str = "/proc") -> bool:
    """True when pid provably sees another filesystem than leaktrace does."""
    ours, theirs = mount_namespace(os.getpid(), proc), mount_namespace(pid, proc)
    return ours is not None and theirs is not None and ours != theirs


# The test hook symbols.process honours too: /proc/PID/root behaves as if unreadable.
SIMULATE_NO_PROC_ROOT = "LEAKTRACE_SIMULATE_NO_PROC_ROOT"


def root_access_problem(pid: int, proc: str = "/proc") -> str:
    """Why /proc/PID/root cannot be read ("" when it can)."""
    try:
        if os.environ.get(SIMULATE_NO_PROC_ROOT) == "1":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
        os.listdir(f"{proc}/{pid}/root")
        return ""
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()


def container_of(pid: int, proc: str = "/proc", ask_docker: bool = True) -> Optional[Container]:
    """The container pid runs in, or None when it is a host process."""
    try:
        with open(f"{proc}/{pid}/cgroup") as cgroup:
            found = cgroups.container_from_proc_cgroup(cgroup.read())
    except OSError:
        found = None
    if found is None:
        if not in_other_mount_namespace(pid, proc):
            return None
        namespace = mount_namespace(pid, proc) or ""
        return Container(runtime=MOUNT_NS_RUNTIME, id=namespace.removeprefix("mnt:[").removesuffix("]"))
    if found.runtime == "docker" and ask_docker:
        return with_docker_names(found)
    return found


def with_docker_names(found: Container) -> Container:
    """A Docker container found from /proc, with the name and image Docker gives it."""
    try:
        details = inspect_container(found.id)
    except (EnvironmentProblem, TargetError):
        # No CLI or no daemon: the name is still in the engine's own config file.
        return Container(found.runtime, found.id, name=cgroups.docker_name(found.id))
    return Container(found.runtime, found.id, name=details.container.name,
                     image=details.container.image)


def docker_command(*args: str, timeout: float = DOCKER_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run the docker CLI (arguments as a list, never a shell), with a timeout."""
    docker = shutil.which("docker")
    if docker is None:
        raise EnvironmentProblem("docker is not installed (no docker command on PATH)",
                                 hint="install the docker CLI, or give the host PID with -p")
    try:
        return subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise EnvironmentProblem(f"docker {args[0]} did not answer within {timeout:.0f}s",
                                 hint="check that the Docker daemon is healthy") from None


def docker_failure(stderr: str) -> str:
    """The daemon's one-line reason from docker's stderr."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    text = lines[-1] if lines else "docker failed"
    text = text.removeprefix("Error response from daemon: ").removeprefix("Error: ")
    text = text.removesuffix(" Is the docker daemon running?").rstrip(".")
    return text[:1].lower() + text[1:]


def daemon_unreachable(stderr: str) -> bool:
    return "Cannot connect to the Docker daemon" in stderr or "Is the docker daemon running" in stderr


def inspect_container(name_or_id: str) -> RunningContainer:
    """Ask the Docker daemon about one container (by name or id)."""
    done = docker_command("inspect", "--type", "container", "--format", _INSPECT_FORMAT, name_or_id)
    if done.returncode != 0:
        if daemon_unreachable(done.stderr):
            raise EnvironmentProblem(docker_failure(done.stderr),
                                     hint="start dockerd, or give the host PID with -p")
        raise TargetError(f"no such container: {name_or_id}",
                          hint="list running containers with: docker ps")
    try:
        details = json.loads(done.stdout)
        state = details.get("State") or {}
        container = Container(runtime="docker", id=str(details["Id"]),
                              name=str(details.get("Name", "")).lstrip("/"),
                              image=str((details.get("Config") or {}).get("Image", "")))
        pid = int(state.get("Pid") or 0) if state.get("Running") else 0
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EnvironmentProblem(f"docker inspect {name_or_id}: unexpected output") from None
    return RunningContainer(container, pid)


def find_container(name_or_id: str) -> RunningContainer:
    """A running container and its main PID, or a clear error."""
    found = inspect_container(name_or_id)
    if found.pid <= 0:
        raise TargetError(f"container {name_or_id} is not running",
                          hint=f"start it first: docker start {name_or_id}")
    return found


def _cgroup_mounts(mounts_path: str) -> Iterator[Tuple[str, set]]:
    """(mount point, controllers) of each cgroup hierarchy; controllers {""} for v2."""
    with open(mounts_path) as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) < 4:
                continue
            if fields[2] == "cgroup2":
                yield fields[1], {""}
            elif fields[2] == "cgroup":
                yield fields[1], set(fields[3].split(","))


def cgroup_dirs(pid: int, proc: str = "/proc", mounts_path: str = "/proc/self/mounts") -> List[str]:
    """Host directories of pid's cgroups, one per hierarchy we can find mounted."""
    with open(f"{proc}/{pid}/cgroup") as cgroup:
        lines = [line.rstrip("\n").split(":", 2) for line in cgroup]
    mounts = list(_cgroup_mounts(mounts_path))
    found = []
    for fields in lines:
        if len(fields) != 3:
            continue
        wanted = set(fields[1].split(",")) if fields[1] else {""}
        for mount_point, controllers in mounts:
            if wanted <= controllers:
                found.append(os.path.join(mount_point, fields[2].lstrip("/")))
    return found


def container_pids(pid: int, proc: str = "/proc", mounts_path: str = "/proc/self/mounts") -> List[int]:
    """Every process in pid's cgroup (and cgroups below it), pid first."""
    try:
        directories = cgroup_dirs(pid, proc, mounts_path)
    except OSError as exc:
        raise TargetError(f"cannot read the cgroup of PID {pid}: {exc.strerror}") from None
    for directory in directories:
        pids = _procs_below(directory)
        if pids:
            return [pid] + sorted(p for p in pids if p != pid)
    return [pid]


def _procs_below(directory: str) -> set:
    pids = set()
    for dirpath, _, filenames in os.walk(directory):
        if "cgroup.procs" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as procs:
                pids.update(int(word) for word in procs.read().split())
        except (OSError, ValueError):
            continue
    return pids
