#!/usr/bin/env bash
# Build the leaktrace agent's container image without a registry: mmdebstrap
# makes a Debian root filesystem from Debian's packages (python3, bcc, kernel
# headers for bcc's compiler), pip installs leaktrace and its Python
# dependencies into it, and `docker import` turns it into an image whose
# entry point is `leaktrace agent`.
#
#   deploy/build-image.sh [TAG]            (default leaktrace-agent:latest; run as root)
#
# Downloaded .deb files are kept in LEAKTRACE_IMAGE_CACHE (default
# /var/cache/leaktrace/image-debs), so a rebuild downloads nothing.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tag=${1:-leaktrace-agent:latest}
cache=${LEAKTRACE_IMAGE_CACHE:-/var/cache/leaktrace/image-debs}
# The image's python3 must be the version pip installs for: the host's Debian release.
# shellcheck source=/dev/null
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
packages=python3,python3-bpfcc,libbpfcc,linux-headers-amd64

for tool in mmdebstrap docker; do
  command -v "$tool" >/dev/null || { echo "build-image.sh: $tool is missing (scripts/setup.sh --test installs it)" >&2; exit 69; }
done
pip=("$repo/.venv/bin/python" -m pip)
[ -x "$repo/.venv/bin/python" ] || pip=(/usr/bin/python3 -m pip)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$cache"

# shellcheck disable=SC2016 # "$1" is the root directory mmdebstrap passes to its hooks
mmdebstrap --quiet --variant=minbase --include="$packages" \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $cache /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $cache" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb; rm -rf "$1"/var/lib/apt/lists/*' \
  "$suite" "$work/rootfs"

"${pip[@]}" install --quiet --disable-pip-version-check --no-cache-dir \
  --target "$work/rootfs/opt/leaktrace" "$repo"

tar -C "$work/rootfs" -cf - . | docker import \
  --change 'ENV PYTHONPATH=/opt/leaktrace' \
  --change 'ENTRYPOINT ["python3", "-m", "leaktrace", "agent"]' \
  --change 'CMD ["--listen", ":9464", "--out", "/var/lib/leaktrace/agent"]' \
  --change 'LABEL org.opencontainers.image.title=leaktrace-agent' \
  - "$tag" >/dev/null
echo "build-image.sh: built $tag" >&2
