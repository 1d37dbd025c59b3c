#!/usr/bin/env bash
# Launch training under torchrun (sets up the environment on first use).
#
#   ./launch.sh                                   # configs/quickstart.yaml on this machine
#   ./launch.sh configs/squeezenet_cifar10.yaml optim.lr=0.2 train.epochs=100
#   NPROC=2 ./launch.sh                           # two processes (CPU: gloo; GPU: one per GPU)
#   ./launch.sh --new configs/quickstart.yaml     # a new run even if an unfinished one of this setup exists
#
# The same command continues: without RUN_NAME or logging.run_name, a run is named
# <config>-<date>-<time>, and the same command later continues the newest such run of the same config
# and overrides if it did not finish (preempted, crashed, killed), from its latest checkpoint. After
# a run finished, the same command trains nothing and says so; --new starts a new run. When a run
# stops early, the last line printed is the command that continues it (with NPROC and the other
# variables below that were set); a worker that crashed or was killed is named first.
#
# Environment:
#   NPROC         processes on this node (default: the number of visible GPUs, 1 without a GPU)
#   MAX_RESTARTS  torchrun --max-restarts: workers that die are restarted and resume from the
#                 run's latest checkpoint (default 0)
#   RUN_NAME      run directory name under runs/ (default: as above); the same RUN_NAME continues that run
#
# Several nodes (torchrun's c10d rendezvous; run this script once on every node):
#   NNODES        number of nodes (default 1: a standalone run on this machine)
#   NODE_RANK     0 on the node at MASTER_ADDR, which hosts the rendezvous; 1..NNODES-1 elsewhere
#                 (the global ranks are handed out by the rendezvous, not by NODE_RANK)
#   MASTER_ADDR   address of node 0 that every node can reach; MASTER_PORT its port (default 29500)
#   RUN_NAME      required, the same on every node (or logging.run_name=...; under SLURM the
#                 default is <config>-$SLURM_JOB_ID); it also names the rendezvous (RDZV_ID overrides)
#   LOCAL_ADDR    this node's address as the other nodes reach it (torchrun --local-addr); the
#                 workers' process-group store lives on one agent and is published under this
#                 address (default: the fully qualified host name, which may resolve to a loopback
#                 address elsewhere)
#   NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME   the network interface (e.g. eth0, ib0) NCCL and gloo
#                 bind to; set both when the host name resolves to a loopback or wrong interface.
#                 GPU runs need gloo too: host-side messages (metric sums, stop requests,
#                 checkpoint gathering) travel on a separate gloo group.
#   The run directory (logging.runs_dir, default runs/) must be one shared directory, visible at
#   the same path on every node: rank 0 writes the checkpoints, every rank reads them on resume.
#
# Exit status: 0 finished (or nothing left to train), 2 bad input, 4 non-finite loss, 74 a file could
# not be written (a full disk or a quota: free space, then run the same command again to continue),
# 75 stopped by SIGTERM/SIGINT after writing a checkpoint (run the same command again to continue),
# 1 or the workers' status otherwise. torchrun runs inside pipeline/tools/launch.py, which reports the ending.
set -euo pipefail
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
    echo "Arguments: [--new] [CONFIG.yaml] [key=value ...] (docs/configuration.md lists every key)."
    exit 0
fi
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$root"
scripts/setup_env.sh
python="${VENV:-$root/.venv}/bin/python"

said=("$@")  # as typed: the command that continues the run repeats it
new=() args=()
for word in "$@"; do
    if [[ "$word" == "--new" ]]; then new=(--new); else args+=("$word"); fi
done
set -- "${args[@]}"
config="configs/quickstart.yaml"
if [[ $# -gt 0 && "$1" != *=* ]]; then
    config="$1"
    shift
fi
[[ -f "$config" ]] || { echo "launch.sh: config file $config not found (try ./launch.sh --help)" >&2; exit 2; }

# Check the config and name the run once, here: restarted workers (and every node) must agree on the
# run directory. A typo gets its one-line message rather than torchrun's failure report; a run that
# already finished is not trained again.
name="$("$python" -m pipeline.tools.launch name "${new[@]}" "$config" "$@")" || exit $?
[[ -n "$name" ]] || exit 0  # nothing to train: it said why
if ! printf '%s\n' "$@" | grep -q '^logging\.run_name='; then
    set -- "$@" "logging.run_name=$name"
fi

nnodes="${NNODES:-1}"
nproc="${NPROC:-$("$python" -c 'import torch; print(torch.cuda.device_count() or 1)')}"

if [[ "$nnodes" -gt 1 ]]; then
    # Node 0 hosts the rendezvous store explicitly: torchrun's own guess compares MASTER_ADDR with
    # this machine's host name and addresses, and misses aliases and secondary interfaces.
    # (--node-rank is not passed: the c10d rendezvous ignores it.)
    node_rank="${NODE_RANK:?set NODE_RANK for multi-node runs}"
    rendezvous=(--nnodes="$nnodes" --rdzv-backend=c10d
                --rdzv-endpoint="${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}"
                --rdzv-id="${RDZV_ID:-$name}"
                --rdzv-conf="is_host=$([[ "$node_rank" == 0 ]] && echo true || echo false)")
    [[ -z "${LOCAL_ADDR:-}" ]] || rendezvous+=(--local-addr="$LOCAL_ADDR")
else
    rendezvous=(--standalone)
fi

exec "$python" -m pipeline.tools.launch torchrun "${#said[@]}" "${said[@]}" "${rendezvous[@]}" \
    --nproc-per-node="$nproc" --max-restarts="${MAX_RESTARTS:-0}" train_dist.py "$config" "$@"
