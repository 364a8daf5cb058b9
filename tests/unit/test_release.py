"""probes/release.py hands the last reference of each fd to a helper process:
leaktrace's own copies are closed at once, the helper closes its copies and
exits, and wait() returns when it has. Shown with pipes: a pipe's reader sees
EOF only once every copy of its write end is closed."""
from __future__ import annotations

import errno
import os
import select
import signal

from leaktrace.probes import release


def test_the_helper_holds_the_fds_until_it_closes_them():
    pipes = [os.pipe() for _ in range(4)]
    release.release([write for _, write in pipes])
    for _, write in pipes:  # ours are closed already
        try:
            os.fstat(write)
            raise AssertionError(f"fd {write} still open in leaktrace")
        except OSError:
            pass
    release.wait()
    for read, _ in pipes:
        assert select.select([read], [], [], 5)[0], "write end still held after wait()"
        assert os.read(read, 1) == b""  # EOF: the helper closed the last copy
        os.close(read)


def test_close_all_closes_every_fd():
    pipes = [os.pipe() for _ in range(8)]
    release.close_all([write for _, write in pipes])
    for read, _ in pipes:
        assert os.read(read, 1) == b""
        os.close(read)


def test_nothing_to_release_starts_no_helper():
    release.release([])
    assert release._helpers == []


def test_a_holder_keeps_each_fd_from_the_moment_it_is_held():
    holder = release.Holder()
    holder.start()
    read, write = os.pipe()
    holder.hold([write])
    holder.release()  # our copy closed at once; the helper's until it has closed it
    release.wait()
    assert select.select([read], [], [], 5)[0] and os.read(read, 1) == b""
    os.close(read)


def test_when_its_owner_is_killed_the_helper_closes_what_it_holds():
    """leaktrace SIGKILLed while attaching: its helper outlives it and closes the fds."""
    pipes = [os.pipe() for _ in range(3)]
    ready_read, ready_write = os.pipe()
    owner = os.fork()
    if owner == 0:  # the owner: holds the write ends through a helper, then waits to be killed
        holder = release.Holder()
        holder.hold([write for _, write in pipes])
        os.write(ready_write, b"!")
        signal.pause()
        os._exit(0)
    for _, write in pipes:
        os.close(write)
    os.close(ready_write)
    assert os.read(ready_read, 1) == b"!"
    for read, _ in pipes:  # the owner and its helper hold every write end
        assert not select.select([read], [], [], 0.2)[0]
    os.kill(owner, signal.SIGKILL)
    os.waitpid(owner, 0)
    for read, _ in pipes:
        assert select.select([read], [], [], 10)[0], "the helper did not close what it held"
        assert os.read(read, 1) == b""
        os.close(read)
    os.close(ready_read)


def test_a_probe_the_helper_cannot_make_fails_here_with_its_errno():
    holder = release.Holder()
    read, write = os.pipe()
    try:  # a pipe is no BPF program: the kernel refuses the link
        holder.make({"kind": "link", "path": "/bin/true", "offsets": [0], "pid": os.getpid(),
                     "retprobe": False}, write)
        raise AssertionError("a link to a pipe was made")
    except OSError as exc:
        assert exc.errno in (errno.EBADF, errno.EINVAL, errno.EPERM), exc
    holder.hold([write])  # the helper still serves
    holder.release()
    release.wait()
    assert os.read(read, 1) == b""
    os.close(read)
