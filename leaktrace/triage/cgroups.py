"""Container identity from a process's /proc/PID/cgroup text.

Contract: container_from_cgroup(text) -> model.Container or None. Pure string
parsing of the cgroup paths the common runtimes create (cgroup v1 and v2,
systemd and cgroupfs drivers); container_name() may read the Docker state
directory to turn an id into the name a user typed, and returns "" when it
cannot.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from leaktrace.model import Container

_ID = r"([0-9a-f]{64})"
# Most specific first: a kubernetes pod path also contains a runtime scope.
_PATTERNS = (
    ("kubernetes", re.compile(r"kubepods.*?/(?:cri-containerd-|crio-|docker-)?" + _ID)),
    ("docker", re.compile(r"(?:/docker/|docker-)" + _ID)),
    ("podman", re.compile(r"libpod-(?:conmon-)?" + _ID)),
    ("containerd", re.compile(r"cri-containerd-" + _ID)),
    ("cri-o", re.compile(r"crio-(?:conmon-)?" + _ID)),
)

DOCKER_STATE = Path("/var/lib/docker/containers")


def container_from_cgroup(text: str, docker_state: Path = DOCKER_STATE) -> Optional[Container]:
    """The container whose cgroup path appears in /proc/PID/cgroup, if any."""
    for line in text.splitlines():
        path = line.split(":", 2)[-1]
        for runtime, pattern in _PATTERNS:
            match = pattern.search(path)
            if match:
                cid = match.group(1)
                name = container_name(cid, docker_state) if runtime == "docker" else ""
                return Container(runtime=runtime, id=cid, name=name)
    return None


def container_name(cid: str, docker_state: Path = DOCKER_STATE) -> str:
    """Docker's name for a container id ("" when the state is unreadable)."""
    try:
        config = json.loads((docker_state / cid / "config.v2.json").read_text())
    except (OSError, ValueError):
        return ""
    return str(config.get("Name", "")).lstrip("/")


def container_label(container: Optional[Container]) -> str:
    """Short human label: the name, else runtime:short-id, else ""."""
    if container is None:
        return ""
    return container.name or f"{container.runtime}:{container.id[:12]}"
