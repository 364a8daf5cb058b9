"""Cgroup path -> container on /proc/PID/cgroup samples, and id -> path on a
real directory tree (cgroup ids are directory inode numbers)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from leaktrace.process import cgroups
from leaktrace.base.model import Container

SAMPLES = Path(__file__).resolve().parent.parent / "data" / "cgroups"
SAMPLE_FILES = sorted(SAMPLES.glob("*.txt"))


def expected(sample: Path):
    header = sample.read_text().splitlines()[0]
    assert header.startswith("# expect: "), f"{sample.name} has no expect line"
    words = header[len("# expect: "):].split(" ", 2)
    if words == ["none"]:
        return None
    return Container(runtime=words[0], id=words[1], name=words[2] if len(words) > 2 else "")


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=[s.stem for s in SAMPLE_FILES])
def test_container_recognised_from_proc_cgroup(sample):
    text = "\n".join(sample.read_text().splitlines()[1:])
    assert cgroups.container_from_proc_cgroup(text) == expected(sample)


def test_every_engine_has_a_sample():
    runtimes = {c.runtime for c in map(expected, SAMPLE_FILES) if c}
    assert {"docker", "containerd", "cri-o", "podman", "kubernetes"} <= runtimes


def test_this_machine_is_not_a_container():
    assert cgroups.container_from_proc_cgroup(Path("/proc/self/cgroup").read_text()) is None


def test_pod_cgroup_without_a_container_is_not_a_container():
    path = "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0f1e2d3c_4b5a_6978_8a9b_0c1d2e3f4a5b.slice"
    assert cgroups.container_from_cgroup_path(path) is None


def test_short_ids_are_not_containers():
    assert cgroups.container_from_cgroup_path("/docker/abc123") is None


def test_cgroup_ids_are_inodes_of_a_walked_tree(tmp_path):
    (tmp_path / "system.slice" / "docker-").mkdir(parents=True)
    scope = tmp_path / "system.slice" / ("docker-" + "ab" * 32 + ".scope")
    scope.mkdir()
    paths = cgroups.CgroupPaths(root=str(tmp_path))
    assert paths.path(os.stat(tmp_path).st_ino) == "/"
    assert paths.path(os.stat(scope).st_ino) == "/system.slice/docker-" + "ab" * 32 + ".scope"
    assert paths.label(os.stat(scope).st_ino).startswith("docker abababababab")
    assert paths.label(0) == ""


def test_new_cgroup_found_after_rescan(tmp_path, monkeypatch):
    paths = cgroups.CgroupPaths(root=str(tmp_path))
    paths.path(1)
    late = tmp_path / "late"
    late.mkdir()
    monkeypatch.setattr(cgroups, "RESCAN_S", 0.0)
    assert paths.path(os.stat(late).st_ino) == "/late"


def test_unknown_id_is_labelled_by_number(tmp_path):
    assert cgroups.CgroupPaths(root=str(tmp_path)).label(987654321) == "cgroup id 987654321"


def test_docker_name_from_config(tmp_path):
    cid = "cd" * 32
    config = tmp_path / "containers" / cid
    config.mkdir(parents=True)
    (config / "config.v2.json").write_text(json.dumps({"Name": "/web-1"}))
    assert cgroups.docker_name(cid, str(tmp_path)) == "web-1"
    assert cgroups.docker_name("ef" * 32, str(tmp_path)) == ""


def test_cgroup2_root_from_mounts(tmp_path):
    mounts = tmp_path / "mounts"
    mounts.write_text("cgroup /sys/fs/cgroup/memory cgroup rw 0 0\n"
                      "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n")
    assert cgroups.cgroup2_root(str(mounts)) == "/sys/fs/cgroup/unified"
    assert cgroups.cgroup2_root(str(tmp_path / "missing")) is None
