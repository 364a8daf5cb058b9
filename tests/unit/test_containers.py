"""No root: PID -> container on captured /proc samples, a container's PIDs from
its cgroup tree, the copy-out cache against hostile input (paths that try to
leave a container root, hostile tar streams, a missing docker), the report's
container line and the one line an unreadable /proc/PID/root costs."""
from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from leaktrace.process import containers
from leaktrace.base.errors import LeaktraceError
from leaktrace.base.model import Container, Report, Target
from leaktrace.report.table import TableReporter
from leaktrace.symbols import user as user_symbols
from leaktrace.symbols.copyout import CopyOutError, DockerCopy, private_dir
from leaktrace.symbols.paths import open_in_root
from leaktrace.process.traced_process import TracedProcess

DATA = Path(__file__).resolve().parent.parent / "data" / "containers"
DOCKER_ID = "f784be303c25d25529721fdbaea9277d599cafc0f535d705f79ab210c5786451"
HOST_MNT = "mnt:[4026531832]"
CONTAINER_MNT = "mnt:[4026532177]"


def fake_process(proc: Path, pid: int, cgroup: str, mnt: str) -> None:
    """/proc/PID/cgroup and the ns/mnt link, as the kernel shows them."""
    (proc / str(pid) / "ns").mkdir(parents=True)
    (proc / str(pid) / "cgroup").write_text(cgroup)
    os.symlink(mnt, proc / str(pid) / "ns" / "mnt")


@pytest.fixture
def proc(tmp_path):
    """A /proc with leaktrace itself (host cgroup, host mount namespace)."""
    root = tmp_path / "proc"
    fake_process(root, os.getpid(), "0::/\n", HOST_MNT)
    return root


def test_docker_container_from_captured_cgroup_sample(proc):
    fake_process(proc, 2331, (DATA / "docker-v1-hybrid-cgroupfs.cgroup").read_text(), CONTAINER_MNT)
    found = containers.container_of(2331, proc=str(proc), ask_docker=False)
    assert found == Container(runtime="docker", id=DOCKER_ID)  # name and image need the daemon


def test_host_process_in_our_mount_namespace_is_no_container(proc):
    fake_process(proc, 100, "0::/user.slice/session-1.scope\n", HOST_MNT)
    assert containers.container_of(100, proc=str(proc), ask_docker=False) is None


def test_other_mount_namespace_without_an_engine_is_named_by_its_namespace(proc):
    fake_process(proc, 200, "0::/system.slice/sandbox.service\n", "mnt:[4026532999]")
    found = containers.container_of(200, proc=str(proc), ask_docker=False)
    assert found == Container(runtime=containers.MOUNT_NS_RUNTIME, id="4026532999")


def test_unreadable_process_is_no_container(proc):
    assert containers.container_of(999999, proc=str(proc), ask_docker=False) is None


def test_this_test_process_is_not_in_a_container():
    assert containers.container_of(os.getpid(), ask_docker=False) is None
    assert not containers.in_other_mount_namespace(os.getpid())


@pytest.fixture
def cgroup_tree(tmp_path, proc):
    """The captured mounts rewritten under tmp, with the container's cgroup dirs."""
    mounts = tmp_path / "mounts"
    mounts.write_text((DATA / "hybrid.mounts").read_text().replace("/sys/fs/cgroup", str(tmp_path / "cg")))
    fake_process(proc, 2331, (DATA / "docker-v1-hybrid-cgroupfs.cgroup").read_text(), CONTAINER_MNT)
    return mounts


