#!/usr/bin/env bash
# Quick start, command 1: install everything and run the main job, the canary drill on the
# embedded local target, leaving a sealed evidence bundle under ./evidence/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/clinops run runbooks/02-canary-drill.ipynb --target local
.venv/bin/clinops evidence verify evidence
.venv/bin/clinops evidence list evidence
