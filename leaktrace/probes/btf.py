"""Where a member lies in a kernel struct, read from the kernel's own BTF.

/sys/kernel/btf/vmlinux describes every type of the running kernel
(include/uapi/linux/btf.h). A probe that reads a kernel struct through a
pointer a tracepoint hands it needs the member's offset in *this* kernel,
which headers of another version would get wrong; BTF never does.
member_offsets() is pure (bytes in, offsets out); the file is read once.
"""
from __future__ import annotations

import struct
from typing import Dict, Iterable, Optional

VMLINUX = "/sys/kernel/btf/vmlinux"
_MAGIC = 0xEB9F
_STRUCT = 4
# Bytes that follow a btf_type of each kind: fixed, and per vlen entry.
_EXTRA_FIXED = {1: 4, 3: 12, 14: 4, 17: 4}  # INT, ARRAY, VAR, DECL_TAG
_EXTRA_PER_ITEM = {4: 12, 5: 12, 6: 8, 13: 8, 15: 12, 19: 12}  # STRUCT, UNION, ENUM, FUNC_PROTO, DATASEC, ENUM64


def member_offsets(blob: bytes, struct_name: str, members: Iterable[str]) -> Optional[Dict[str, int]]:
    """Byte offsets of members of the first struct called struct_name; None
    when there is no such struct or a member is missing or a bitfield."""
    magic, _version, _flags, hdr_len, type_off, type_len, str_off, _str_len = struct.unpack_from("<HBBIIIII", blob)
    if magic != _MAGIC:
        raise ValueError("not BTF data")
    strings = hdr_len + str_off
    pos, end = hdr_len + type_off, hdr_len + type_off + type_len
    wanted = struct_name.encode()
    while pos < end:
        name_off, info, _size = struct.unpack_from("<III", blob, pos)
        kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
        pos += 12
        if kind == _STRUCT and _name(blob, strings + name_off) == wanted:
            found = {}
            for i in range(vlen):
                m_name, _type, m_offset = struct.unpack_from("<III", blob, pos + 12 * i)
                bits = m_offset & 0xFFFFFF if info >> 31 else m_offset
                found[_name(blob, strings + m_name).decode()] = bits
            members = list(members)
            if any(m not in found or found[m] % 8 for m in members):
                return None
            return {m: found[m] // 8 for m in members}
        pos += _EXTRA_FIXED.get(kind, 0) + _EXTRA_PER_ITEM.get(kind, 0) * vlen
    return None


def _name(blob: bytes, start: int) -> bytes:
    return blob[start:blob.index(b"\0", start)]


def kernel_member_offsets(struct_name: str, members: Iterable[str], path: str = VMLINUX) -> Optional[Dict[str, int]]:
    """member_offsets() of the running kernel; None without BTF."""
    try:
        with open(path, "rb") as handle:
            return member_offsets(handle.read(), struct_name, members)
    except (OSError, ValueError, struct.error):
        return None
