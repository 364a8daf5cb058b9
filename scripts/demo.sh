#!/usr/bin/env bash
# The README's first command: watch leaktrace find a real leak.
#
# Sets the machine up (scripts/setup.sh), builds the bundled fibonacci app
# (demo/app), starts it in a container when Docker is available (else as a
# plain process), attaches leaktrace, and shows the stack fibonacci <- child
# growing by 8 KiB per call; then does the same with the fixed build, which
# shows no leak. demo/check_report.py judges each run against the calls the
# app itself logged. Whatever the demo started (app, containers, images, a
# Docker daemon) is stopped and removed on exit, Ctrl-C or failure.
#
#   sudo scripts/demo.sh [OPTIONS]
#     --leaky | --fixed   run only the leaky app / only the fixed app (default: both)
#     --no-docker         run the app as a plain process even if Docker is there
#     --docker            require Docker (fail instead of falling back)
#     --seconds N         trace each app for N seconds (default 20, at least 10)
#     --rate N            fibonacci() calls per second (default 10: 80 KiB/s leaked)
#     --out DIR           keep reports and logs in DIR (default: a new /tmp/leaktrace-demo.*)
#     --no-setup          skip scripts/setup.sh (already set up)
#     --check             print one JSON verdict on stdout instead of the tables
#
# Exit status: 0 when the leak was found as expected (and none in the fixed
# app), 1 when not, 2 on bad options or a set-up failure.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../demo/lib.sh
source "$(dirname "$0")/../demo/lib.sh"

INTERVAL=5
OLDER_THAN_MS=500

apps=("${DEMO_APPS[@]}")
seconds=20
rate=10
docker_wanted=auto
out=""
run_setup=1
check=0

# What cleanup() must undo; each is cleared once undone.
scratch=""
app_pid=""
tracer_pid=""
progress_pid=""
current_app=""
container=""
made_images=()

# usage [STATUS]: the option list from this header; exit 2 unless told.
usage() {
  sed -n '/^#   sudo/,/^# Exit/p' "$0" | sed 's/^# \{0,1\}//' | head -n -1 >&2
  exit "${1:-2}"
}

number() {
  [[ $2 =~ ^[0-9]+$ ]] && [ "$2" -ge "$3" ] && return 0
  demo_log "$1 takes a whole number >= $3, not '$2'"
  exit 2
}

parse_args() {
  while [ $# -gt 0 ]; do
    case "$1" in
      --leaky) apps=(mem-leak) ;;
      --fixed) apps=(mem-leak-fix) ;;
      --no-docker) docker_wanted=no ;;
      --docker) docker_wanted=yes ;;
      --seconds) number "$1" "${2-}" 10; seconds=$2; shift ;;
      --rate) number "$1" "${2-}" 1; rate=$2; shift ;;
      --out) [ -n "${2-}" ] || usage; out=$2; shift ;;
      --no-setup) run_setup=0 ;;
      --check) check=1 ;;
      -h | --help) usage 0 ;;
      *) demo_log "unknown option $1"; usage ;;
    esac
    shift
  done
}

cleanup() {
  local status=$?
  set +e
  # leaktrace stops on SIGTERM as on Ctrl-C: it writes its final report first.
  [ -n "$tracer_pid" ] && demo_stop "$tracer_pid"
  [ -n "$progress_pid" ] && demo_stop "$progress_pid"
  [ -n "$app_pid" ] && [ -z "$container" ] && demo_stop "$app_pid"
  if [ -n "$container" ]; then
    docker logs "$container" >"$out/$current_app.app.log" 2>&1
    docker rm -f "$container" >/dev/null 2>&1
  fi
  local image
  for image in "${made_images[@]}"; do
    docker rmi -f "$image" >/dev/null 2>&1
  done
  demo_stop_dockerd
  [ -n "$scratch" ] && rm -rf "$scratch"
  exit "$status"
}

# use_docker: true when the app should run in a container (starting a daemon
# for the demo if none runs and dockerd is installed).
use_docker() {
  [ "$docker_wanted" = no ] && return 1
  local why="docker is not installed"
  if command -v docker >/dev/null; then
    demo_docker_answers && return 0
    why="no Docker daemon answers"
    if command -v dockerd >/dev/null; then
      demo_log "starting a Docker daemon for the demo (stopped at the end)"
      demo_start_dockerd "$out/dockerd.log" && return 0
      why="dockerd did not start (log: $out/dockerd.log)"
    fi
  fi
  if [ "$docker_wanted" = yes ]; then
    demo_log "$why, and --docker was given"
    exit 2
  fi
  demo_log "$why: running the app as a plain process"
  return 1
}

