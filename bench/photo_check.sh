#!/usr/bin/env bash
# The photograph case of the CPU check: random-resized crops at 224 px decoded from real
# photographs (../shared/data/flowers-photos.tar: TF-flowers, median 320x240), DALI CPU against
# torchvision with as many DataLoader workers as DALI threads, on the development machine (2 cores,
# no GPU). Run it on a quiet machine: single figures move by 10% and more when other work runs.
#
#   bash bench/photo_check.sh [OUT_DIR]     # default bench-results/photo-check; then: bench report OUT_DIR
#
# Data: the photographs extracted into $DATA (default /tmp/data), eight copies of each training
# photograph (3,200) and the same packed into tar shards (bench/common.sh: prepare_photos).
# Steps: the loader alone from image files and from shards, with the per-stage table (read, decode,
# crop + resize, full); the window decoded alone against the whole image; the reference
# augmentation (122 px) for comparison with the figures of the CIFAR check; DALI's decoding
# choices side by side (python -m pipeline.bench.decoders); end to end, SqueezeNet 1.0 with bypass
# at 224 px. Every step runs even if one fails.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-bench-results/photo-check}"
data="${DATA:-/tmp/data}"
threads="${THREADS:-2}"
mkdir -p "$out"
source bench/common.sh
bench() {  # bench NAME KIND ARGS...: one pipeline.bench run with its results under $out/NAME
    local name="$1" kind="$2"; shift 2
    step "$name" "$python" -m pipeline.bench "$kind" "$@" wandb.mode=disabled "data.num_threads=$threads" \
        --out="$out/$name"
}
prepare_photos "$data" "${FLOWERS:-../shared/data/flowers-photos.tar}" || exit $?
rrc=(data.train.kind=random_resized_crop data.train.crop=224 data.eval.size=256 data.eval.crop=224)
folder=(data.source=imagefolder "data.root=$data/flowers-x8")
shards=(data.source=webdataset "data.root=$data/flowers-x8-shards")
timing=(--steps 20 --warmup 5 --repeats 5)

git rev-parse --short=12 HEAD > "$out/git-revision.txt"
bench loader-photos-rrc224-folder loader "${folder[@]}" "${rrc[@]}" --backends=dali-cpu,torchvision --stages "${timing[@]}"
bench loader-photos-rrc224-shards loader "${shards[@]}" "${rrc[@]}" --backends=dali-cpu,torchvision --stages "${timing[@]}"
bench loader-photos-rrc224-fulldecode loader "${folder[@]}" "${rrc[@]}" data.train.roi_decode=false \
    --backends=dali-cpu --stages "${timing[@]}"
bench loader-photos-reference122 loader "${folder[@]}" --backends=dali-cpu,torchvision --stages "${timing[@]}"
step decoders-photos "$python" -m pipeline.bench.decoders "$data/flowers/train" --threads "$threads" --batch 64
# End to end at 224 px (fp32: bf16 autocast is slow on CPUs), DALI-fed vs torchvision-fed vs synthetic.
bench train-photos-rrc224 train configs/squeezenet_imagenet_modern.yaml "${folder[@]}" "${rrc[@]}" \
    model.num_classes=auto train.precision=fp32 train.global_batch_size=32 --steps 5 --repeats 3 --warmup 2
echo
"$python" -m pipeline.bench report "$out"
exit $status
