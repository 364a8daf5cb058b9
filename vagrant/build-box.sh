#!/usr/bin/env bash
# Build a Debian 12 Vagrant box for the libvirt provider from Debian packages
# alone, and add it to Vagrant: for hosts that cannot download a box.
#
#   sudo vagrant/build-box.sh [--name NAME] [--out DIR] [--force]
#     --name NAME   the box's name in Vagrant (default leaktrace/debian-12)
#     --out DIR     where the root filesystem, disk and .box file are made
#                   (default /var/tmp/leaktrace-box)
#     --force       build again even if Vagrant already has the box
#
# Then: cd vagrant && LEAKTRACE_BOX=leaktrace/debian-12 vagrant up --provider=libvirt
#
# It first installs what it needs on the host (mmdebstrap, qemu-utils, and
# vagrant-libvirt with libvirt and QEMU to run the box). The box is a qcow2
# disk with one ext4 partition made by mkfs.ext4 -d from an mmdebstrap root
# filesystem: Debian's cloud kernel, GRUB written into the MBR by hand (no
# loop device or mount needed), sshd, DHCP on eth0 and the user vagrant
# with Vagrant's insecure key and password-less sudo, as Vagrant expects.
set -euo pipefail

SUITE=bookworm
MIRROR=http://deb.debian.org
DISK_GIB=20
# The MBR gap before the partition holds GRUB's core image.
PART_START_SECTOR=2048
HOST_PACKAGES=(mmdebstrap qemu-utils e2fsprogs fdisk vagrant vagrant-libvirt
  libvirt-daemon-system libvirt-clients qemu-system-x86 dnsmasq-base rsync)
GUEST_PACKAGES=(systemd-sysv dbus linux-image-cloud-amd64 initramfs-tools grub-pc-bin
  ifupdown isc-dhcp-client openssh-server sudo rsync ca-certificates)

name=leaktrace/debian-12
out=/var/tmp/leaktrace-box
force=0

log() { printf 'build-box: %s\n' "$*" >&2; }

usage() {
  sed -n '/^#   sudo/,/^# Then/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1 >&2
  exit "${1:-2}"
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --name) [ -n "${2-}" ] || usage; name=$2; shift ;;
      --out) [ -n "${2-}" ] || usage; out=$2; shift ;;
      --force) force=1 ;;
      -h | --help) usage 0 ;;
      *) log "unknown option $1"; usage ;;
    esac
    shift
  done
}

