#!/usr/bin/env bash
# Runs inside a kernel-matrix guest, chrooted into the host's root (read-only,
# tmpfs overlay; see guest_init.sh): mounts what a booted system has, puts
# this kernel's modules and headers (when Debian ships them) where bcc looks,
# and runs tests/matrix/checks.py from the checkout, results to ttyS1.
set -u
# shellcheck source=/dev/null
. /etc/leaktrace-matrix.env

# A checkout under /tmp or /run (CI may clone anywhere) would vanish under the
# fresh tmpfs mounts: hold it on a bind mount and put it back at its own path.
mkdir -p /mnt/leaktrace-checkout
mount --bind "$MATRIX_CHECKOUT" /mnt/leaktrace-checkout
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
if [ ! -d "$MATRIX_CHECKOUT/tests/matrix" ]; then
  mkdir -p "$MATRIX_CHECKOUT"
  mount --bind /mnt/leaktrace-checkout "$MATRIX_CHECKOUT"
fi
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up 2>/dev/null

release=$(uname -r)
for modules in "$MATRIX_KERNEL_ROOT/lib/modules/$release" "$MATRIX_KERNEL_ROOT/usr/lib/modules/$release"; do
  if [ -d "$modules" ]; then
    rm -rf "/lib/modules/$release"
    mkdir -p /lib/modules
    ln -s "$modules" "/lib/modules/$release"
  fi
done
for tree in "$MATRIX_KERNEL_ROOT"/usr/src/*; do
  [ -e "$tree" ] && [ ! -e "/usr/src/${tree##*/}" ] && ln -s "$tree" /usr/src/
done

cd "$MATRIX_CHECKOUT" || exit 1
export HOME=/root MATRIX_ACCEL LEAKTRACE_TIMEOUT_SCALE=$MATRIX_TIMEOUT_SCALE
if [ -n "${MATRIX_RUN:-}" ]; then  # --run: a command instead of the checks, output on the console
  bash -c "$MATRIX_RUN"
  exit
fi
exec .venv/bin/python tests/matrix/checks.py --checks "$MATRIX_CHECKS" \
  --timeout "$MATRIX_CHECK_TIMEOUT" --results /dev/ttyS1
