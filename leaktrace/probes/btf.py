"""Where a member lies in a kernel struct, read from the kernel's own BTF.

/sys/kernel/btf/vmlinux describes every type of the running kernel
(include/uapi/linux/btf.h). A probe that reads a kernel struct through a
pointer needs the member's offset in *this* kernel, which headers of another
version would get wrong; BTF never does. Members inside anonymous structs and
unions (struct page is made of them) are found through them, with their
offsets added up. Parsing is pure (bytes in, offsets out); the file is read once.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Dict, Iterable, Optional, Tuple

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
_STRUCT, _UNION = 4, 5
# Bytes that follow a btf_type of each kind: fixed, and per vlen entry.
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_EXTRA_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64


@dataclass(frozen=True)
class Composite:
    """A struct or union: its size and its members as (name, type id, bit offset or None for a bitfield)."""
    name: str
    size: int
    members: Tuple[Tuple[str, int, Optional[int]], ...]


class Types:
    """The structs and unions of a BTF blob, by type id and by name."""

    def __init__(self, blob: bytes):
        magic, _version, _flags, hdr_len, type_off, type_len, str_off, _ = struct.unpack_from("<HBBIIIII", blob)
        if magic != _MAGIC:
            raise ValueError("not BTF data")
        self._blob, self._strings = blob, hdr_len + str_off
        self.by_id: Dict[int, Composite] = {}
        self.by_name: Dict[str, int] = {}
        pos, end, type_id = hdr_len + type_off, hdr_len + type_off + type_len, 1
        while pos < end:
            name_off, info, size = struct.unpack_from("<III", blob, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            pos += 12
            if kind in (_STRUCT, _UNION):
                self._add(type_id, self._name(name_off), size, blob, pos, vlen, bool(info >> 31))
            pos += _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen
            type_id += 1

    def _add(self, type_id: int, name: str, size: int, blob: bytes, pos: int, vlen: int, bitfields: bool):
        members = []
        for i in range(vlen):
            m_name, m_type, m_offset = struct.unpack_from("<III", blob, pos + 12 * i)
            bits = m_offset & 0xFFFFFF if bitfields else m_offset
            whole = not (bitfields and m_offset >> 24)
            members.append((self._name(m_name), m_type, bits if whole else None))
        self.by_id[type_id] = Composite(name, size, tuple(members))
        if name:
            self.by_name.setdefault(name, type_id)

    def _name(self, offset: int) -> str:
        start = self._strings + offset
        return self._blob[start:self._blob.index(b"\0", start)].decode()

    def offset_of(self, composite: Composite, member: str) -> Optional[int]:
        """Bit offset of member in composite, through anonymous members; None if absent."""
        for name, type_id, bits in composite.members:
            if name == member:
                return bits
            inner = self.by_id.get(type_id) if not name else None
            found = self.offset_of(inner, member) if inner is not None else None
            if found is not None and bits is not None:
                return bits + found
        return None


    def layout(self, struct_name: str, members: Iterable[str]) -> Optional[Dict[str, int]]:
        """Byte offsets of members of the struct called struct_name, and its size
        as "sizeof"; None when there is no such struct or a member is missing or
        a bitfield."""
        type_id = self.by_name.get(struct_name)
        if type_id is None:
            return None
        composite = self.by_id[type_id]
        found: Dict[str, int] = {"sizeof": composite.size}
        for member in members:
            bits = self.offset_of(composite, member)
            if bits is None or bits % 8:
                return None
            found[member] = bits // 8
        return found


def member_offsets(blob: bytes, struct_name: str, members: Iterable[str]) -> Optional[Dict[str, int]]:
    return Types(blob).layout(struct_name, members)


@lru_cache(maxsize=2)
def kernel_types(path: str = VMLINUX) -> Optional[Types]:
    """The running kernel's structs and unions; None without BTF."""
    try:
        with open(path, "rb") as handle:
            return Types(handle.read())
    except (OSError, ValueError, struct.error):
        return None


def kernel_member_offsets(struct_name: str, members: Iterable[str], path: str = VMLINUX) -> Optional[Dict[str, int]]:
    """member_offsets() of the running kernel; None without BTF."""
    types = kernel_types(path)
    return types.layout(struct_name, members) if types else None
