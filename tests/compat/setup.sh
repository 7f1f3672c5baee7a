#!/usr/bin/env bash
# Builds (or reuses) the compat venv at tests/compat/.venv from requirements.txt.
# Idempotent: a venv whose stamp matches requirements.txt is reused as is.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$here/requirements.txt" | cut -d' ' -f1)"
if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
python="${PYTHON:-python3}"
command -v "$python" >/dev/null || { echo "tests/compat/setup.sh: $python not found (install python3)" >&2; exit 1; }
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$here/requirements.txt"
echo "$want" > "$stamp"
echo "tests/compat/setup.sh: venv ready at $venv"
