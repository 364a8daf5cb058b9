#!/bin/busybox sh
# shellcheck shell=dash
# /init of a kernel-matrix guest (tests/matrix/initramfs.py packs it with a
# static busybox, the modules listed in /modules/order and /matrix.env).
# Loads the modules, mounts the host's root (virtiofs tag "host", read-only)
# under a tmpfs overlay, chroots into it to run guest_run.sh from the
# checkout, then powers off. Results go to the second serial port (ttyS1);
# this console (ttyS0) is the log.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
# shellcheck source=/dev/null
. /matrix.env
exec 3>/dev/ttyS1

fail() {
  echo "matrix-guest: $*"
  echo "{\"boot_failed\": \"$*\"}" >&3
  poweroff -f
}

while read -r module; do
  insmod "/modules/$module.ko" || fail "insmod $module"
done </modules/order
mount -t virtiofs -o ro host /lower || fail "mount virtiofs"
mount -t tmpfs -o "size=$MATRIX_TMPFS" tmpfs /rw || fail "mount tmpfs"
mkdir /rw/upper /rw/work
mount -t overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work overlay /newroot \
  || fail "mount overlay"
for dir in proc sys dev; do
  mount --move "/$dir" "/newroot/$dir" || fail "move /$dir"
done
cp /matrix.env /newroot/etc/leaktrace-matrix.env
echo "matrix-guest: booted $(uname -r), running the checks"
chroot /newroot /bin/bash "$MATRIX_CHECKOUT/tests/matrix/guest_run.sh"
echo "matrix-guest: checks ended with status $?"
poweroff -f
