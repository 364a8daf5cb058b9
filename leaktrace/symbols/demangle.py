"""Turn C++ (Itanium ABI) symbol names into what the programmer wrote.

Contract: demangle(name) returns the readable form of a mangled name, and the
name unchanged when it is not mangled or the demangler cannot read it (C
names, Rust v0 names, truncated strings). It never raises. Uses the `cxxfilt`
package, which calls the C++ runtime's own demangler, then writes the
standard string typedefs as programmers do (`std::string`, not
`std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >`).
"""
from __future__ import annotations

from functools import lru_cache

_NOT_LOADED = object()
_cxxfilt = _NOT_LOADED


def _demangler():
    """cxxfilt, imported at the first mangled name: its import finds and loads
    libstdc++ with ctypes (0.2 s), which a C program's trace never needs."""
    global _cxxfilt
    if _cxxfilt is _NOT_LOADED:
        try:
            import cxxfilt
        except (ImportError, OSError):
            cxxfilt = None
        _cxxfilt = cxxfilt
    return _cxxfilt


# The demangler spells out these typedefs; the old (pre-C++11) ABI's
# std::basic_string has no __cxx11 namespace.
_TYPEDEFS = tuple(
    (f"std::{abi}basic_string<{ch}, std::char_traits<{ch}>, std::allocator<{ch}> >", f"std::{short}")
    for abi in ("__cxx11::", "")
    for ch, short in (("char", "string"), ("wchar_t", "wstring"), ("char16_t", "u16string"),
                      ("char32_t", "u32string"), ("char8_t", "u8string"))
)


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    if not name.startswith("_Z") or _demangler() is None:
        return name
    try:
        readable = _demangler().demangle(name)
    except Exception:  # InvalidName, or a runtime error from the C++ library
        return name
    for spelled, typedef in _TYPEDEFS:
        # `vector<basic_string<...> >` keeps its space only while it ends in `>`
        readable = readable.replace(spelled + " >", typedef + ">").replace(spelled, typedef)
    return readable
