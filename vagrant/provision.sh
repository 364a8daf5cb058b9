#!/usr/bin/env bash
# Provision the leaktrace demo VM (Ubuntu 24.04, or Debian 12 from
# build-box.sh), run by `vagrant up` as root.
#
# VM-only steps live here: the running kernel's own headers, a Docker daemon
# that starts at boot, the vagrant user in the docker group. Everything else
# is shared with hosts and CI: scripts/setup.sh (bcc, .venv with leaktrace)
# and demo/lib.sh (images mem-leak and mem-leak-fix, which scripts/demo.sh
# then uses instead of importing its own): built from demo/Dockerfile when a
# registry answers, else imported from the app built here, as on CI.
# Safe to run again (`vagrant provision`).
set -euo pipefail

repo=${LEAKTRACE_REPO:-/vagrant}
log() { printf 'provision: %s\n' "$*" >&2; }

if [ "$(id -u)" -ne 0 ]; then
  log "run as root (vagrant runs it so)"
  exit 1
fi
if [ ! -x "$repo/scripts/setup.sh" ]; then
  log "no leaktrace checkout at $repo; is the synced folder mounted? (vagrant rsync)"
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
log "installing kernel headers for $(uname -r) and Docker"
# A cloud image may run apt at first boot (unattended-upgrades): wait for it.
apt_opts=(-o DPkg::Lock::Timeout=1200 -o Acquire::Retries=3)
apt-get "${apt_opts[@]}" update -qq
# apparmor: Docker refuses to start containers on a kernel with AppArmor
# enabled (Debian's, Ubuntu's) unless apparmor_parser can load its profile.
apt-get "${apt_opts[@]}" install -y -qq --no-install-recommends \
  "linux-headers-$(uname -r)" docker.io apparmor make >/dev/null
systemctl enable --now docker >/dev/null
usermod -aG docker vagrant 2>/dev/null || true

log "setting up bcc and leaktrace (scripts/setup.sh)"
bash "$repo/scripts/setup.sh"

# shellcheck source=SCRIPTDIR/../demo/lib.sh
source "$repo/demo/lib.sh"
log "building the demo images from demo/Dockerfile"
if ! demo_build_images; then
  log "demo/Dockerfile did not build (no registry answers?): importing the images instead"
  work=$(mktemp -d)
  demo_import_images "$work"
  rm -rf "$work"
fi

log "done. Reproduce the leak: vagrant ssh -c 'sudo /vagrant/scripts/demo.sh'"
