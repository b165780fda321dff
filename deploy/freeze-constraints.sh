#!/usr/bin/env bash
# Regenerate deploy/constraints.txt (the image's pinned versions) from the project venv.
# Run after changing dependencies in pyproject.toml and `make install`.
set -euo pipefail
cd "$(dirname "$0")/.."
pip="${VENV:-.venv}/bin/pip"
{
  echo "# Pinned versions for the container image (pip install -c deploy/constraints.txt)."
  echo "# Regenerate with deploy/freeze-constraints.sh (docs/deploy.md, \"Reproducible image\")."
  "$pip" freeze --exclude-editable | grep -viE '^(hosepipe==|-e |#)' | grep -v ' @ ' || true
} > deploy/constraints.txt
echo "wrote deploy/constraints.txt ($(grep -vc '^#' deploy/constraints.txt) pins)"
