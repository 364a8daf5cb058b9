# shellcheck shell=bash
# Steps shared by scripts/demo.sh (any Linux host, CI) and vagrant/provision.sh
# (the VM): building the demo app, building its images, talking to Docker.
# Source it; it defines functions and DEMO_* names and runs nothing.
#
# Two ways to get the mem-leak / mem-leak-fix images:
#   demo_build_images       docker build of demo/Dockerfile (needs a registry)
#   demo_import_image(s)    docker import of a rootfs holding the host-built binary
#                           and the libraries ldd lists (no registry needed: CI,
#                           and the VM when no registry answers)
# Both put the binary at /app, as in the original report of this bug, so the
# host has no file at the path the container's process maps.

DEMO_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEMO_APPS=(mem-leak mem-leak-fix)
# Images and containers the demo makes carry this label, so it only ever
# touches its own.
DEMO_LABEL=org.leaktrace.demo
DEMO_DOCKERD_PID=""
DEMO_DOCKERD_ERROR=""
# Per image; pulling the base images is most of it.
DEMO_BUILD_TIMEOUT=20m

demo_log() { printf 'demo: %s\n' "$*" >&2; }

# demo_build_app OUT_DIR: compile mem-leak and mem-leak-fix into OUT_DIR.
demo_build_app() {
  make -s -C "$DEMO_REPO/demo/app" OUT="$1" >&2
}

# demo_build_images: mem-leak:latest and mem-leak-fix:latest from demo/Dockerfile.
demo_build_images() {
  local app
  for app in "${DEMO_APPS[@]}"; do
    timeout "$DEMO_BUILD_TIMEOUT" docker build -q -f "$DEMO_REPO/demo/Dockerfile" \
      --target "$app" --label "$DEMO_LABEL=dockerfile" -t "$app:latest" "$DEMO_REPO/demo" \
      >/dev/null || return
    demo_log "built image $app:latest from demo/Dockerfile"
  done
}

# demo_import_images WORK_DIR: mem-leak:latest and mem-leak-fix:latest from
# the apps built here (demo_import_image): no registry needed.
demo_import_images() {
  local app
  demo_build_app "$1/bin"
  for app in "${DEMO_APPS[@]}"; do
    demo_import_image "$1/bin/$app" "$app:latest" "$1"
    demo_log "imported image $app:latest (the app built here)"
  done
}

# demo_image_is_ours TAG: true if TAG exists and the demo built it.
demo_image_is_ours() {
  [ -n "$(docker image inspect -f "{{index .Config.Labels \"$DEMO_LABEL\"}}" "$1" 2>/dev/null)" ]
}

# demo_import_image BINARY TAG WORK_DIR: an image holding BINARY at /app and
# the shared libraries `ldd` lists at their own paths.
demo_import_image() {
  local binary=$1 tag=$2 rootfs="$3/rootfs-${2//[^A-Za-z0-9]/-}" lib
  mkdir -p "$rootfs/tmp"
  cp "$binary" "$rootfs/app"
  for lib in $(ldd "$binary" | grep -o '/[^ ]*'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  tar -C "$rootfs" -cf "$rootfs.tar" .
  docker import --change 'ENTRYPOINT ["/app"]' --change 'CMD ["10"]' \
    --change "LABEL $DEMO_LABEL=import" "$rootfs.tar" "$tag" >/dev/null
  rm -rf "$rootfs" "$rootfs.tar"
}

# demo_alive PID: PID runs (a child that exited but was not reaped does not).
demo_alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $state != Z* ]]
}

# demo_stop PID: SIGTERM, then SIGKILL after 30 s; reaps it when it is our child.
demo_stop() {
  local waited=0
  kill "$1" 2>/dev/null || return 0
  while demo_alive "$1" && [ "$waited" -lt 60 ]; do
    sleep 0.5
    waited=$((waited + 1))
  done
  kill -9 "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

demo_docker_answers() {
  docker info >/dev/null 2>&1
}

# demo_dockerd_args: sets DEMO_DOCKERD_ARGS, flags for a daemon that runs
# without a bridge or iptables on any storage. Under DOCKER_HOST=unix://PATH
# (other than the default socket) the daemon serves PATH and keeps its state
# beside it, so it never meets the files of a daemon at the default socket.
# False for a DOCKER_HOST that is not a local socket.
demo_dockerd_args() {
  DEMO_DOCKERD_ARGS=(--iptables=false --bridge=none --storage-driver=vfs)
  local socket=${DOCKER_HOST-}
  case "$socket" in
    "" | unix:///var/run/docker.sock | unix:///run/docker.sock) return 0 ;;
    unix://*) socket=${socket#unix://} ;;
    *) return 1 ;;
  esac
  local dir
  dir=$(dirname "$socket")
  DEMO_DOCKERD_ARGS+=(--host "$DOCKER_HOST" --data-root "$dir/data-root"
    --exec-root "$dir/exec-root" --pidfile "$dir/dockerd.pid")
}

# demo_start_dockerd LOG: start a daemon and wait until it answers. Sets
# DEMO_DOCKERD_PID, which demo_stop_dockerd uses, or on failure returns 1 with
# DEMO_DOCKERD_ERROR saying why in a few words. The daemon runs in a session
# of its own, so that a Ctrl-C meant for the demo leaves it up for the clean-up.
demo_start_dockerd() {
  local waited=0
  if ! demo_dockerd_args; then
    DEMO_DOCKERD_ERROR="DOCKER_HOST=$DOCKER_HOST is not a local socket"
    return 1
  fi
  setsid dockerd "${DEMO_DOCKERD_ARGS[@]}" >"$1" 2>&1 </dev/null &
  DEMO_DOCKERD_PID=$!
  until demo_docker_answers; do
    if ! demo_alive "$DEMO_DOCKERD_PID" || [ "$waited" -ge 60 ]; then
      demo_stop_dockerd
      # shellcheck disable=SC2034 # scripts/demo.sh reads it
      DEMO_DOCKERD_ERROR="dockerd did not come up: $(grep -v '^$' "$1" | tail -n 1 | cut -c1-200)"
      return 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
}

demo_stop_dockerd() {
  [ -n "$DEMO_DOCKERD_PID" ] || return 0
  demo_stop "$DEMO_DOCKERD_PID"
  DEMO_DOCKERD_PID=""
# Per image; pulling the base images is most of it.
DEMO_BUILD_TIMEOUT=20m
}

# demo_container_pid NAME: the host PID of a running container's process.
demo_container_pid() {
  docker inspect -f '{{.State.Pid}}' "$1"
}
