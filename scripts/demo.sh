#!/usr/bin/env bash
# The README's first command: a service in a container leaks; see what bcc's
# memleak shows of it from the host, then what leaktrace shows.
#
# Sets the machine up (scripts/setup.sh), builds the bundled fibonacci app
# (demo/app, -O2 without frame pointers, as services are built) and starts it
# in a Docker container, starting a Docker daemon for the demo when none
# answers (a plain process when Docker cannot run). Then, on the leaky app:
#   1. bcc's memleak (when installed) for N seconds: its top stack;
#   2. leaktrace attach for N seconds: the stack fibonacci <- child growing by
#      8 KiB per call, judged against the calls the app itself logged
#      (demo/check_report.py), and one line on what differs from memleak;
#   3. the same leak through leaktrace's other outputs: the verdict and growth,
#      a flame graph file, and `leaktrace triage` (run during step 2).
# Then the fixed build, which shows no leak. Whatever the demo started (app,
# tracers, containers, images, a Docker daemon) is stopped and removed on
# exit, Ctrl-C or failure.
#
#   sudo scripts/demo.sh [OPTIONS]
#     --leaky | --fixed   run only the leaky app / only the fixed app (default: both)
#     --no-docker         run the app as a plain process even if Docker is there
#     --docker            require Docker (fail instead of falling back)
#     --seconds N         trace each app for N seconds (default 20, at least 10)
#     --rate N            fibonacci() calls per second (default 10: 80 KiB/s leaked)
#     --out DIR           keep reports and logs in DIR (default: a new /tmp/leaktrace-demo.*)
#     --no-setup          skip scripts/setup.sh (already set up)
#     --check             print one JSON verdict on stdout; the rest goes to stderr
#   Environment:
#     DOCKER_HOST         the daemon to use; one the demo starts listens there
#                         and keeps its state beside the socket
#     LEAKTRACE_DEMO_MEMLEAK  path of bcc's memleak (default: memleak-bpfcc
#                         on PATH, else /usr/share/bcc/tools/memleak)
#
# Exit status: 0 when the leak was found as expected (and none in the fixed
# app), 1 when not, 2 on bad options or a set-up failure.
set -euo pipefail

# shellcheck source=SCRIPTDIR/../demo/lib.sh
source "$(dirname "$0")/../demo/lib.sh"

INTERVAL=5
OLDER_THAN_MS=500
PYTHON="$DEMO_REPO/.venv/bin/python"
LEAKTRACE="$DEMO_REPO/.venv/bin/leaktrace"

apps=("${DEMO_APPS[@]}")
seconds=20
rate=10
docker_wanted=auto
out=""
run_setup=1
check=0
memleak=""
status=0

# What cleanup() must undo; each is cleared once undone.
scratch=""
app_pid=""
tracer_pid=""
memleak_pid=""
triage_pid=""
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
  local code=$?
  set +e
  # leaktrace stops on SIGTERM as on Ctrl-C: it writes its final report first.
  local pid
  for pid in "$tracer_pid" "$memleak_pid" "$triage_pid" "$progress_pid"; do
    [ -n "$pid" ] && demo_stop "$pid"
  done
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
  exit "$code"
}

# use_docker: true when the app should run in a container, starting a daemon
# for the demo when none answers; else one line saying why, and false.
use_docker() {
  [ "$docker_wanted" = no ] && return 1
  local why
  if ! command -v docker >/dev/null; then
    why="docker is not installed (scripts/setup.sh installs docker.io)"
  elif demo_docker_answers; then
    return 0
  elif ! command -v dockerd >/dev/null; then
    why="no Docker daemon answers and dockerd is not installed"
  else
    demo_log "no Docker daemon answers: starting one for the demo (stopped at the end) ..."
    demo_start_dockerd "$out/dockerd.log" && return 0
    why="Docker cannot run here ($DEMO_DOCKERD_ERROR; log: $out/dockerd.log)"
  fi
  if [ "$docker_wanted" = yes ]; then
    demo_log "$why, and --docker was given"
    exit 2
  fi
  demo_log "$why: running the app as a plain process"
  return 1
}

# find_memleak: sets memleak to bcc's memleak, or says in one line that the
# comparison is skipped.
find_memleak() {
  if [ -n "${LEAKTRACE_DEMO_MEMLEAK+set}" ]; then
    memleak=$LEAKTRACE_DEMO_MEMLEAK
  else
    memleak=$(command -v memleak-bpfcc || echo /usr/share/bcc/tools/memleak)
  fi
  [ -x "$memleak" ] && return 0
  demo_log "bcc's memleak is not installed (package bpfcc-tools): skipping the comparison with it"
  memleak=""
}

