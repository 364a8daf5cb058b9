"""Which processes a traced command started: `leaktrace run -- sh -c "prog"`
traces the shell's PID, not prog's, and the report must say so.

The kernel's process-events connector (netlink, CONFIG_PROC_EVENTS, root)
reports every fork as it happens, so even a child that lives a millisecond
is seen; ForkWatch keeps the new processes (not threads) whose parent is the
command or one of its known descendants. Where the connector is unavailable
(a container without it), the command's /proc children files are read at
each poll instead (and always, for children started before the watch), which
misses children shorter than a poll.
"""
from __future__ import annotations

import socket
import struct
from typing import Dict, Optional

from . import targets

NETLINK_CONNECTOR = 11
CN_IDX_PROC = CN_VAL_PROC = 1
PROC_CN_MCAST_LISTEN = 1
PROC_EVENT_FORK = 1
PROC_EVENT_EXEC = 2
NLMSG_DONE = 3
SO_RCVBUFFORCE = 33
RECEIVE_BUFFER = 8 << 20
_NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_CN_MSG = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
_EVENT = struct.Struct("=IIQ")  # what, cpu, timestamp_ns
_FORK = struct.Struct("=iiii")  # parent pid, parent tgid, child pid, child tgid
_EXEC = struct.Struct("=ii")  # pid, tgid


class ForkWatch:
    """The processes started by one process and its descendants: pid -> comm
    ("?" for one gone before it could be named)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.started: Dict[int, str] = {}
        self._socket: Optional[socket.socket] = _listen()

    def poll(self) -> None:
        """Take in the forks since the last poll, and the children alive now
        (started before the watch, or whose events the socket dropped)."""
        while self._socket is not None:
            try:
                self._take(self._socket.recv(65536, socket.MSG_DONTWAIT))
            except (BlockingIOError, InterruptedError):
                break
            except OSError:  # ENOBUFS: some events were dropped; read on
                continue
        for child in targets.children(self.pid):
            self.started.setdefault(child, targets.comm(child))

    def _take(self, data: bytes) -> None:
        offset = _NLMSGHDR.size + _CN_MSG.size
        if len(data) < offset + _EVENT.size + _FORK.size:
            return
        what = _EVENT.unpack_from(data, offset)[0]
        if what == PROC_EVENT_FORK:
            _, parent_tgid, child_pid, child_tgid = _FORK.unpack_from(data, offset + _EVENT.size)
            if child_pid == child_tgid and (parent_tgid == self.pid or parent_tgid in self.started):
                self.started[child_tgid] = targets.comm(child_tgid)
        elif what == PROC_EVENT_EXEC:
            pid, tgid = _EXEC.unpack_from(data, offset + _EVENT.size)
            if pid == tgid and tgid in self.started:
                self.started[tgid] = targets.comm(tgid)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _listen() -> Optional[socket.socket]:
    """A socket subscribed to process events, or None."""
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        try:  # every fork of the machine arrives here: room for a busy second between polls
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RECEIVE_BUFFER)
        except OSError:
            pass
        sock.bind((0, CN_IDX_PROC))
        payload = struct.pack("=I", PROC_CN_MCAST_LISTEN)
        message = _CN_MSG.pack(CN_IDX_PROC, CN_VAL_PROC, 0, 0, len(payload), 0) + payload
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(message), NLMSG_DONE, 0, 0, 0) + message)
        return sock
    except OSError:
        return None
