"""open_in_root: files inside a container root are opened without ever leaving it.

Every case runs twice: with the kernel's openat2(RESOLVE_IN_ROOT) and with the
user-space walk used only where openat2 is missing (ENOSYS, simulated here).
A canary file outside the root is watched with inotify, so "never followed"
means the host file was never opened, by anything.
"""
import ctypes
import errno
import os
import threading
import time
from contextlib import contextmanager

import pytest

from leaktrace.symbols import paths
from leaktrace.symbols.paths import (MAX_SYMLINKS, PathResolveError, open_in_root, pin_in_root,
                                     unpin_all)

IN_ACCESS, IN_OPEN = 0x1, 0x20


@contextmanager
def watch_opens(path):
    """Yields a list that holds, after the block, one entry per open/read of `path`."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    assert fd >= 0 and libc.inotify_add_watch(fd, os.fsencode(str(path)), IN_OPEN | IN_ACCESS) >= 0
    events = []
    try:
        yield events
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            data = b""
        events.extend(data[i:i + 16] for i in range(0, len(data), 16))  # one event has no name here
    finally:
        os.close(fd)


@pytest.fixture(params=["openat2", "walk"])
def backend(request, monkeypatch):
    if request.param == "walk":
        def no_openat2(*args):
            raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
        monkeypatch.setattr(paths, "openat2", no_openat2)
    return request.param


@pytest.fixture
def root(tmp_path):
    """A fake container root with /etc/shadow, /usr/lib and a few links."""
    fake = tmp_path / "root"
    (fake / "etc").mkdir(parents=True)
    (fake / "etc" / "shadow").write_text("container shadow\n")
    (fake / "usr" / "lib").mkdir(parents=True)
    (fake / "usr" / "lib" / "libx.so").write_text("x")
    return fake


@pytest.fixture
def canary(tmp_path):
    """A host file outside the root that hostile links aim at."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "shadow").write_text("HOST SECRET\n")
    return host / "shadow"


def read_in(root, path):
    fd = open_in_root(str(root), path)
    with os.fdopen(fd) as stream:
        return stream.read()


def test_plain_path(root, backend):
    assert read_in(root, "/usr/lib/libx.so") == "x"


@pytest.mark.parametrize("target", ["absolute", "climbing", "host-directory"])
def test_a_planted_symlink_never_reaches_the_host(root, canary, backend, target):
    links = {"absolute": str(canary), "climbing": "../" * 20 + str(canary).lstrip("/"),
             "host-directory": str(canary.parent)}
    os.symlink(links[target], root / "app")
    path = "/app/shadow" if target == "host-directory" else "/app"
    with watch_opens(canary) as opened:
        with pytest.raises(FileNotFoundError):
            open_in_root(str(root), path)
    assert opened == []


def test_absolute_symlink_is_reread_inside_root(root, backend):
    os.symlink("/etc/shadow", root / "app")
    assert read_in(root, "/app") == "container shadow\n"


def test_dotdot_is_clamped_at_root(root, backend):
    (root / "opt" / "a").mkdir(parents=True)
    os.symlink("../../../../../../etc/shadow", root / "opt" / "a" / "escape")
    assert read_in(root, "/opt/a/escape") == "container shadow\n"
    assert read_in(root, "/../../../etc/shadow") == "container shadow\n"
    assert read_in(root, "usr/../../etc/./shadow") == "container shadow\n"


def test_directory_symlinks(root, backend):
    os.symlink("usr/lib", root / "lib")  # like /lib -> usr/lib on merged-/usr distributions
    os.symlink("/usr/lib", root / "l")
    assert read_in(root, "/lib/libx.so") == "x"
    assert read_in(root, "/l/../lib/libx.so") == "x"  # /l/.. is /usr: the link's target's parent


def test_symlink_loop_and_the_kernel_limit(root, backend):
    os.symlink("/b", root / "a")
    os.symlink("/a", root / "b")
    with pytest.raises(PathResolveError, match="too many symbolic links"):
        open_in_root(str(root), "/a/file")
    names = [f"link{i}" for i in range(MAX_SYMLINKS + 1)]
    for current, following in zip(names, names[1:]):
        os.symlink(following, root / current)
    os.symlink("etc/shadow", root / names[-1])
    assert read_in(root, "/link1") == "container shadow\n"  # 40 links
    with pytest.raises(PathResolveError):
        open_in_root(str(root), "/link0")  # 41


def test_only_regular_files_are_opened(root, backend):
    os.mkfifo(root / "fifo")  # opening it for reading would hang without O_NONBLOCK
    for path in ("/fifo", "/etc"):
        with pytest.raises(PathResolveError, match="not a regular file"):
            open_in_root(str(root), path)
    with pytest.raises(FileNotFoundError):
        open_in_root(str(root), "/no/such/file")


def test_magic_links_are_refused(backend):
    if backend == "walk":
        # The walk reads a magic link as text ("/"), which then resolves inside the root.
        assert read_in("/", "/proc/self/root/etc/hostname") == open("/etc/hostname").read()
        return
    with pytest.raises(PathResolveError):
        open_in_root("/", "/proc/self/root/etc/hostname")


def test_only_enosys_falls_back_to_the_walk(root, monkeypatch):
    def seccomp_denies(*args):
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))
    monkeypatch.setattr(paths, "openat2", seccomp_denies)
    with pytest.raises(PermissionError):
        open_in_root(str(root), "/etc/shadow")


def test_what_was_opened_stays_opened_after_the_component_is_swapped(root, canary, backend):
    (root / "app").write_text("container app\n")
    fd = open_in_root(str(root), "/app")
    pinned = pin_in_root(str(root), "/app")
    try:
        os.rename(root / "app", root / "app.old")
        os.symlink(str(canary), root / "app")
        with watch_opens(canary) as opened:
            assert os.pread(fd, 100, 0) == b"container app\n"
            with open(pinned) as stream:  # the path handed to bcc: still the checked file
                assert stream.read() == "container app\n"
        assert opened == []
    finally:
        os.close(fd)
        unpin_all()


def test_racing_symlink_swaps_never_open_the_host_file(root, canary, backend):
    """A thread flips /app between a regular file and a symlink to the host canary
    as fast as it can (both by atomic rename); no open may ever land on the canary."""
    stop = threading.Event()
    flips = [0]

    def flip():
        while not stop.is_set():
            (root / "staged").write_text("container app\n")
            os.rename(root / "staged", root / "app")
            os.symlink(str(canary), root / "staged-link")
            os.rename(root / "staged-link", root / "app")
            flips[0] += 1

    seen = {"container": 0, "missing": 0}
    swapper = threading.Thread(target=flip)
    with watch_opens(canary) as opened:
        swapper.start()
        try:
            # Until the race has really run (both outcomes, 100+ flips), however
            # slow a loaded machine makes the swapper; 60 s at most.
            give_up = time.monotonic() + 60
            while (flips[0] <= 100 or min(seen.values()) == 0) and time.monotonic() < give_up:
                try:
                    text = read_in(root, "/app")
                except FileNotFoundError:  # the link, resolved inside the root
                    seen["missing"] += 1
                    continue
                assert text == "container app\n"
                seen["container"] += 1
        finally:
            stop.set()
            swapper.join()
    assert opened == [], f"the host canary was opened {len(opened)} times"
    assert flips[0] > 100 and min(seen.values()) > 0, (flips, seen)  # the race really ran
