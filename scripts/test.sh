#!/usr/bin/env bash
# Set the machine up for the tests and run them: the README's test command,
# and what CI runs (through .ci/run) as root with CI=true.
#
#   scripts/test.sh [PYTEST ARGS...]     e.g. scripts/test.sh tests/unit -k maps
#
# As root it first runs scripts/setup.sh --test (packages, kernel headers,
# tracefs, .venv). Tests start what else they need (a Docker daemon) and stop
# it afterwards. Without root only the unprivileged tests can run.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if [ "$(id -u)" -eq 0 ]; then
  bash scripts/setup.sh --test
elif [ -x .venv/bin/python ]; then
  echo "test.sh: not root: skipping system set-up; privileged tests will skip" >&2
else
  echo "test.sh: no .venv yet; run as root once (sudo $0) to set up the machine" >&2
  exit 1
fi

status=0
.venv/bin/python -m pytest -p no:cacheprovider -q -rs "$@" </dev/null || status=$?
if [ "$status" -eq 5 ]; then
  # pytest's "no tests collected": a suite that tests nothing has not passed.
  echo "test.sh: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$status"
