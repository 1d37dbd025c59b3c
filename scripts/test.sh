#!/usr/bin/env bash
# The test command: sets up the environment on first use, then runs the whole suite on the CPU.
#
#   scripts/test.sh                 # everything (CI runs this): tests/unit, tests/e2e, tests/fuzz
#   scripts/test.sh tests/unit      # the inner loop: in one process, no training run (about a minute)
#   scripts/test.sh --fast          # skips tests marked slow (those that start processes)
#   scripts/test.sh -k config -x    # extra arguments go to pytest
#   scripts/test.sh -n 0 -s         # in one process (for -s, pdb); TEST_WORKERS=auto on a bigger machine
#
# Tests run in TEST_WORKERS (default 2) pytest-xdist workers, one test module per worker at a time
# (--dist loadscope: a module's shared runs are made once). Most tests start training processes
# that wait on each other, on W&B or on files: two workers on two cores finish the suite sooner
# than one (BENCHMARKS.md, "Figures behind code comments").
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$root/scripts/setup_env.sh"
cd "$root"
args=(-n "${TEST_WORKERS:-2}" --dist loadscope)
for arg in "$@"; do
    if [[ "$arg" == "--fast" ]]; then
        args+=(-m "not slow")
    else
        args+=("$arg")
    fi
done
exec "${VENV:-$root/.venv}/bin/python" -m pytest ${args[@]+"${args[@]}"}