# pick_image APP: sets image to the provisioned one (vagrant/provision.sh),
# else to a fresh import that cleanup() removes.
pick_image() {
  image="$1:latest"
  demo_image_is_ours "$image" && return
  image="leaktrace-demo/$1:$$"
  demo_log "building image $image: /app and the libraries ldd lists (docker import) ..."
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
  # Not grep -q: it exits at the first match, and a writer still writing
  # (docker logs of a long log) dies of SIGPIPE, failing the pipeline.
  until app_log_text "$1" | grep ': call 1 ' >/dev/null; do
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

stop_progress() {
  demo_stop "$progress_pid"
  progress_pid=""
}

stop_app() {
  if [ -n "$container" ]; then
    docker logs "$container" >"$out/$1.app.log" 2>&1
    docker rm -f "$container" >/dev/null
    container=""
  else
    demo_stop "$app_pid"
  fi
  app_pid=""
}

# run_memleak APP: bcc's memleak on the app for $seconds; shows its top stack.
# Background jobs and `wait` throughout: a Ctrl-C then runs the INT trap.
run_memleak() {
  demo_log "1/2 bcc's memleak for $seconds s: $(basename "$memleak") -p $app_pid" \
    "-o $OLDER_THAN_MS $seconds 1 (it compiles its BPF program first) ..."
  show_progress "$1"
  "$PYTHON" "$DEMO_REPO/demo/memleak_side.py" run "$memleak" "$app_pid" "$seconds" \
    >"$out/$1.memleak.txt" 2>&1 &
  memleak_pid=$!
  wait "$memleak_pid" || demo_log "memleak exited with status $?"
  memleak_pid=""
  stop_progress
  printf "=== %s: bcc's memleak ===\n" "$1" >&3
  "$PYTHON" "$DEMO_REPO/demo/memleak_side.py" show "$out/$1.memleak.txt" >&3
  echo >&3
}

# start_triage APP: once leaktrace has written its first report (its own
# start-up is over, so its memory no longer grows), `leaktrace triage` over
# the rest of the trace, in the background.
start_triage() {
  until [ -s "$out/$1.reports.jsonl" ]; do
    demo_alive "$tracer_pid" || return 0
    sleep 0.2
  done
  local window=$((seconds - INTERVAL))
  demo_log "meanwhile: leaktrace triage --window ${window}s --format json (reads /proc only)"
  "$LEAKTRACE" triage --window "${window}s" --format json >"$out/$1.triage.json" &
  triage_pid=$!
}

# run_leaktrace APP: leaktrace on the app for $seconds (and triage, on the
# leaky one).
run_leaktrace() {
  local step=""
  [ -n "$memleak" ] && [ "$1" = mem-leak ] && step="2/2 "
  demo_log "${step}leaktrace for $seconds s: leaktrace attach -p $app_pid $INTERVAL" \
    "--duration $seconds --older-than $OLDER_THAN_MS --format json (it compiles its probes first) ..."
  show_progress "$1"
  "$LEAKTRACE" attach -p "$app_pid" "$INTERVAL" --duration "$seconds" \
    --older-than "$OLDER_THAN_MS" --format json -o "$out/$1.reports.jsonl" &
  tracer_pid=$!
  [ "$1" = mem-leak ] && start_triage "$1"
  wait "$tracer_pid"
  tracer_pid=""
  if [ -n "$triage_pid" ]; then
    wait "$triage_pid" || demo_log "leaktrace triage exited with status $?"
    triage_pid=""
  fi
  stop_progress
}

# show_views APP: what differs from memleak, then leaktrace's other outputs.
show_views() {
  local reports="$out/$1.reports.jsonl" svg="$out/$1.flamegraph.svg"
  if [ -n "$memleak" ]; then
    "$PYTHON" "$DEMO_REPO/demo/memleak_side.py" differ "$out/$1.memleak.txt" "$reports" >&3
    echo >&3
  fi
  "$LEAKTRACE" report "$reports" --format flamegraph -o "$svg" || true
  printf "=== %s: the same leak in leaktrace's other outputs ===\n" "$1" >&3
  "$PYTHON" "$DEMO_REPO/demo/other_views.py" "$reports" "$svg" "$out/$1.triage.json" >&3
  echo >&3
}

# trace_app APP IN_DOCKER: start it, trace it, stop it, show what was found.
trace_app() {
  current_app=$1
  start_app "$1" "$2"
  [ -n "$memleak" ] && [ "$1" = mem-leak ] && run_memleak "$1"
  run_leaktrace "$1"
  stop_app "$1"
  if [ "$check" -eq 0 ]; then
    local judged=0
    "$PYTHON" "$DEMO_REPO/demo/check_report.py" --app "$1" "$out" || judged=$?
    [ "$judged" -le "$status" ] || status=$judged
  fi
  [ "$1" = mem-leak ] && show_views "$1"
  return 0
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
    demo_log "checking the set-up (scripts/setup.sh) ..."
    bash "$DEMO_REPO/scripts/setup.sh" >&2 || { demo_log "set-up failed"; exit 2; }
  fi
  [ -n "$out" ] || out=$(mktemp -d /tmp/leaktrace-demo.XXXXXX)
  mkdir -p "$out"
  rm -f "$out"/*.app.log "$out"/*.reports.jsonl "$out"/*.memleak.txt "$out"/*.triage.json \
    "$out"/*.flamegraph.svg "$out/summary.json"
  scratch=$(mktemp -d /tmp/leaktrace-demo-build.XXXXXX)
  demo_log "building the demo app (demo/app) ..."
  demo_build_app "$scratch/bin"
  local in_docker=0 app
  use_docker && in_docker=1
  # The story goes to stdout; with --check, stdout is the JSON verdict alone.
  # (Opened after the daemon starts: a daemon holding it would keep it open.)
  if [ "$check" -eq 1 ]; then exec 3>&2; else exec 3>&1; fi
  [[ " ${apps[*]} " == *" mem-leak "* ]] && find_memleak
  for app in "${apps[@]}"; do
    trace_app "$app" "$in_docker"
  done
  if [ "$check" -eq 1 ]; then
    "$PYTHON" "$DEMO_REPO/demo/check_report.py" --json "$out" || status=$?
  fi
  demo_log "reports and logs kept in $out (check them again: .venv/bin/python demo/check_report.py $out)"
  demo_log "done in ${SECONDS} s"
  [ "$status" -le 1 ] || status=2
  return "$status"
}

main "$@"
