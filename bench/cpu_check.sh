#!/usr/bin/env bash
# The CPU check: the figures of BENCHMARKS.md's CPU sections, in one go, on the development
# machine (2 cores, no GPU; DALI in CPU-only mode). Run it on a quiet machine: the ratios are
# from one run, single figures move by up to ~10% between runs.
#
#   bash bench/cpu_check.sh [OUT_DIR]     # default bench-results/cpu-check; then: bench report OUT_DIR
#
# Data as in bench/device_check.sh: the CIFAR-10 JPEG tree extracted from $CIFAR_JPEG (default
# ../shared/data/cifar10-jpeg.tar.gz, which a clone lacks: scripts/make_cifar_jpeg.py writes one)
# into $DATA (default /tmp/data) and the in-memory archive written from it by
# scripts/make_cifar_archive.py. Every step runs even if one fails.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-bench-results/cpu-check}"
data="${DATA:-/tmp/data}"
jpeg=(data.source=imagefolder "data.root=$data/cifar10" data.cache=off)  # decoded every step
cached=(data.source=imagefolder "data.root=$data/cifar10")                # decoded once (data.cache=auto)
memory=(data.source=cifar10 "data.root=$data/cifar-py" data.verify_checksums=false)  # re-made: not the official bytes
mkdir -p "$out"
source bench/common.sh
bench() {  # bench NAME KIND ARGS...: one pipeline.bench run with its results under $out/NAME
    local name="$1" kind="$2"; shift 2
    step "$name" "$python" -m pipeline.bench "$kind" "$@" wandb.mode=disabled --out="$out/$name"
}
prepare_data "$data" "${CIFAR_JPEG:-../shared/data/cifar10-jpeg.tar.gz}" || exit $?

git rev-parse --short=12 HEAD > "$out/git-revision.txt"
# The input pipeline alone: DALI CPU vs torchvision (2 threads / 2 workers), per-stage table.
bench loader-jpeg-b64 loader "${jpeg[@]}" --stages
bench loader-jpeg-b256 loader "${jpeg[@]}" train.global_batch_size=256 --stages
bench loader-cached-b64 loader "${cached[@]}"
bench loader-sample-b64 loader data.source=sample data.cache=off
bench loader-memory-b64 loader "${memory[@]}" --stages
# End to end at the reference settings (122 px, batch 64): DALI-fed vs torchvision-fed vs synthetic.
bench train-jpeg-b64 train configs/squeezenet_cifar10.yaml "${jpeg[@]}" --steps 10 --repeats 5 --warmup 3
# The host-overhead ledger of the fast recipe's step (EMA on), batch 32, the shipped sample.
bench overhead-fast-b32 overhead configs/squeezenet_cifar10_fast.yaml data.source=sample train.global_batch_size=32 \
    data.num_threads=2 --steps 20 --warmup 5
# Where the bottleneck is on this machine, for the quickstart.
bench doctor-quickstart doctor configs/quickstart.yaml
echo
"$python" -m pipeline.bench report "$out"
exit $status
