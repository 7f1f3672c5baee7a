#!/usr/bin/env bash
# Builds (or reuses) the compat venv at tests/compat/.venv from requirements.txt.
# Idempotent: a venv whose stamp matches requirements.txt is reused as is.
# `--check`: change nothing; exit 0 if the venv is ready, 1 if a run would (re)build it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
if command -v sha256sum >/dev/null 2>&1; then
  want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
else
  want="$(shasum -a 256 "$here/requirements.txt" | cut -d' ' -f1)" # macOS
fi
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  exit 1
fi
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "tests/compat/setup.sh: $python not found (install python3)" >&2; exit 1; }
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$stamp"
echo "tests/compat/setup.sh: venv ready at $venv"
