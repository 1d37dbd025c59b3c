#!/usr/bin/env bash
# Launch training under torchrun (sets up the environment on first use).
#
#   ./launch.sh                                   # configs/quickstart.yaml on this machine
#   ./launch.sh configs/squeezenet_cifar10.yaml optim.lr=0.2 train.epochs=100
#   NPROC=2 ./launch.sh                           # two processes (CPU: gloo; GPU: one per GPU)
#
# Environment:
#   NPROC         processes on this node (default: the number of visible GPUs, 1 without a GPU)
#   NNODES        nodes (default 1); with NODE_RANK, MASTER_ADDR, MASTER_PORT for torchrun's
#                 c10d rendezvous. Every node must be given the same logging.run_name (or RUN_NAME).
#   MAX_RESTARTS  torchrun --max-restarts: workers that die are restarted and resume from the
#                 run's latest checkpoint (default 0)
#   RUN_NAME      run directory name under runs/ (default: <config>-<date>-<time>, fixed here so
#                 that restarted workers find the same run)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
scripts/setup_env.sh
python="${VENV:-$root/.venv}/bin/python"

config="configs/quickstart.yaml"
if [[ $# -gt 0 && "$1" != *=* ]]; then
    config="$1"
    shift
fi
[[ -f "$config" ]] || { echo "launch.sh: config file $config not found" >&2; exit 2; }

# Check the config here, so a typo gets its one-line message rather than torchrun's failure report.
"$python" -m pipeline.config "$config" "$@" > /dev/null || exit 2

nnodes="${NNODES:-1}"
nproc="${NPROC:-$("$python" -c 'import torch; print(torch.cuda.device_count() or 1)')}"

# Name the run once, here: restarted workers (and every node) must agree on the run directory.
if ! printf '%s\n' "$@" | grep -q '^logging\.run_name='; then
    if [[ -n "${RUN_NAME:-}" ]]; then
        name="$RUN_NAME"
    elif [[ "$nnodes" -gt 1 ]]; then
        name="$(basename "$config" .yaml)-${SLURM_JOB_ID:?multi-node runs need RUN_NAME or logging.run_name=... (the same on every node)}"
    else
        name="$(basename "$config" .yaml)-$(date +%Y%m%d-%H%M%S)"
    fi
    set -- "$@" "logging.run_name=$name"
fi

if [[ "$nnodes" -gt 1 ]]; then
    rendezvous=(--nnodes="$nnodes" --node-rank="${NODE_RANK:?set NODE_RANK for multi-node runs}"
                --rdzv-backend=c10d --rdzv-endpoint="${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}"
                --rdzv-id="${RDZV_ID:-${SLURM_JOB_ID:-squeezenet}}")
else
    rendezvous=(--standalone)
fi

exec "$python" -m torch.distributed.run "${rendezvous[@]}" --nproc-per-node="$nproc" \
    --max-restarts="${MAX_RESTARTS:-0}" train_dist.py "$config" "$@"
