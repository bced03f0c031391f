#!/usr/bin/env bash
# Set up clipaudit on a fresh Debian/Ubuntu machine with Python >= 3.10:
#   1. system data from Debian packages (WordNet 3.0 for hierarchy reranking, Fashion-MNIST, Chromium for
#      the report's browser test) when run as root or with sudo; skipped otherwise, with a note;
#   2. a virtual environment in .venv (or $VENV) with clipaudit and its test tools.
# torch and torchvision are resolved together from the package index, so they always match; a
# CPU-only torch wheel without its torchvision (torchvision then fails at import) is excluded by the
# package's requirements. On a machine without a GPU the CUDA build simply runs on the CPU.
set -euo pipefail
cd "$(dirname "$0")"
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
APT_PACKAGES="wordnet-base wordnet-sense-index dataset-fashion-mnist chromium"

if [ "${SKIP_APT:-0}" != "1" ]; then
  if [ "$(id -u)" = "0" ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else SUDO=none; fi
  if [ "$SUDO" != "none" ] && command -v apt-get >/dev/null 2>&1; then
    missing=$(for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
    if [ -n "$missing" ]; then
      echo "install.sh: apt-get install $missing"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
    fi
  else
    echo "install.sh: not root and no apt-get/sudo: skipping system data ($APT_PACKAGES)." >&2
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e ".[dev]"
"$VENV/bin/python" - <<'PY'
import torch, torchvision, open_clip  # noqa: F401  (fails loudly if the torch/torchvision pair is broken)
print(f"install.sh: clipaudit ready (torch {torch.__version__}, torchvision {torchvision.__version__}, "
      f"open_clip {open_clip.__version__})")
PY