def write_procs(directory: Path, *pids: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cgroup.procs").write_text("".join(f"{pid}\n" for pid in pids))


def test_container_pids_come_from_its_cgroup_and_nested_ones(tmp_path, proc, cgroup_tree):
    container = tmp_path / "cg" / "pids" / "docker" / DOCKER_ID
    write_procs(container, 2331, 2400)
    write_procs(container / "worker", 2500)  # a nested cgroup the container made
    write_procs(tmp_path / "cg" / "pids" / "docker" / ("0" * 64), 777)  # another container
    pids = containers.container_pids(2331, proc=str(proc), mounts_path=str(cgroup_tree))
    assert pids == [2331, 2400, 2500]


def test_container_pids_use_the_v2_hierarchy_when_v1_is_not_there(tmp_path, proc, cgroup_tree):
    write_procs(tmp_path / "cg" / "unified" / "docker" / DOCKER_ID, 2331, 2600)
    assert containers.container_pids(2331, proc=str(proc), mounts_path=str(cgroup_tree)) == [2331, 2600]


def test_container_pids_without_a_readable_cgroup_is_a_clear_error(proc):
    with pytest.raises(LeaktraceError, match="cannot read the cgroup of PID 4242"):
        containers.container_pids(4242, proc=str(proc))


def test_docker_failure_is_one_lowercase_line():
    stderr = ("Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?\n")
    assert containers.docker_failure(stderr) == "cannot connect to the Docker daemon at unix:///x.sock"
    assert containers.daemon_unreachable(stderr)
    assert containers.docker_failure("Error response from daemon: No such container: web\n") \
        == "no such container: web"


def test_no_docker_on_path_is_an_environment_problem(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(LeaktraceError, match="docker is not installed"):
        containers.find_container("web")
    copier = DockerCopy(DOCKER_ID, cache=tmp_path / "cache")
    with pytest.raises(CopyOutError, match="docker is not installed"):
        copier.binary("/app/server")
    assert copier.unusable and copier.copies == 0


# ---- hostile container layouts ---------------------------------------------------------


@pytest.fixture
def canary(tmp_path):
    """A host-only file a hostile container aims its links at."""
    secret = tmp_path / "host" / "canary-secret"
    secret.parent.mkdir()
    secret.write_text("host secret\n")
    return secret


@pytest.mark.parametrize("link", ["absolute", "climbing", "directory"])
def test_links_in_a_container_root_never_reach_the_host_canary(tmp_path, canary, link):
    root = tmp_path / "container"
    (root / "app").mkdir(parents=True)
    targets = {
        "absolute": str(canary),
        "climbing": "../" * 20 + str(canary).lstrip("/"),
        "directory": str(canary.parent),  # /app/lib -> host dir, path continues below it
    }
    os.symlink(targets[link], root / "app" / "lib")
    path = "/app/lib/canary-secret" if link == "directory" else "/app/lib"
    with pytest.raises(FileNotFoundError):  # resolved inside the root, where there is none
        os.close(open_in_root(str(root), path))
    inside = root / str(canary).lstrip("/")
    inside.parent.mkdir(parents=True)
    inside.write_text("container file\n")
    if link != "climbing":  # the same link names the container's own file once there is one
        with os.fdopen(open_in_root(str(root), path)) as stream:
            assert stream.read() == "container file\n"


def tar_stream(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


def test_symlink_in_the_copied_stream_is_returned_not_followed(tmp_path, canary):
    link = tarfile.TarInfo("app")
    link.type, link.linkname = tarfile.SYMTYPE, str(canary)
    copier = DockerCopy(DOCKER_ID, cache=tmp_path / "cache")
    # The caller asks the container again for this path; the host file is untouched.
    assert copier._extract(tar_stream(tmp_path / "s.tar", link), "/app") == str(canary)


@pytest.mark.parametrize("kind", [tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.DIRTYPE, tarfile.FIFOTYPE])
def test_only_regular_files_leave_the_stream(tmp_path, kind):
    member = tarfile.TarInfo("app")
    member.type = kind
    member.linkname = "/etc/shadow" if kind == tarfile.LNKTYPE else ""
    copier = DockerCopy(DOCKER_ID, cache=tmp_path / "cache")
    with pytest.raises(CopyOutError, match="not a regular file"):
        copier._extract(tar_stream(tmp_path / "s.tar", member), "/app")


def test_a_traversing_member_name_lands_in_the_private_cache(tmp_path):
    member = tarfile.TarInfo("../../../../outside")
    member.size = 5
    copier = DockerCopy(DOCKER_ID, cache=tmp_path / "cache")
    copied = copier._extract(tar_stream(tmp_path / "s.tar", member, b"bytes"), "/app")
    assert copied.parent == tmp_path / "cache" / "tmp" and copied.read_bytes() == b"bytes"
    assert stat.S_IMODE(copied.stat().st_mode) == 0o600  # never executable
    assert not (tmp_path.parent / "outside").exists()


def test_garbage_stream_is_a_copy_error(tmp_path):
    garbage = tmp_path / "g.tar"
    garbage.write_bytes(os.urandom(700))
    with pytest.raises(CopyOutError, match="unreadable archive"):
        DockerCopy(DOCKER_ID, cache=tmp_path / "cache")._extract(garbage, "/app")


def test_cache_directory_is_made_private_unless_others_could_write_it(tmp_path):
    readable = tmp_path / "readable"
    readable.mkdir(mode=0o755)
    assert stat.S_IMODE(private_dir(readable).stat().st_mode) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir()
    os.chmod(loose, 0o777)
    with pytest.raises(CopyOutError, match="writable by other users"):
        private_dir(loose)


def test_symlinked_cache_directory_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "cache")
    with pytest.raises(CopyOutError, match="not a private directory"):
        private_dir(tmp_path / "cache")


# --- /proc/PID/root unreadable: one line, and the test hook reaches the check ---------------

def test_root_access_problem_reads_the_root_and_honours_the_test_hook(monkeypatch, tmp_path):
    assert containers.root_access_problem(os.getpid()) == ""
    assert containers.root_access_problem(999_999_999) == "no such file or directory"
    monkeypatch.setenv(containers.SIMULATE_NO_PROC_ROOT, "1")
    assert containers.root_access_problem(os.getpid()) == "permission denied"


@pytest.mark.parametrize("docker_cp, runtime, fallback", [
    ("auto", "docker", "docker cp, else host files identical to the mapped ones"),
    ("never", "docker", "host files identical to the mapped ones"),
    ("auto", "containerd", "host files identical to the mapped ones"),
])
def test_unreadable_proc_root_is_one_clear_line(monkeypatch, docker_cp, runtime, fallback):
    said = []
    monkeypatch.setattr(user_symbols, "stderr_line", said.append)
    monkeypatch.setenv(containers.SIMULATE_NO_PROC_ROOT, "1")
    monkeypatch.setattr(containers, "container_of",
                        lambda pid, ask_docker=True: Container(runtime, DOCKER_ID, "web"))
    user_symbols.UserSymbols(docker_cp=docker_cp)._copier(TracedProcess(4242))
    assert said == [
        f"leaktrace: cannot read /proc/4242/root (permission denied); symbols come from {fallback}"]


def test_readable_proc_root_says_nothing(monkeypatch):
    said = []
    monkeypatch.setattr(user_symbols, "stderr_line", said.append)
    monkeypatch.setattr(containers, "container_of",
                        lambda pid, ask_docker=True: Container("docker", DOCKER_ID, "web"))
    user_symbols.UserSymbols(docker_cp="never")._copier(TracedProcess(os.getpid()))
    assert said == []


# --- the table's target line names the container ---------------------------------------------

@pytest.mark.parametrize("container, shown", [
    (Container("docker", DOCKER_ID, "web", "registry.local/leaky:1.2"),
     "container docker f784be303c25 (web, image registry.local/leaky:1.2)"),
    (Container("docker", DOCKER_ID, "", "leaky:1"), "container docker f784be303c25 (image leaky:1)"),
    (Container("docker", DOCKER_ID, "web"), "container docker f784be303c25 (web)"),
    (Container("containerd", DOCKER_ID), "container containerd f784be303c25"),
])
def test_table_target_line_names_the_container_and_its_image(container, shown):
    target = Target(4242, "app", "/app/leaky", "/lib/libc.so.6", "glibc", container=container)
    report = Report(mode="user", timestamp=0.0, elapsed_s=1.0, targets=(target,), totals={},
                    events={}, losses={}, rows=())
    out = io.StringIO()
    TableReporter().render(report, out)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("target: ")]
    assert lines == [f"target: pid 4242 app, allocator glibc (/lib/libc.so.6), {shown}"]
