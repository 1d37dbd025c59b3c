#!/usr/bin/env bash
# The GPU check: is the GPU fed? DALI on GPU vs CPU vs torchvision vs synthetic input, on the full
# CIFAR-10 JPEG tree (decoded every step, and decoded once: data.cache=auto) and the in-memory
# arrays, eager and compiled, batch 256 and 1024; the model's own ceiling; the host-overhead
# ledger of the fast recipe's step; and one summary table. Each phase is one call of a few minutes, so a lent
# GPU's budget can run them separately and keep what finished.
#
#   bash bench/device_check.sh [OUT_DIR] [PHASE ...]   # default OUT_DIR bench-results/device-check,
#                                                      # phases: loaders eager compiled ceiling overhead photos export
#   QUICK=1 bash bench/device_check.sh /tmp/dc         # a few steps at 32 px: checks the script on a CPU
#
# `export` (not in the default list; ~3 min): a one-epoch quickstart run exported to ONNX (fp32 and int8,
# python -m pipeline.export), then `python -m pipeline.bench export` on it: onnxruntime's CUDA execution
# provider beside the CPU one. The CUDA provider comes from onnxruntime-gpu, which replaces the CPU
# package: the machine cannot download, so carry its wheel (pip download onnxruntime-gpu==1.31.1 --no-deps
# -d .whl/ here) and the phase installs $ORT_GPU_WHEEL (default: .whl/onnxruntime_gpu-*.whl); without it
# only the CPU provider is measured, and the log says so.
#
# `photos` (not in the default list; ~4 min): real photographs, random-resized crops at 224 px
# decoded from the file. The `mixed` decoder with 0, 0.65 and 0.9 of each batch on the hardware
# JPEG decoder, each with the per-stage table (its `decode` row is the decode ceiling); the
# window against the whole image; shards against files; DALI CPU and torchvision; then
# `bench doctor` for SqueezeNet 1.0 with bypass at 224 px: the loader alone, the model alone and
# end to end, whose ratio to min(model, loader) has a >= 90% target (BENCHMARKS.md). The photographs come
# from $FLOWERS (default .device/flowers-photos.tar, else ../shared/data/flowers-photos.tar): carry
# the 37 MB tarball in a call of its own (copy it into .device/ here first).
#
# Data: the JPEG tree is extracted from $CIFAR_JPEG (default .device/cifar10-jpeg.tar.gz, else
# ../shared/data/cifar10-jpeg.tar.gz) into $DATA (default /tmp/data); the in-memory source is an
# official-format archive written from the JPEGs by scripts/make_cifar_archive.py (its pixels
# carry the JPEG loss). QUICK uses the shipped sample instead. $THREADS: DALI threads and
# DataLoader workers per process (default 8). Every step runs even if one fails; `bench report`
# prints what completed. On the lent GPU machine DALI comes from ../shared/device (see its README).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-bench-results/device-check}"
shift || true
phases=("${@:-loaders eager compiled ceiling overhead}")
phases=(${phases[*]})
config=configs/squeezenet_cifar10.yaml
data="${DATA:-/tmp/data}"
threads="${THREADS:-8}"
[[ -n "${QUICK:-}" ]] && threads="${THREADS:-2}"
common=(wandb.mode=disabled train.precision=auto "data.num_threads=$threads")
rrc=(data.train.kind=random_resized_crop data.train.crop=224 data.eval.size=256 data.eval.crop=224)
photo_backend=dali-gpu photo_batch=256 photo_compare=dali-gpu,dali-cpu,torchvision
if [[ -n "${QUICK:-}" ]]; then
    timing=(--steps=2 --warmup=1 --repeats=2)
    common+=(data.train.min_side=34 data.train.max_side=38 data.train.crop=32 data.eval.size=32 data.eval.crop=32)
    jpeg=(data.source=sample data.cache=off) cached=(data.source=sample) memory=(data.source=sample) small=32 large=64
    cudagraphs=off compiled=off  # compiling on a CPU takes minutes: QUICK checks the plumbing only
    rrc=(data.train.kind=random_resized_crop data.train.crop=32 data.eval.size=36 data.eval.crop=32)
    photo_backend=dali-cpu photo_batch=16 photo_compare=dali-cpu,torchvision
else
    timing=(--steps=40 --warmup=20 --repeats=5)
    # jpeg: the files decoded at every step (the mixed decoder); cached: the same tree decoded once at
    # start-up into GPU-resident arrays (data.cache=auto, the default); memory: the official arrays.
    jpeg=(data.source=imagefolder "data.root=$data/cifar10" data.cache=off)
    cached=(data.source=imagefolder "data.root=$data/cifar10")
    memory=(data.source=cifar10 "data.root=$data/cifar-py" data.verify_checksums=false)  # re-made: not the official bytes
    small=256 large=1024
    cudagraphs=reduce-overhead compiled=default
fi
mkdir -p "$out"
source bench/common.sh
bench() {  # bench NAME KIND ARGS...: one pipeline.bench run with its results under $out/NAME ($CONFIG: another config)
    local name="$1" kind="$2"; shift 2
    step "$name" "$python" -m pipeline.bench "$kind" "${CONFIG:-$config}" "${common[@]}" "${timing[@]}" "$@" \
        --out="$out/$name"
}
tarball="${CIFAR_JPEG:-.device/cifar10-jpeg.tar.gz}"
[[ -f "$tarball" ]] || tarball=../shared/data/cifar10-jpeg.tar.gz
flowers="${FLOWERS:-.device/flowers-photos.tar}"
[[ -f "$flowers" ]] || flowers=../shared/data/flowers-photos.tar

