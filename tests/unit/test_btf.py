"""Member offsets from BTF: a blob built here by the format's rules
(include/uapi/linux/btf.h), and this machine's own /sys/kernel/btf/vmlinux."""
import os
import struct

import pytest

from leaktrace.probes import btf

INT, PTR, ARRAY, STRUCT, UNION, ENUM = 1, 2, 3, 4, 5, 6


class Blob:
    """Types and strings of a BTF blob, written in order."""

    def __init__(self):
        self.types = b""
        self.strings = b"\0"

    def name(self, text: str) -> int:
        offset = len(self.strings)
        self.strings += text.encode() + b"\0"
        return offset

    def add(self, kind: int, name: str, size: int, extra: bytes = b"", vlen: int = 0, kind_flag: int = 0):
        info = kind_flag << 31 | kind << 24 | vlen
        self.types += struct.pack("<III", self.name(name) if name else 0, info, size) + extra

    def build(self) -> bytes:
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(self.types), len(self.types),
                             len(self.strings))
        return header + self.types + self.strings


def members(blob: Blob, *fields) -> bytes:
    return b"".join(struct.pack("<III", blob.name(name), 1, offset) for name, offset in fields)


@pytest.fixture
def sample() -> bytes:
    blob = Blob()
    blob.add(INT, "unsigned int", 4, struct.pack("<I", 32))  # INT carries 4 more bytes
    blob.add(ARRAY, "", 0, struct.pack("<III", 1, 1, 16))  # ARRAY carries 12
    blob.add(ENUM, "state", 4, struct.pack("<Ii", blob.name("ON"), 1), vlen=1)
    blob.add(STRUCT, "kmem_cache_cpu", 16, members(blob, ("freelist", 0)), vlen=1)
    blob.add(STRUCT, "kmem_cache", 128,
             members(blob, ("cpu_slab", 0), ("flags", 64), ("size", 192), ("name", 768)), vlen=4)
    blob.add(STRUCT, "packed", 8, members(blob, ("bits", 3 << 24 | 5), ("whole", 32)), vlen=2, kind_flag=1)
    # struct page's way: struct { unsigned long flags; union { struct { void *lru[2]; }; struct {
    # unsigned long compound_head; }; struct { void *list[2]; void *slab_cache; }; }; }
    # types so far: 1 INT, 2 ARRAY, 3 ENUM, 4-6 STRUCTs; the anonymous ones are 7-9, the union 10.
    blob.add(STRUCT, "", 16, members(blob, ("lru", 0)), vlen=1)
    blob.add(STRUCT, "", 8, members(blob, ("compound_head", 0)), vlen=1)
    blob.add(STRUCT, "", 24, members(blob, ("list", 0), ("slab_cache", 128)), vlen=2)
    blob.add(UNION, "", 24, b"".join(struct.pack("<III", 0, t, 0) for t in (7, 8, 9)), vlen=3)
    blob.add(STRUCT, "page", 64, members(blob, ("flags", 0)) + struct.pack("<III", 0, 10, 64), vlen=2)
    return blob.build()


def test_offsets_of_named_members_in_bytes(sample):
    assert btf.member_offsets(sample, "kmem_cache", ["name", "size"]) == {"sizeof": 128, "name": 96,
                                                                         "size": 24}


def test_members_inside_anonymous_structs_and_unions(sample):
    assert btf.member_offsets(sample, "page", ["flags", "compound_head", "slab_cache"]) == {
        "sizeof": 64, "flags": 0, "compound_head": 8, "slab_cache": 24}


def test_a_struct_or_member_that_is_not_there(sample):
    assert btf.member_offsets(sample, "slab", ["name"]) is None
    assert btf.member_offsets(sample, "kmem_cache", ["name", "object_size"]) is None


def test_bitfield_members_are_refused_whole_ones_read(sample):
    # kind_flag set: the offset's low 24 bits are the bit offset, the top 8 the bitfield size.
    assert btf.member_offsets(sample, "packed", ["bits"]) is None
    assert btf.member_offsets(sample, "packed", ["whole"]) == {"sizeof": 8, "whole": 4}


def test_not_btf_is_an_error_and_a_missing_file_is_none(sample, tmp_path):
    with pytest.raises(ValueError):
        btf.member_offsets(b"\0" * 32, "kmem_cache", ["name"])
    assert btf.kernel_member_offsets("kmem_cache", ["name"], str(tmp_path / "vmlinux")) is None


def test_this_kernels_task_struct():
    if not os.access(btf.VMLINUX, os.R_OK):
        pytest.skip("this kernel has no BTF")
    found = btf.kernel_member_offsets("task_struct", ["pid", "tgid"])
    assert found["tgid"] == found["pid"] + 4  # pid_t pid; pid_t tgid; in every kernel since 2.6
    cache = btf.kernel_member_offsets("kmem_cache", ["name", "size"])
    assert cache and 0 < cache["size"] < cache["name"] < 512
    page = btf.kernel_member_offsets("page", ["flags", "compound_head"])
    assert page == {"sizeof": 64, "flags": 0, "compound_head": 8}  # x86-64, since 4.x
