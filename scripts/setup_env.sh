#!/usr/bin/env bash
# Create (first run) or reuse (later runs) the project's virtual environment in .venv.
#
#   scripts/setup_env.sh          # idempotent: reinstalls only when pyproject.toml changed
#   VENV=/path/to/venv scripts/setup_env.sh
#
# Installs torch, torchvision, nvidia-dali-cuda120, numpy, pyyaml, pydantic, wandb, tqdm,
# matplotlib and the test tools (pyproject.toml lists the ranges). NVIDIA apex is optional and is
# never installed from PyPI: the PyPI package named "apex" is an unrelated project.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
stamp="$venv/.installed-from"

want="$(cat "$root/pyproject.toml" | sha256sum | cut -d' ' -f1)"
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
echo "$want" > "$stamp"
"$venv/bin/python" - <<'PY' >&2
import torch, torchvision, nvidia.dali, wandb
print(f"setup_env: torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"DALI {nvidia.dali.__version__}, wandb {wandb.__version__}, CUDA available: {torch.cuda.is_available()}")
PY