"$python" - <<'PY' >&2
import torch
try:
    import nvidia.dali as dali
    version = dali.__version__
except ImportError:
    version = "not installed"
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), DALI {version}, {gpu}")
PY
[[ -n "${QUICK:-}" || " ${phases[*]} " == " photos " ]] || step data prepare_data "$data" "$tarball"
for phase in "${phases[@]}"; do
    case "$phase" in
    loaders)  # the input pipeline alone, per backend, with DALI's per-stage table
        bench loader-jpeg-b$small loader "${jpeg[@]}" train.global_batch_size=$small --stages
        bench loader-cached-b$small loader "${cached[@]}" train.global_batch_size=$small
        bench loader-memory-b$small loader "${memory[@]}" train.global_batch_size=$small --stages
        ;;
    eager)  # end to end: DALI vs torchvision vs synthetic input, no compilation; and the doctor's verdict
        bench train-jpeg-b$small-eager train "${jpeg[@]}" train.global_batch_size=$small
        bench train-cached-b$small-eager train "${cached[@]}" train.global_batch_size=$small --feeds=synthetic,real
        bench train-memory-b$small-eager train "${memory[@]}" train.global_batch_size=$small
        bench doctor-jpeg-b$small doctor "${jpeg[@]}" train.global_batch_size=$small
        ;;
    compiled)  # the same with the model compiled: CUDA graphs at 256, default mode at 1024
        bench train-jpeg-b$small-cudagraphs train "${jpeg[@]}" train.global_batch_size=$small \
            train.compile=$cudagraphs --feeds=synthetic,real
        bench train-memory-b$small-cudagraphs train "${memory[@]}" train.global_batch_size=$small \
            train.compile=$cudagraphs --feeds=synthetic,real
        bench train-jpeg-b$large-compiled train "${jpeg[@]}" train.global_batch_size=$large train.compile=$compiled
        bench train-cached-b$large-compiled train "${cached[@]}" train.global_batch_size=$large \
            train.compile=$compiled --feeds=synthetic,real
        bench train-memory-b$large-compiled train "${memory[@]}" train.global_batch_size=$large \
            train.compile=$compiled --feeds=synthetic,real
        ;;
    ceiling)  # the model alone: eager vs compile modes at the reference batch and a large one
        bench model-ceiling model data.source=synthetic --models=squeezenet_bypass --precisions=bf16 \
            --formats=channels_last --compile=off,$compiled,$cudagraphs --batch-sizes=64,$large
        ;;
    overhead)  # the host-overhead ledger of the fast recipe's step: operators, host us, syncs per step
        CONFIG=configs/squeezenet_cifar10_fast.yaml bench overhead-fast-b$small-eager overhead "${memory[@]}" \
            train.global_batch_size=$small train.compile=off
        CONFIG=configs/squeezenet_cifar10_fast.yaml bench overhead-fast-b$large-compiled overhead "${memory[@]}" \
            train.global_batch_size=$large "train.compile=$compiled"
        ;;
    photos)  # photographs at 224 px: the hardware decoder's share, the decode ceiling beside the model's
        step photo-data prepare_photos "$data" "$flowers"
        folder=(data.source=imagefolder "data.root=$data/flowers-x8")
        shards=(data.source=webdataset "data.root=$data/flowers-x8-shards")
        photo=("${rrc[@]}" model.num_classes=5 train.global_batch_size=$photo_batch)
        for load in 0 0.65 0.9; do
            bench loader-photos-hw$load loader "${folder[@]}" "${photo[@]}" data.hw_decoder_load=$load \
                --backends=$photo_backend --stages
        done
        bench loader-photos-fulldecode loader "${folder[@]}" "${photo[@]}" data.train.roi_decode=false \
            --backends=$photo_backend --stages
        bench loader-photos-shards loader "${shards[@]}" "${photo[@]}" --backends=$photo_compare
        bench doctor-photos-224 doctor "${folder[@]}" "${photo[@]}" model.name=squeezenet1_0_bypass
        bench model-photos-224 model data.source=synthetic model.num_classes=1000 \
            --models=squeezenet1_0_bypass,resnet50 --precisions=bf16 --formats=channels_last \
            --batch-sizes=$photo_batch --size=${rrc[1]#data.train.crop=}
        ;;
    export)  # the exported model through onnxruntime: the CUDA execution provider beside the CPU one
        wheel="${ORT_GPU_WHEEL:-$(ls .whl/onnxruntime_gpu-*.whl 2>/dev/null | head -1)}"
        if [[ -n "$wheel" ]]; then
            step export-ort-gpu "$python" -m pip install --quiet --no-deps --force-reinstall "$wheel"
        else
            echo "export: no onnxruntime-gpu wheel (ORT_GPU_WHEEL, .whl/): the CPU provider only" >&2
        fi
        step export-train "$python" train_dist.py configs/quickstart.yaml wandb.mode=disabled train.epochs=1 \
            logging.runs_dir="$out/runs" logging.run_name=export logging.progress=lines
        step export-onnx "$python" -m pipeline.export "$out/runs/export" --int8 --calibration 256
        step export-bench "$python" -m pipeline.bench export "$out/runs/export/export" --out="$out/export"
        ;;
    *) echo "unknown phase $phase (loaders, eager, compiled, ceiling, overhead, photos, export)" >&2; status=2 ;;
    esac
done
echo
"$python" -m pipeline.bench report "$out"
exit $status
