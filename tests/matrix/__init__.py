"""The kernel matrix (scripts/kernel-matrix.sh): leaktrace's smoke checks on
Debian's kernels under QEMU. checks.py is the guest side; the rest runs on
the host."""
