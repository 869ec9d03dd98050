#!/usr/bin/env bash
# Quick start, command 1: install everything and run the main job, the canary drill on the
# embedded local target, leaving a sealed evidence bundle under ./evidence/.
# The platform the drill started is stopped again at the end (`clinops up` brings it back in
# seconds; `clinops status` shows it), so the quick start leaves no process behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
status=0
.venv/bin/clinops run runbooks/02-canary-drill.ipynb --target local || status=$?
.venv/bin/clinops down
.venv/bin/clinops evidence verify evidence
.venv/bin/clinops evidence list evidence
exit "$status"