install_host_packages() {
  local p missing=()
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return
  log "installing on the host: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 update -qq
  apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# insecure_key: the public key every Vagrant logs in with on a box's first boot
# (it then puts a key of its own in its place).
insecure_key() {
  local key
  for key in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
    /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub; do
    [ -f "$key" ] && { cat "$key"; return; }
  done
  log "Vagrant's insecure public key (keys/vagrant.pub) was not found; is vagrant installed?"
  exit 1
}

# make_rootfs DIR: Debian from its packages, ready to boot.
make_rootfs() {
  local sources=("deb $MIRROR/debian $SUITE main" "deb $MIRROR/debian $SUITE-updates main"
    "deb $MIRROR/debian-security $SUITE-security main")
  local packages
  packages=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
  rm -rf "$1"
  mmdebstrap --variant=minbase --include="$packages" --aptopt='Acquire::Retries "3"' \
    "$SUITE" "$1" "${sources[@]}"
}

# configure_rootfs DIR UUID: what the booted system needs from the box.
configure_rootfs() {
  local root=$1 uuid=$2
  echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$root/etc/fstab"
  echo leaktrace-box >"$root/etc/hostname"
  printf 'auto lo\niface lo inet loopback\n\nallow-hotplug eth0\niface eth0 inet dhcp\n' \
    >"$root/etc/network/interfaces"
  chroot "$root" useradd --create-home --shell /bin/bash --groups sudo vagrant
  echo vagrant:vagrant | chroot "$root" chpasswd
  echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$root/etc/sudoers.d/vagrant"
  chmod 0440 "$root/etc/sudoers.d/vagrant"
  install -d -m 0700 "$root/home/vagrant/.ssh"
  insecure_key >"$root/home/vagrant/.ssh/authorized_keys"
  chmod 0600 "$root/home/vagrant/.ssh/authorized_keys"
  chroot "$root" chown -R vagrant:vagrant /home/vagrant/.ssh
  # Each VM gets its own host keys and machine id (hence its own DHCP lease)
  # on first boot, not copies of the box's.
  rm -f "$root"/etc/ssh/ssh_host_*
  install -d "$root/etc/systemd/system/ssh.service.d"
  # Debian's unit checks the configuration (sshd -t) first: the keys must come before.
  printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' \
    >"$root/etc/systemd/system/ssh.service.d/host-keys.conf"
  : >"$root/etc/machine-id"
  trust_host_cas "$root"
  rm -f "$root/etc/resolv.conf"
  write_grub_config "$root" "$uuid"
}

# trust_host_cas DIR: the box trusts the certificate authorities the host added
# locally (behind a TLS-inspecting proxy, pip's downloads need its CA).
trust_host_cas() {
  local cas=(/usr/local/share/ca-certificates/*.crt)
  [ -e "${cas[0]}" ] || return 0
  cp "${cas[@]}" "$1/usr/local/share/ca-certificates/"
  chroot "$1" update-ca-certificates >/dev/null
}

write_grub_config() {
  local root=$1 uuid=$2
  install -d "$root/boot/grub"
  cp -r "$root/usr/lib/grub/i386-pc" "$root/boot/grub/"
  cat >"$root/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
search --no-floppy --fs-uuid --set=root $uuid
menuentry 'Debian GNU/Linux ($SUITE)' {
  linux /vmlinuz root=UUID=$uuid ro console=tty0 console=ttyS0,115200n8 net.ifnames=0
  initrd /initrd.img
}
EOF
}

# make_disk ROOTFS UUID RAW: an MBR disk, one bootable ext4 partition holding
# ROOTFS, GRUB's boot sector and core image in front of it.
make_disk() {
  local rootfs=$1 uuid=$2 raw=$3 sectors part_kib
  sectors=$((DISK_GIB * 1024 * 1024 * 2))
  part_kib=$(((sectors - PART_START_SECTOR) / 2))
  rm -f "$raw"
  truncate -s "${DISK_GIB}G" "$raw"
  echo "start=$PART_START_SECTOR, type=83, bootable" | sfdisk -q "$raw"
  mkfs.ext4 -q -F -L root -U "$uuid" -d "$rootfs" \
    -E offset=$((PART_START_SECTOR * 512)) "$raw" "${part_kib}k"
  # core.img finds /boot/grub on the first partition; boot.img (the first 440
  # bytes, before the disk signature and partition table) loads core.img
  # from sector 1, its built-in default.
  chroot "$rootfs" grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
    biosdisk part_msdos ext2 normal linux search search_fs_uuid serial terminal
  local core_sectors
  core_sectors=$(( ($(stat -c %s "$rootfs/tmp/core.img") + 511) / 512 ))
  [ "$core_sectors" -lt "$PART_START_SECTOR" ] || { log "GRUB's core image is too big"; exit 1; }
  dd if="$rootfs/usr/lib/grub/i386-pc/boot.img" of="$raw" bs=440 count=1 conv=notrunc status=none
  dd if="$rootfs/tmp/core.img" of="$raw" bs=512 seek=1 conv=notrunc status=none
  rm -f "$rootfs/tmp/core.img"
}

# package_box RAW BOX: a libvirt box: the qcow2 disk, its metadata and a Vagrantfile.
package_box() {
  local raw=$1 box=$2 dir
  dir=$(dirname "$box")/box
  rm -rf "$dir"
  mkdir -p "$dir"
  qemu-img convert -f raw -O qcow2 "$raw" "$dir/box.img"
  printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' "$DISK_GIB" \
    >"$dir/metadata.json"
  printf 'Vagrant.configure("2") do |config|\n  config.vm.provider :libvirt do |lv|\n    lv.disk_bus = "virtio"\n  end\nend\n' \
    >"$dir/Vagrantfile"
  tar -C "$dir" -cf "$box" metadata.json Vagrantfile box.img
  rm -rf "$dir"
}

main() {
  parse_args "$@"
  if [ "$(id -u)" -ne 0 ]; then
    log "run as root (sudo $0): it installs packages and builds a root filesystem"
    exit 1
  fi
  install_host_packages
  if [ "$force" -eq 0 ] && vagrant box list 2>/dev/null | grep -q "^$name "; then
    log "Vagrant already has the box $name (--force builds it again)"
    return
  fi
  mkdir -p "$out"
  local uuid box="$out/debian-12-libvirt.box"
  uuid=$(cat /proc/sys/kernel/random/uuid)
  log "building a Debian $SUITE root filesystem in $out/rootfs"
  make_rootfs "$out/rootfs"
  configure_rootfs "$out/rootfs" "$uuid"
  log "making the disk and the box $box"
  make_disk "$out/rootfs" "$uuid" "$out/disk.raw"
  package_box "$out/disk.raw" "$box"
  rm -rf "$out/rootfs" "$out/disk.raw"
  vagrant box add --force --name "$name" "$box"
  log "added the box $name; boot it: cd vagrant && LEAKTRACE_BOX=$name vagrant up --provider=libvirt"
}

main "$@"
