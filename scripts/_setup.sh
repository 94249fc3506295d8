# Shared set-up for scripts/run and scripts/test: a Python 3.11+ virtualenv in .venv with the project
# installed (reinstalled only when its metadata changes), and the database migrated.
# Sourced, not run: it sets PYTHON and VENV for the caller.

set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

find_python() {
  for candidate in "${PYTHON:-}" python3.13 python3.12 python3.11 python3; do
    [ -n "$candidate" ] || continue
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  echo "helpline needs Python 3.11 or newer; none was found on PATH" >&2
  return 1
}

VENV="$ROOT/.venv"
if [ ! -x "$VENV/bin/python" ]; then
  "$(find_python)" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
PYTHON="$VENV/bin/python"

# $1: the extras to install ("" or "test"). Skipped when setup.cfg has not changed since last time.
install_project() {
  local extras="${1:-}" spec="." stamp
  [ -n "$extras" ] && spec=".[$extras]"
  stamp="$VENV/.helpline-installed-$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)-${extras:-base}"
  if [ ! -f "$stamp" ]; then
    "$PYTHON" -m pip install --quiet --disable-pip-version-check -e "$spec"
    touch "$stamp"
  fi
}
