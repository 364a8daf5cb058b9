#!/usr/bin/env bash
# The VM path end to end on a Linux host with libvirt: build the Debian box
# (build-box.sh, once), `vagrant up` (boot + provision.sh), scripts/demo.sh in
# the VM, `vagrant destroy`. Prints how long each step took.
#
#   sudo vagrant/demo-in-vm.sh [--keep] [-- DEMO OPTIONS...]
#     --keep    leave the VM running (`vagrant destroy -f` in vagrant/ removes it)
#     DEMO OPTIONS go to scripts/demo.sh in the VM, e.g. -- --leaky --seconds 30
#
# LEAKTRACE_LIBVIRT_DRIVER=qemu emulates the CPU where KVM cannot run the guest
# (see the Vagrantfile). A libvirt daemon that is not running (a host without
# systemd) is started for the run and stopped after it.
# Exit status: the demo's (0 when every check passed), 2 when a step failed.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
BOX=leaktrace/debian-12
# Generous: under emulation, provisioning (apt, bcc) takes tens of minutes.
UP_TIMEOUT=3h
DEMO_TIMEOUT=1h

keep=0
demo_args=()
started_daemons=()
timings=()

log() { printf 'demo-in-vm: %s\n' "$*" >&2; }

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --keep) keep=1 ;;
      --) shift; demo_args=("$@"); return ;;
      -h | --help) sed -n '/^#   sudo/,/^# Exit/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
      *) log "unknown option $1 (options for the demo go after --)"; exit 2 ;;
    esac
    shift
  done
}

# timed LABEL CMD...: runs CMD and records how long it took.
timed() {
  local label=$1 start=$SECONDS status=0
  shift
  "$@" || status=$?
  timings+=("$(printf '%-22s %5d s' "$label" $((SECONDS - start)))")
  return "$status"
}

# start_daemon NAME: start a libvirt daemon that does not run yet, for this run only.
start_daemon() {
  [ -f "/run/$1.pid" ] && kill -0 "$(cat "/run/$1.pid")" 2>/dev/null && return
  "$1" --daemon
  started_daemons+=("$1")
}

ensure_libvirtd() {
  virsh -c qemu:///system version >/dev/null 2>&1 && return
  log "starting virtlogd and libvirtd (stopped at the end)"
  start_daemon virtlogd
  start_daemon libvirtd
  local waited=0
  until virsh -c qemu:///system version >/dev/null 2>&1; do
    [ "$waited" -lt 60 ] || { log "libvirtd does not answer"; exit 2; }
    sleep 0.5
    waited=$((waited + 1))
  done
}

cleanup() {
  local status=$? daemon
  set +e
  if [ "$keep" -eq 0 ]; then
    (cd "$HERE" && vagrant destroy -f >&2)
  fi
  for daemon in "${started_daemons[@]}"; do
    [ "$keep" -eq 1 ] && break
    [ -f "/run/$daemon.pid" ] && kill "$(cat "/run/$daemon.pid")"
  done
  printf '%s\n' "${timings[@]}" >&2
  exit "$status"
}

main() {
  parse_args "$@"
  if [ "$(id -u)" -ne 0 ]; then
    log "run as root (sudo $0): it installs packages and runs libvirt"
    exit 2
  fi
  timed "box (build-box.sh)" bash "$HERE/build-box.sh" --name "$BOX" || exit 2
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  ensure_libvirtd
  cd "$HERE"
  export LEAKTRACE_BOX=$BOX VAGRANT_CHECKPOINT_DISABLE=1
  timed "vagrant up + provision" timeout "$UP_TIMEOUT" vagrant up --provider=libvirt || exit 2
  local status=0
  timed "demo in the VM" timeout "$DEMO_TIMEOUT" \
    vagrant ssh -c "sudo /vagrant/scripts/demo.sh ${demo_args[*]}" || status=$?
  [ "$status" -le 1 ] || status=2
  return "$status"
}

main "$@"
