"""Where uprobes come from: BPF links (BPF_TRACE_UPROBE_MULTI, Linux 6.6+),
else bcc's perf events; and the file descriptors that hold them.

bcc attaches each uprobe as a perf event. Closing one makes the kernel wait
for two RCU grace periods under its global event_mutex: ~0.1 s per probe
here, 2.4 s for the 22 probes of glibc's family, one after the other.
A uprobe_multi link waits once per link and takes no global mutex, so the
links of a whole session close in parallel in ~0.06 s (probes/release.py).

The programs are the same bcc functions, loaded with expected_attach_type
BPF_TRACE_UPROBE_MULTI; the kernel refuses such a program on a perf event and
refuses a tail call between programs of different attach types, so a probe
uses links for every program or for none. And the kernel keeps one uprobe per
(file, offset) with one reference-counter offset: bcc 0.26's Python passes a
stray one (a seventh argument it never sets) that differs from a link's 0, so
while a bcc tool (memleak, or a uprobe leaked by one) holds an address, a
link there fails with EINVAL. links_usable() therefore tries, before any
program is loaded, one no-op link over the plan's addresses, filtered to
leaktrace's own process (the target is never touched), and the probe falls
back to perf events when the kernel refuses it.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
from typing import Callable, Dict, List, Optional, Sequence

from ..base import privileges
from ..base.errors import LeaktraceError, ProbeLoadError, TargetError
from . import release, syscall

BPF_PROG_TYPE_KPROBE = 2
BPF_TRACE_UPROBE_MULTI = 48  # enum bpf_attach_type
BPF_F_UPROBE_MULTI_RETURN = 1
_BTF = "/sys/kernel/btf/vmlinux"
_UPROBE_PMU = "/sys/bus/event_source/devices/uprobe/type"
# union bpf_attr, link_create: prog_fd, target_fd, attach_type, flags, then
# uprobe_multi: path, offsets, ref_ctr_offsets, cookies (pointers), cnt, flags, pid.
_LINK_CREATE = struct.Struct("=IIIIQQQQIII")
# prog_load: prog_type, insn_cnt, insns, license, log_level, log_size, log_buf,
# kern_version, prog_flags, prog_name[16], prog_ifindex, expected_attach_type.
_PROG_LOAD = struct.Struct("=IIQQIIQII16sII")
_RETURN_0 = bytes.fromhex("b700000000000000" "9500000000000000")  # r0 = 0; exit

_supported: Optional[bool] = None


def supported() -> bool:
    """Whether this kernel has uprobe_multi links (its BTF names the link type)."""
    global _supported
    if _supported is None:
        try:
            with open(_BTF, "rb") as btf:
                _supported = syscall.available() and b"\0bpf_uprobe_multi_link\0" in btf.read()
        except OSError:
            _supported = False
    return _supported


def create_link(prog_fd: int, path: bytes, offsets: Sequence[int], pid: int, retprobe: bool) -> int:
    """A link running prog_fd at each file offset of path, in process pid only
    (at their returns with retprobe). Returns its fd; raises OSError."""
    path_buffer = ctypes.create_string_buffer(path)
    offset_buffer = ctypes.create_string_buffer(struct.pack(f"={len(offsets)}Q", *offsets))
    return syscall.bpf(syscall.BPF_LINK_CREATE, _LINK_CREATE.pack(
        prog_fd, 0, BPF_TRACE_UPROBE_MULTI, 0, ctypes.addressof(path_buffer),
        ctypes.addressof(offset_buffer), 0, 0, len(offsets),
        BPF_F_UPROBE_MULTI_RETURN if retprobe else 0, max(pid, 0)))


def plan_addresses(bcc_bpf, objects: Dict[str, Sequence], pid: int,
                   placement: Callable) -> Dict[bytes, List[int]]:
    """The file offsets the probes of a plan (host path -> allocator.Hook list)
    will take, entries and returns, by path."""
    addresses: Dict[bytes, List[int]] = {}
    for path, hooks in objects.items():
        for hook in hooks:
            for offset in {0, placement(hook)}:
                try:
                    resolved, at = file_offset_of(bcc_bpf, path.encode(), hook.symbol.encode(), pid, offset)
                except Exception:  # bcc raises bare Exception; attach() will say what is wrong
                    continue
                addresses.setdefault(resolved, []).append(at)
    return addresses


def links_usable(addresses: Dict[bytes, List[int]]) -> bool:
    """Whether the kernel takes links at every (path, file offset): one no-op
    link per path, in leaktrace's own process, released at once."""
    if not supported() or not addresses:
        return False
    license, program = ctypes.create_string_buffer(b"GPL"), ctypes.create_string_buffer(_RETURN_0)
    try:
        prog_fd = syscall.bpf(syscall.BPF_PROG_LOAD, _PROG_LOAD.pack(
            BPF_PROG_TYPE_KPROBE, 2, ctypes.addressof(program), ctypes.addressof(license),
            0, 0, 0, 0, 0, b"lt_link_check", 0, BPF_TRACE_UPROBE_MULTI))
    except OSError:
        return False
    holder = release.Holder()
    try:
        for path, offsets in addresses.items():
            holder.make({"kind": "link", "path": helper_path(path), "offsets": sorted(set(offsets)),
                         "pid": os.getpid(), "retprobe": False}, prog_fd)
        return True
    except OSError:
        return False
    finally:
        holder.release()
        os.close(prog_fd)


