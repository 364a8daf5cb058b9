"""Cgroups: a v2 cgroup id -> its path, and a cgroup path -> the container it is.

The kernel names a task's cgroup by the id bpf_get_current_cgroup_id() returns:
the inode number of the cgroup's directory in the cgroup v2 hierarchy. Ids are
turned into paths by walking that hierarchy once and again only when an id is
not found (a new cgroup), at most once per RESCAN_S.

container_from_cgroup_path() is pure: it recognises the layouts container
engines give their cgroups, in cgroup v1 and v2, under the cgroupfs and the
systemd drivers (Docker, containerd/CRI, CRI-O, podman, nerdctl, Kubernetes
pods). Kubernetes containers whose engine the path does not name get runtime
"kubernetes"; a pod's uid goes in Container.name as "pod <uid>", since a pod's
own name needs the API server.
"""
from __future__ import annotations

import json
import os
import re
import time
from typing import Dict, Iterable, Optional

from ..base.model import Container

RESCAN_S = 2.0
_ID = r"([0-9a-f]{64})"
_POD = r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})"

# (pattern over one path component, runtime). Monitor processes (conmon) are
# not the container: their components never match (no 64-hex id right after).
_COMPONENT_PATTERNS = (
    (re.compile(rf"^docker-{_ID}\.scope$"), "docker"),
    (re.compile(rf"^cri-containerd-{_ID}\.scope$"), "containerd"),
    (re.compile(rf"^.*:cri-containerd:{_ID}$"), "containerd"),
    (re.compile(rf"^crio-{_ID}\.scope$"), "cri-o"),
    (re.compile(rf"^.*:crio:{_ID}$"), "cri-o"),
    (re.compile(rf"^libpod-{_ID}(\.scope)?$"), "podman"),
    (re.compile(rf"^nerdctl-{_ID}\.scope$"), "containerd"),
)
_POD_PATTERN = re.compile(_POD)
_BARE_ID = re.compile(rf"^{_ID}$")


def container_from_cgroup_path(path: str) -> Optional[Container]:
    """The container a cgroup path belongs to, or None for a host cgroup."""
    parts = [p for p in path.split("/") if p]
    pod_uid = ""
    found = None
    for index, part in enumerate(parts):
        pod = _POD_PATTERN.search(part) if part.startswith(("pod", "kubepods")) else None
        if pod:
            pod_uid = pod.group(1).replace("_", "-")
        found = _match_component(part, parts[index - 1] if index else "") or found
    if found is None:
        return None
    runtime, container_id = found
    if pod_uid:
        return Container(runtime=runtime or "kubernetes", id=container_id, name=f"pod {pod_uid}")
    return Container(runtime=runtime, id=container_id) if runtime else None


def _match_component(part: str, parent: str):
    """(runtime, id) when this component names a container; runtime "" when
    only the parent says so (cgroupfs drivers: /docker/<id>, .../pod<uid>/<id>)."""
    for pattern, runtime in _COMPONENT_PATTERNS:
        match = pattern.match(part)
        if match:
            return runtime, match.group(1)
    bare = _BARE_ID.match(part)
    if bare and parent == "docker":
        return "docker", bare.group(1)
    if bare and parent.startswith(("pod", "kubepods")):
        return "", bare.group(1)
    return None


def container_from_proc_cgroup(text: str) -> Optional[Container]:
    """The container named by /proc/PID/cgroup (v1 or v2 lines), or None."""
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) == 3:
            container = container_from_cgroup_path(fields[2])
            if container:
                return container
    return None


def container_with_name(text: str, docker_root: str = "/var/lib/docker") -> Optional[Container]:
    """container_from_proc_cgroup, with Docker's name filled in when known."""
    container = container_from_proc_cgroup(text)
    if container and container.runtime == "docker" and not container.name:
        name = docker_name(container.id, docker_root)
        if name:
            container = Container(container.runtime, container.id, name, container.image)
    return container


def container_label(container: Optional[Container]) -> str:
    """Short human label: the name, else runtime:short-id, else ""."""
    if container is None:
        return ""
    return container.name or f"{container.runtime}:{container.id[:12]}"


def docker_name(container_id: str, docker_root: str = "/var/lib/docker") -> str:
    """A Docker container's name from its config file, or "" when unknown."""
    config = os.path.join(docker_root, "containers", container_id, "config.v2.json")
    try:
        with open(config) as handle:
            return str(json.load(handle).get("Name", "")).lstrip("/")
    except (OSError, ValueError, AttributeError):
        return ""


def cgroup2_root(mounts_path: str = "/proc/self/mounts") -> Optional[str]:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup or .../unified)."""
    try:
        with open(mounts_path) as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) >= 3 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


class CgroupPaths:
    """cgroup id -> path relative to the v2 root ("/" for the root), cached."""

    def __init__(self, root: Optional[str] = None):
        self.root = root if root is not None else cgroup2_root()
        self.by_id: Dict[int, str] = {}
        self._scanned = 0.0

    def _scan(self) -> None:
        self._scanned = time.monotonic()
        if not self.root:
            return
        for dirpath, dirnames, _ in os.walk(self.root):
            try:
                inode = os.stat(dirpath).st_ino
            except OSError:
                continue
            rel = "/" + os.path.relpath(dirpath, self.root)
            self.by_id[inode] = "/" if rel == "/." else rel

    def path(self, cgroup_id: int) -> Optional[str]:
        if cgroup_id not in self.by_id and time.monotonic() - self._scanned >= RESCAN_S:
            self._scan()
        return self.by_id.get(cgroup_id)

    def label(self, cgroup_id: int) -> str:
        """What a report shows: the container where it is one, else the path."""
        if not cgroup_id:
            return ""
        path = self.path(cgroup_id)
        if path is None:
            return f"cgroup id {cgroup_id}"
        container = container_from_cgroup_path(path)
        if container is None:
            return path
        name = container.name or (docker_name(container.id) if container.runtime == "docker" else "")
        return f"{container.runtime} {container.id[:12]}" + (f" ({name})" if name else "")


def labels(paths: CgroupPaths, ids: Iterable[int]) -> Dict[int, str]:
    return {cgroup_id: paths.label(cgroup_id) for cgroup_id in set(ids)}
