"""Entry points that only jump to another hooked one are not probed (forwarders.py),
on a library the test compiles, and on the allocators the C++ tests use. No root."""
import os
import subprocess

import pytest

from leaktrace.probes import allocator
from leaktrace.probes.forwarders import drop_forwarders, jump_target
from leaktrace.symbols import open_elf

FORWARDERS_C = r"""
#include <stdlib.h>
__attribute__((noinline)) void *base_alloc(size_t n) { return malloc(n + 1); }
void *direct_forward(size_t n) { return base_alloc(n); }   /* jmp base_alloc */
void *plt_forward(size_t n) { return malloc(n); }          /* jmp malloc@plt */
void *works(size_t n) { void *p = base_alloc(n); return p ? p : base_alloc(1); }
"""


def name_at(path):
    elf = open_elf(path)

    def at(address):
        found = elf.lookup(address)
        return found[0] if found and found[1] == 0 else None
    return at


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    out = tmp_path_factory.mktemp("forwarders")
    (out / "fw.c").write_text(FORWARDERS_C)
    path = out / "libfw.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-fno-semantic-interposition", str(out / "fw.c"),
                    "-o", str(path)], check=True)
    return str(path)


def test_the_first_jump_is_followed_directly_and_through_the_plt(lib):
    assert jump_target(lib, "direct_forward", name_at(lib)) == "base_alloc"
    assert jump_target(lib, "plt_forward", name_at(lib)) == "malloc"
    assert jump_target(lib, "works", name_at(lib)) is None  # does more than jump
    assert jump_target(lib, "no_such_symbol", name_at(lib)) is None


def test_only_a_forwarder_to_a_hooked_entry_point_is_dropped(lib):
    elf = open_elf(lib)

    def address_of(symbol):
        found = elf.find_function(symbol)
        return found[0] if found else None

    def kept(symbols):
        return drop_forwarders(symbols, lambda s: s, address_of, lambda s: jump_target(lib, s, name_at(lib)))

    assert kept(["base_alloc", "direct_forward", "works"]) == ["base_alloc", "works"]
    # What it jumps to is not hooked: the forwarder is the entry point seen.
    assert kept(["direct_forward", "plt_forward"]) == ["direct_forward", "plt_forward"]


JEMALLOC = "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"


@pytest.mark.skipif(not os.path.exists(JEMALLOC) and not os.environ.get("CI"), reason="no libjemalloc")
def test_jemalloc_delete_and_new_array_are_left_to_free_and_new():
    # jemalloc 5.3: operator delete(void*) is `jmp free@plt`, new[] is `jmp operator new`.
    plan = allocator.discover_for_command("/bin/true", {}, obj=JEMALLOC)
    symbols = {hook.symbol: hook.function for hook in plan.hooks}
    assert symbols["_Znwm"] == "new" and symbols["free"] == "free", symbols
    assert "_ZdlPv" not in symbols and "_Znam" not in symbols, symbols
    assert symbols["_ZdlPvm"] == "delete" and symbols["mallocx"] == "mallocx", symbols
