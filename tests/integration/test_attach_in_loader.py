"""Attaching to a process that is still in the dynamic loader.

`./server & leaktrace attach -p $!` can find the process with only itself
and ld.so mapped: its libraries, the allocator among them, are not there yet.
The test holds the program at its exec (PTRACE_TRACEME: it stops before
ld.so runs), starts looking for the allocator, and lets it go only while the
search is waiting. The search must wait for the libraries and choose libc's
malloc, where it used to fail at once with "no allocator found".
No privileges: the program is the test's own child.
"""
import ctypes
import os
import signal
import subprocess
import threading

from leaktrace.probes import allocator
from leaktrace.process.traced_process import TracedProcess

PTRACE_TRACEME, PTRACE_DETACH = 0, 17
HELD_S = 0.5  # well inside allocator.LOADER_WAIT_S

_libc = ctypes.CDLL(None, use_errno=True)


def _trace_me():
    _libc.ptrace(PTRACE_TRACEME, 0, None, None)


def test_the_allocator_search_waits_for_the_loader_to_map_the_libraries(build):
    binary = build("early_leak.c")
    child = subprocess.Popen([str(binary), "60000"], preexec_fn=_trace_me,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _, status = os.waitpid(child.pid, os.WUNTRACED)  # stopped at exec, before ld.so ran
        assert os.WIFSTOPPED(status) and os.WSTOPSIG(status) == signal.SIGTRAP
        process = TracedProcess(child.pid)
        mapped = {os.path.basename(entry.path) for entry in process.maps() if entry.executable}
        assert not any(name.startswith("libc.so") for name in mapped), mapped
        found = {}
        search = threading.Thread(target=lambda: found.update(plan=allocator.discover(process, None)))
        search.start()
        search.join(HELD_S)
        assert search.is_alive(), "the search ended while the program could not have mapped libc"
        assert _libc.ptrace(PTRACE_DETACH, child.pid, None, None) == 0  # the loader runs on
        search.join(allocator.LOADER_WAIT_S * 5)
        assert not search.is_alive()
        plan = found["plan"]
        assert os.path.basename(plan.allocator_path).startswith("libc.so"), plan.allocator_path
        assert "malloc" in {hook.function for hook in plan.hooks}
    finally:
        child.kill()
        child.wait()
