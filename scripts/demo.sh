#!/usr/bin/env bash
# The quick start: install, then profile a tiny LLM on the emulated ESP32-S3 (no hardware needed).
# Writes runs/demo/{trace.h5,summary.json,raw.ttraw.zst} and prints the summary table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh runtime
model_args=()
if [ -f ../shared/models/stories260K.bin ]; then
    model_args=(--model ../shared/models/stories260K.bin --tokenizer ../shared/models/tok512.bin)
fi
exec .venv/bin/tinytelem profile --device emu:esp32s3 "${model_args[@]}" --out runs/demo "$@"
