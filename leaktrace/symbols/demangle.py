"""Turn C++ (Itanium ABI) symbol names into what the programmer wrote.

Contract: demangle(name) returns the readable form of a mangled name, and the
name unchanged when it is not mangled or the demangler cannot read it (C
names, Rust v0 names, truncated strings). It never raises. Uses the `cxxfilt`
package, which calls the C++ runtime's own demangler.
"""
from __future__ import annotations

from functools import lru_cache

try:
    import cxxfilt
except (ImportError, OSError):  # cxxfilt loads libstdc++ with ctypes at import
    cxxfilt = None


@lru_cache(maxsize=65536)
def demangle(name: str) -> str:
    if cxxfilt is None or not name.startswith("_Z"):
        return name
    try:
        return cxxfilt.demangle(name)
    except Exception:  # InvalidName, or a runtime error from the C++ library
        return name
