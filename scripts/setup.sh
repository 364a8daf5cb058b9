#!/usr/bin/env bash
# Set up everything leaktrace needs on a Debian/Ubuntu host: system packages
# (bcc, kernel headers, compilers, Docker), tracefs, and the project's virtual
# environment in .venv. Safe to run again: it only does what is missing.
#
#   scripts/setup.sh            base set-up (tracing, the demo: bcc's tools, Docker)
#   scripts/setup.sh --test     also what the test suite needs
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
want_test=0
for arg in "$@"; do
  case "$arg" in
    --test) want_test=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" -ne 0 ]; then
  echo "setup.sh: run as root (sudo $0): it installs system packages" >&2
  exit 1
fi

log() { printf 'setup: %s\n' "$*" >&2; }

# bcc comes from the distribution, never PyPI (the PyPI "bcc" is unrelated);
# bpfcc-tools brings bcc's memleak, which the demo sets beside leaktrace.
packages=(python3-bpfcc libbpfcc bpfcc-tools python3-venv gcc g++ make binutils)
# The demo runs its app in a container. A Docker already installed some other
# way (docker-ce) is used as it is.
command -v dockerd >/dev/null || packages+=(docker.io)
if [ "$want_test" -eq 1 ]; then
  packages+=(libjemalloc-dev musl-tools shellcheck vagrant vagrant-libvirt redis-server redis-tools)
  # C++ programs on each allocator that defines operator new (tcmalloc, mimalloc)
  packages+=(libgoogle-perftools-dev libmimalloc-dev)
  # the kernel matrix (scripts/kernel-matrix.sh): guests, their initramfs, Debian's keys
  packages+=(qemu-system-x86 busybox-static debian-archive-keyring)
  # real consumers of the output formats: go tool pprof, protoc, headless Chromium
  packages+=(golang-go protobuf-compiler chromium)
  # the agent's tests: a real Prometheus server scrapes it
  packages+=(prometheus)
  # deploy/build-image.sh makes the agent's image from Debian's packages
  packages+=(mmdebstrap)
fi

# Kernel headers: the running kernel's package if the distribution has it,
# else its default headers package (leaktrace merges the tree at run time).
headers="linux-headers-$(uname -r)"
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ! -e "/lib/modules/$(uname -r)/build" ] && ! ls -d /usr/src/linux-headers-* >/dev/null 2>&1; then
  missing+=(HEADERS)
fi

if [ "${#missing[@]}" -gt 0 ]; then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Wait for another apt-get to finish rather than fail on its lock.
  apt=(apt-get -o DPkg::Lock::Timeout=600)
  "${apt[@]}" update -qq
  if [[ " ${missing[*]} " == *" HEADERS "* ]]; then
    missing=("${missing[@]/HEADERS}")
    if apt-cache show "$headers" >/dev/null 2>&1; then
      missing+=("$headers")
    else
      case "$(. /etc/os-release; echo "$ID")" in
        ubuntu) missing+=(linux-headers-generic) ;;
        *) missing+=("linux-headers-$(dpkg --print-architecture)") ;;
      esac
    fi
  fi
  # shellcheck disable=SC2068 # an emptied HEADERS slot must vanish
  "${apt[@]}" install -y -qq --no-install-recommends ${missing[@]} >/dev/null
fi

# bcc reads tracepoint formats and attaches uprobes through tracefs.
if [ ! -e /sys/kernel/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || log "could not mount tracefs"
fi
if [ ! -e /sys/kernel/debug/tracing ] && [ -d /sys/kernel/debug ]; then
  mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null || true
fi

# The venv sees the system's bcc module, so it is built from the system Python.
if [ ! -x "$repo/.venv/bin/python" ]; then
  log "creating $repo/.venv"
  /usr/bin/python3 -m venv --system-site-packages "$repo/.venv"
fi
# The install is editable, so only pyproject.toml (dependencies, entry
# points) calls for another pip run; the stamp remembers which was installed.
extra=""
[ "$want_test" -eq 1 ] && extra="[test]"
stamp="$repo/.venv/.leaktrace-installed"
installed="$(sha256sum <"$repo/pyproject.toml" | cut -d' ' -f1)$extra"
have=$(cat "$stamp" 2>/dev/null || true)
if [ ! -x "$repo/.venv/bin/leaktrace" ] || { [ "$have" != "$installed" ] && [ "$have" != "${installed}[test]" ]; }; then
  log "installing leaktrace$extra into .venv (pip)"
  "$repo/.venv/bin/pip" install -q --disable-pip-version-check -e "$repo$extra"
  printf '%s\n' "$installed" >"$stamp"
fi
"$repo/.venv/bin/python" -c 'import bcc' 2>/dev/null \
  || { log "bcc is not importable from .venv; is python3-bpfcc installed?"; exit 1; }
log "ready: $repo/.venv/bin/leaktrace"
