#!/usr/bin/env bash
# The test command: sets up the environment on first use, then runs the whole suite on the CPU.
#
#   scripts/test.sh                 # everything (CI runs this)
#   scripts/test.sh --fast          # the inner loop: skips tests marked slow (those that start processes)
#   scripts/test.sh -k config -x    # extra arguments go to pytest
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
args=()
for arg in "$@"; do
    if [[ "$arg" == "--fast" ]]; then
        args+=(-m "not slow")
    else
        args+=("$arg")
    fi
done
exec "${VENV:-$root/.venv}/bin/python" -m pytest ${args[@]+"${args[@]}"}
