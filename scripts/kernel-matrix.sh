#!/usr/bin/env bash
# The kernel matrix: leaktrace's smoke checks on the kernels users run.
#
# Fetches Debian's cloud kernels (cached under /var/cache/leaktrace/kernel-matrix),
# boots each under QEMU (KVM, else TCG) with this machine's root filesystem
# shared read-only and a tmpfs overlay, so the guest runs this checkout,
# runs tests/matrix/checks.py inside, and prints one table: kernel x check,
# PASS/FAIL/SKIP with times and reasons. Every boot and check has a timeout;
# Ctrl-C stops the guest; nothing is left running.
#
#   sudo scripts/kernel-matrix.sh [--kernels 5.10,6.1,6.12,6.18] [--checks smoke|NAME,...]
#                                 [--json FILE] [--logs DIR] [--accel auto|kvm|tcg]
#                                 [--check-timeout S] [--kernel-timeout S] [--cpus N] [--memory-mb N]
#                                 [--no-setup]
#
# --kernels host runs the checks on the running kernel, without a guest.
# Exit status: 0 when every check passed, 1 when one failed, 2 on bad options.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
run_setup=1
args=()
for arg in "$@"; do
  case "$arg" in
    --no-setup) run_setup=0 ;;
    -h|--help) sed -n '/^#   sudo/,/^# Exit/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "kernel-matrix.sh: run as root (sudo $0): it boots virtual machines and loads eBPF programs" >&2
  exit 2
fi
if [ "$run_setup" -eq 1 ]; then
  bash "$repo/scripts/setup.sh" --test >&2
fi
cd "$repo"
PYTHONPATH="$repo/tests" exec "$repo/.venv/bin/python" -m matrix "${args[@]}"
