#!/usr/bin/env bash
# Quick start, command 2: install what the tests need and run the whole suite (the real local
# components are started by the tests themselves and stopped again).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --tests
.venv/bin/python -m pytest tests "$@"
