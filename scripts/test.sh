#!/usr/bin/env bash
# The test command: sets up the environment on first use, then runs the whole suite on the CPU.
#
#   scripts/test.sh                 # everything (about 6 minutes on 2 CPU cores)
#   scripts/test.sh -k config -x    # extra arguments go to pytest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
exec "${VENV:-$root/.venv}/bin/python" -m pytest "$@"
