#!/usr/bin/env bash
# One GPU check, prepared to run in under 8 minutes on one H100/H200 with torch but without DALI:
# the training-step matrix for squeezenet_bypass at 122x122 (precision x memory format x
# torch.compile x batch size), the memory-bandwidth roofline of its best configuration,
# synthetic-input end-to-end training at the reference batch (64) and at a large batch, then one
# summary table last.
#
#   bash bench/device_check.sh [OUT_DIR]          # default bench-results/device-check
#   QUICK=1 bash bench/device_check.sh            # a few steps at 32 px: checks the script on a CPU
#
# Every step runs even if one fails; the summary shows what completed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out="${1:-bench-results/device-check}"
python="${PYTHON:-python3}"
[[ -x .venv/bin/python && -z "${PYTHON:-}" ]] && python=.venv/bin/python
config=configs/squeezenet_cifar10.yaml
common=(wandb.mode=disabled data.source=synthetic)
if [[ -n "${QUICK:-}" ]]; then
    timing=(--steps=2 --warmup=1 --repeats=2)
    size=(--size=32) batches=4,8 big=16
    common+=(data.train.min_side=34 data.train.max_side=38 data.train.crop=32 data.eval.size=32 data.eval.crop=32)
else
    timing=(--steps=30 --warmup=15 --repeats=5)
    size=(--size=122) batches=256,1024 big=1024
fi
mkdir -p "$out"
status=0
step() {  # step NAME COMMAND...: run, keep going on failure, time it
    local name="$1"; shift
    local t0=$SECONDS
    echo "=== $name" >&2
    "$@" 2>&1 | tee "$out/$name.log" >&2 || status=1
    echo "=== $name: $((SECONDS - t0)) s" >&2
}
"$python" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" >&2
step model "$python" -m pipeline.bench model "$config" "${common[@]}" "${timing[@]}" "${size[@]}" \
    --models=squeezenet_bypass --precisions=fp32,bf16,fp16 --formats=contiguous,channels_last --compile=off \
    --batch-sizes="$batches" --out="$out/model"
step model-compiled "$python" -m pipeline.bench model "$config" "${common[@]}" "${timing[@]}" "${size[@]}" \
    --models=squeezenet_bypass --precisions=bf16 --formats=channels_last --compile=on \
    --batch-sizes="$batches" --out="$out/model-compiled"
step train-b64 "$python" -m pipeline.bench train "$config" "${common[@]}" "${timing[@]}" \
    train.global_batch_size=64 --out="$out/train-b64"
step train-big "$python" -m pipeline.bench train "$config" "${common[@]}" "${timing[@]}" \
    train.global_batch_size="$big" --out="$out/train-big"
echo
"$python" -m pipeline.bench report "$out"
exit $status
