#!/usr/bin/env bash
# Create (first run) or reuse (later runs) the project's virtual environment in .venv.
#
#   scripts/setup_env.sh          # idempotent: reinstalls only when pyproject.toml or this script changed
#   VENV=/path/to/venv scripts/setup_env.sh
#
# Installs torch, torchvision, numpy, pyyaml, pydantic, wandb, tqdm, matplotlib, the pinned ONNX
# export and runtime packages (onnx, onnxruntime, onnxscript) and the test tools (pyproject.toml
# lists the ranges and pins), then the NVIDIA DALI build that matches the CUDA major
# version torch was built for: nvidia-dali-cuda130 with a cu13x torch, nvidia-dali-cuda120 with a
# cu12x or CPU-only torch (DALI runs its CPU operators with either). NVIDIA apex is optional and
# is never installed from PyPI: the PyPI package named "apex" is an unrelated project.
set -euo pipefail
# The real checkout, also when reached through a symlinked copy: the editable install must point at it.
root="$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.installed-from"

want="$(cat "$root/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)"
if [[ -x "$venv/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
    exit 0  # up to date
fi

"$python" - <<'PY' || { echo "setup_env: Python >= 3.10 is required" >&2; exit 1; }
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
PY

echo "setup_env: installing the environment into $venv (first run takes a few minutes)" >&2
[[ -x "$venv/bin/python" ]] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Editable install: `pipeline` and `models` import from anywhere; code edits need no reinstall.
"$venv/bin/python" -m pip install --quiet -e "$root[test]"

# The DALI build for torch's CUDA: cu13x -> cuda130, cu12x or CPU-only -> cuda120.
dali_extra="$("$venv/bin/python" -c 'import torch; v = torch.version.cuda; print("dali-cuda130" if v and v.startswith("13.") else "dali-cuda120")')"
dali_package="nvidia-$dali_extra"  # nvidia-dali-cuda120 or nvidia-dali-cuda130
# Another build of DALI would share the nvidia.dali package directory: remove it first.
other="$("$venv/bin/python" -m pip list --format=freeze 2>/dev/null | grep -o '^nvidia-dali-cuda[0-9]*' | grep -vx "$dali_package" || true)"
if [[ -n "$other" ]]; then
    echo "setup_env: replacing $other with $dali_package (torch's CUDA build changed)" >&2
    "$venv/bin/python" -m pip uninstall --quiet --yes $other
fi
"$venv/bin/python" -m pip install --quiet -e "$root[test,$dali_extra]"
echo "$want" > "$stamp"
"$venv/bin/python" - <<'PY' >&2
import importlib.metadata as md
import torch, torchvision, nvidia.dali, wandb, onnx, onnxruntime
dali = next(d.metadata["Name"] for d in md.distributions() if d.metadata["Name"].startswith("nvidia-dali-cuda"))
print(f"setup_env: torch {torch.__version__} (CUDA {torch.version.cuda}), torchvision {torchvision.__version__}, "
      f"{dali} {nvidia.dali.__version__}, wandb {wandb.__version__}, onnx {onnx.__version__}, "
      f"onnxruntime {onnxruntime.__version__}, CUDA available: {torch.cuda.is_available()}")
PY