# pick_image APP: sets image to the provisioned one (vagrant/provision.sh),
# else to a fresh import that cleanup() removes.
pick_image() {
  image="$1:latest"
  demo_image_is_ours "$image" && return
  image="leaktrace-demo/$1:$$"
  made_images+=("$image")
  demo_import_image "$scratch/bin/$1" "$image" "$scratch"
}

app_log_text() {
  if [ -n "$container" ]; then docker logs "$container" 2>&1; else cat "$out/$1.app.log"; fi
}

# start_app APP IN_DOCKER: sets app_pid (and container); waits for the first call.
start_app() {
  local image waited=0
  if [ "$2" -eq 1 ]; then
    pick_image "$1"
    container="leaktrace-demo-$$-$1"
    docker run -d --name "$container" --network none --label "$DEMO_LABEL=run" \
      "$image" "$rate" >/dev/null
    app_pid=$(demo_container_pid "$container")
    demo_log "started $1 in container $container (image $image), host PID $app_pid"
  else
    "$scratch/bin/$1" "$rate" >"$out/$1.app.log" 2>&1 &
    app_pid=$!
    demo_log "started $1 as PID $app_pid"
  fi
  until app_log_text "$1" | grep -q ': call 1 '; do
    if [ "$waited" -ge 30 ] || ! demo_alive "$app_pid"; then
      demo_log "$1 did not start; its output:"
      app_log_text "$1" >&2
      exit 1
    fi
    sleep 0.5
    waited=$((waited + 1))
  done
}

# show_progress APP: the app's latest line every INTERVAL seconds, on stderr.
show_progress() {
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    while :; do
      sleep "$INTERVAL" &
      nap=$!
      wait "$nap"
      printf '  %s\n' "$(app_log_text "$1" | tail -n 1)" >&2
    done
  ) &
  progress_pid=$!
}

stop_app() {
  demo_stop "$progress_pid"
  progress_pid=""
  if [ -n "$container" ]; then
    docker logs "$container" >"$out/$1.app.log" 2>&1
    docker rm -f "$container" >/dev/null
    container=""
  else
    demo_stop "$app_pid"
  fi
  app_pid=""
}

# trace_app APP IN_DOCKER: start it, trace it for $seconds, stop it.
trace_app() {
  current_app=$1
  start_app "$1" "$2"
  demo_log "tracing $1 for $seconds s: sudo leaktrace attach -p $app_pid $INTERVAL" \
    "--duration $seconds --older-than $OLDER_THAN_MS --format json"
  show_progress "$1"
  # In the background so that a Ctrl-C interrupts `wait` and runs the INT
  # trap; run in the foreground, leaktrace would handle the Ctrl-C, exit 0,
  # and bash would go on with the next step as if nothing happened.
  "$DEMO_REPO/.venv/bin/leaktrace" attach -p "$app_pid" "$INTERVAL" --duration "$seconds" \
    --older-than "$OLDER_THAN_MS" --format json -o "$out/$1.reports.jsonl" &
  tracer_pid=$!
  wait "$tracer_pid"
  tracer_pid=""
  stop_app "$1"
}

main() {
  parse_args "$@"
  if [ "$(id -u)" -ne 0 ]; then
    demo_log "run as root (sudo $0): leaktrace loads eBPF programs"
    exit 2
  fi
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  if [ "$run_setup" -eq 1 ]; then
    bash "$DEMO_REPO/scripts/setup.sh" >&2 || { demo_log "set-up failed"; exit 2; }
  fi
  [ -n "$out" ] || out=$(mktemp -d /tmp/leaktrace-demo.XXXXXX)
  mkdir -p "$out"
  rm -f "$out"/*.app.log "$out"/*.reports.jsonl "$out/summary.json"
  scratch=$(mktemp -d /tmp/leaktrace-demo-build.XXXXXX)
  demo_build_app "$scratch/bin"
  local in_docker=0 app status=0
  use_docker && in_docker=1
  for app in "${apps[@]}"; do
    trace_app "$app" "$in_docker"
  done
  if [ "$check" -eq 1 ]; then
    "$DEMO_REPO/.venv/bin/python" "$DEMO_REPO/demo/check_report.py" --json "$out" || status=$?
  else
    "$DEMO_REPO/.venv/bin/python" "$DEMO_REPO/demo/check_report.py" "$out" || status=$?
  fi
  demo_log "reports and logs kept in $out (check them again: .venv/bin/python demo/check_report.py $out)"
  [ "$status" -le 1 ] || status=2
  return "$status"
}

main "$@"
