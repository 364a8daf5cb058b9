"""Attach and detach uprobes so that no signal can leave one behind.

Installing or removing a uprobe writes the target's code through
get_user_pages, which gives up when a fatal signal is pending for the task
in the syscall; the kernel then logs "failed to unregister, leaking uprobe",
and an int3 may stay in the target. A SIGKILL to leaktrace while it closed
its probes (shutdown) or while it made one (attach) did exactly that; a kill
between syscalls does not (the exit closes the fds with the signal already
taken). So leaktrace makes no such syscall itself:

  A Holder starts a helper (`python -m leaktrace.probes.release`, named
  lt-detach, in its own session and ignoring the terminal's signals) before
  the first probe. make() sends it what to attach and the program's fd over
  a Unix socket (SCM_RIGHTS); the helper creates the BPF link or perf event,
  keeps its fd and answers with an errno. release() tells it to close them
  all from parallel threads (links: ~0.06 s for a session's 22) and exit;
  wait() waits. hold() gives it fds made elsewhere (kernel tracepoints).

If leaktrace dies at any moment, the helper finishes the syscall it is in,
sees the socket close without the release word, waits until leaktrace has
fully exited (a pidfd: by then the kernel has dropped leaktrace's copies of
held fds), and closes what it holds. Only killing the helper itself while
it works could still leak.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from typing import List, Optional, Sequence

from ..base import timing

HELPER_NAME = b"lt-detach"
WAIT_S = 60  # a detach never takes this long; past it, leaktrace exits anyway
_PR_SET_NAME = 15
_RELEASE = b"r"  # the helper's cue: close everything now and exit
_HOLD = b"h"  # fds to hold follow
_FDS_PER_MESSAGE = 200  # SCM_MAX_FD is 253
_ERRNO = struct.Struct("=i")  # the helper's answer to make(): 0, or why it failed
_helpers: List[subprocess.Popen] = []


def close_all(fds: Sequence[int]) -> None:
    """Close fds at once from parallel threads: the kernel's grace periods overlap."""
    threads = [threading.Thread(target=os.close, args=(fd,)) for fd in fds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def make_probe(request: dict, prog_fd: int) -> int:
    """The fd of a new uprobe running prog_fd, as request says:
    {"kind": "link" | "perf", "path", "offsets" (one for perf), "pid", "retprobe",
    "event" (perf: the name bcc gives it)}.
    Raises OSError."""
    path = os.fsencode(request["path"])
    if request["kind"] == "link":
        from .hooks import create_link
        return create_link(prog_fd, path, request["offsets"], request["pid"], request["retprobe"])
    from bcc.libbcc import lib  # bcc's own call, so the kernel sees what a bcc tool's probe has
    fd = lib.bpf_attach_uprobe(prog_fd, 1 if request["retprobe"] else 0, os.fsencode(request["event"]),
                               path, request["offsets"][0], request["pid"])
    if fd < 0:
        code = ctypes.get_errno() or errno.EIO
        raise OSError(code, os.strerror(code))
    return fd


class Holder:
    """A helper process that makes the uprobes and holds them until release()."""

    def __init__(self):
        self.fds: List[int] = []  # leaktrace's own: copies, or probes made here without a helper
        self._socket: Optional[socket.socket] = None
        self._helper: Optional[subprocess.Popen] = None
        self._tried = False

    def start(self) -> None:
        """Start the helper now (before the first probe), if it can be."""
        if self._tried:
            return
        self._tried = True
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._helper = subprocess.Popen(
                [sys.executable, "-m", __name__, str(os.getpid()), str(theirs.fileno())],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True)
            self._socket = ours
        except OSError:
            ours.close()  # no helper: probes are made and closed here
        finally:
            theirs.close()

    def make(self, request: dict, prog_fd: int) -> None:
        """A uprobe made and held by the helper (see make_probe). Raises OSError."""
        self.start()
        if self._socket is None:
            self.fds.append(make_probe(request, prog_fd))
            return
        socket.send_fds(self._socket, [json.dumps(request).encode()], [prog_fd])
        answer = self._socket.recv(_ERRNO.size)
        code = _ERRNO.unpack(answer)[0] if len(answer) == _ERRNO.size else errno.EPIPE
        if code:
            raise OSError(code, os.strerror(code))

    def hold(self, fds: Sequence[int]) -> None:
        """Give the helper a copy of each fd (leaktrace keeps its own until release)."""
        self.start()
        self.fds.extend(fds)
        try:
            for start in range(0, len(fds) if self._socket else 0, _FDS_PER_MESSAGE):
                socket.send_fds(self._socket, [_HOLD], list(fds[start:start + _FDS_PER_MESSAGE]))
        except OSError:  # the helper died: what it held is closed; ours are the last
            self._socket.close()
            self._socket = None

    def release(self) -> None:
        """Drop leaktrace's copies, then let the helper close its own (wait() waits)."""
        fds, self.fds = self.fds, []
        if self._socket is None:
            close_all(fds)
        else:
            for fd in fds:
                os.close(fd)  # the helper holds each one: instant
            try:
                self._socket.send(_RELEASE)
            except OSError:
                pass
            self._socket.close()
            self._socket = None
        if self._helper is not None:
            _helpers.append(self._helper)
        self._helper, self._tried = None, False


def release(fds: Sequence[int]) -> None:
    """Hand the last reference of each fd to a helper and drop ours."""
    if fds:
        holder = Holder()
        holder.hold(fds)
        holder.release()


def wait() -> None:
    """Wait until every helper has closed its probes (bounded by WAIT_S)."""
    while _helpers:
        helper = _helpers.pop()
        try:
            helper.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            pass


def close(probe) -> None:
    """A probe's close() (UserProbe, KernelProbe): detach, free its BPF
    objects, and wait until every helper has closed what it held."""
    with timing.step("detach", "removing the probes"):
        if probe.bpf is not None:
            probe.detach()
            probe.bpf.cleanup()
            probe.bpf = None
        wait()


def _serve(channel: socket.socket, held: List[int]) -> bool:
    """Make and hold probes until the socket closes; whether leaktrace released them."""
    while True:
        data, fds, _, _ = socket.recv_fds(channel, 65536, _FDS_PER_MESSAGE)
        if not data or data == _RELEASE:
            held.extend(fds)
            return data == _RELEASE
        if data == _HOLD:
            held.extend(fds)
            continue
        try:
            held.append(make_probe(json.loads(data), fds[0]))
            code = 0
        except OSError as exc:
            code = exc.errno or errno.EIO
        except Exception:  # a malformed request: refuse it, keep what is held
            code = errno.EIO
        finally:
            close_all(fds)  # the program's fd: a probe holds its own reference
        channel.send(_ERRNO.pack(code))


def _helper(parent: int, channel_fd: int) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, signal.SIG_IGN)
    ctypes.CDLL(None).prctl(_PR_SET_NAME, HELPER_NAME, 0, 0, 0)
    try:
        parent_exit = os.pidfd_open(parent)
    except OSError:  # already gone, its fds with it
        parent_exit = None
    held: List[int] = []
    try:
        released = _serve(socket.socket(fileno=channel_fd), held)
    except OSError:  # leaktrace went away mid-request
        released = False
    if not released and parent_exit is not None:
        # leaktrace died: its exit drops its copies of held fds only after the
        # socket may read as closed; ours must not become the last before then.
        select.select([parent_exit], [], [], WAIT_S)
    close_all(held)


if __name__ == "__main__":
    _helper(int(sys.argv[1]), int(sys.argv[2]))