def attach_error(exc: Exception, function: str, path: str, pid: int) -> LeaktraceError:
    """What an attach failure really means: the target left, root may not read it, or a load error."""
    text = str(exc)
    if "No such process" in text or "ESRCH" in text or gone(exc):
        return TargetError(f"process {pid} exited while probes were attached")
    if not os.access(f"/proc/{pid}/root", os.R_OK):
        return privileges.denied(f"/proc/{pid}/root", pid)
    if isinstance(exc, OSError):  # a BPF link, refused after links_usable() accepted the address
        return ProbeLoadError(f"the kernel refused a uprobe link at {function} in {path} ({exc.strerror})",
                              hint="another tool may have put a uprobe there since; stop it and retry")
    return ProbeLoadError(f"could not attach to {function} in {path}: {text}")


def gone(error: Exception) -> bool:
    """Whether a link failure means the process exited."""
    return isinstance(error, OSError) and error.errno == errno.ESRCH


class UprobeHooks:
    """Attaches bcc functions as uprobes, made and held by a helper process
    (probes/release.py's Holder), so a signal to leaktrace interrupts none."""

    def __init__(self, bpf, links: bool):
        self.bpf = bpf
        self.links = links
        self.holder = release.Holder()

    @property
    def attach_type(self) -> int:
        """expected_attach_type for every program these hooks run (-1: bcc's default)."""
        return BPF_TRACE_UPROBE_MULTI if self.links else -1

    def attach(self, path: bytes, symbol: bytes, handler: bytes, pid: int, offset: int = 0,
               retprobe: bool = False, every_process: bool = False) -> None:
        """handler at symbol+offset in path (its return with retprobe), for pid
        (path is resolved in pid), or for every process with every_process.
        Raises what bcc raises, or OSError."""
        probe_pid = -1 if every_process else pid
        self.holder.start()  # before the first probe: leaktrace makes no uprobe itself
        if not self.links and not os.path.exists(_UPROBE_PMU):
            # tracefs events (kernels before 4.17): only bcc's cleanup() removes them
            bcc_attach = self.bpf.attach_uretprobe if retprobe else self.bpf.attach_uprobe
            extra = {} if retprobe else {"sym_off": offset}
            bcc_attach(name=path, sym=symbol, fn_name=handler, pid=probe_pid, **extra)
            return
        program = self.bpf.load_func(handler, self.bpf.KPROBE, attach_type=self.attach_type)
        resolved, file_offset = file_offset_of(self.bpf, path, symbol, pid, offset)
        event = self.bpf._get_uprobe_evname(b"r" if retprobe else b"p", resolved, file_offset, probe_pid)
        request = {"kind": "link" if self.links else "perf", "path": helper_path(resolved),
                   "offsets": [file_offset], "pid": probe_pid, "retprobe": retprobe, "event": os.fsdecode(event)}
        try:
            self.holder.make(request, program.fd)
        except OSError as exc:
            if self.links:
                raise
            raise Exception(f"Failed to attach BPF to uprobe ({exc.strerror})") from None  # as bcc says it

    def release(self) -> None:
        """Remove every uprobe from the targets: the helper closes them
        (release.wait() waits for it)."""
        self.holder.release()


def helper_path(path: bytes) -> str:
    """path as the helper process can open it: objects are pinned as
    /proc/self/fd/N (symbols/paths.py), and the helper's self is not ours."""
    path = os.fsdecode(path)
    if path.startswith("/proc/self/"):
        return f"/proc/{os.getpid()}/{path[len('/proc/self/'):]}"
    return path


def file_offset_of(bcc_bpf, path: bytes, symbol: bytes, pid: int, offset: int = 0):
    """(path as resolved, file offset of symbol + offset), as bcc finds them for a uprobe."""
    return bcc_bpf._check_path_symbol(path, symbol, None, pid, offset)
