#!/usr/bin/env bash
# resviz on a CUDA GPU, in one step and under 8 minutes (issue 13, part 4):
#
#   bash scripts/device_check.sh                  # on the machine with the GPU
#
# 1. a virtual environment from requirements.txt (torch with CUDA comes from the machine, see below),
# 2. the GPU tests: pytest -m gpu tests/test_gpu.py (model build, trace, statistics, signal flow, race, feature maps,
#    attributions and every page on cuda, each equal to the CPU within tolerance; a real out-of-memory error),
# 3. the benchmark (python -m resviz.bench --only $BENCH) and the same work timed on the CPU and on cuda,
# and prints one table (also written to $OUT/device_check.md, or out/device/ without $OUT).
#
# A machine with no network (the lent GPU machines): its python3 already has torch with CUDA, torchvision,
# numpy, pillow, pytest...; the rest of requirements.txt travels as wheels in .whl/, fetched beforehand on a
# machine with pip access (.whl/ is listed in .git/info/exclude, so it is never committed):
#
#   bash scripts/device_check.sh --fetch-wheels   # here: the wheels for the GPU machine's Python (3.12, x86_64)
#
# Settings (environment): PYTHON (the interpreter with torch; default python3), VENV (default
# /tmp/resviz-device-venv), BENCH (benchmark modules; default below), WHEELS (default .whl), DEVICE_PY (the GPU
# machine's Python version for --fetch-wheels; default 3.12).
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python3}
VENV=${VENV:-/tmp/resviz-device-venv}
WHEELS=${WHEELS:-.whl}
BENCH=${BENCH:-architecture signal_flow training}  # CPU figures; "app" needs Chromium, which the GPU machine lacks
OUT_DIR=${OUT:-$ROOT/out/device}
# Packages the GPU machine's image already has that our requirements pull in (device README, KINDS.md, 2026-11):
# --fetch-wheels leaves them out. A package missing from this list is only fetched needlessly.
IMAGE_HAS="torch torchvision triton numpy pandas pyarrow pillow protobuf requests urllib3 idna certifi
charset-normalizer packaging typing-extensions anyio h11 click jinja2 markupsafe attrs narwhals matplotlib
contourpy cycler fonttools kiwisolver pyparsing python-dateutil six tqdm sympy mpmath filelock fsspec networkx
pytest pluggy iniconfig pygments setuptools"

say() { printf '\n== %s\n' "$*" >&2; }
norm() { tr 'A-Z_.' 'a-z--'; }  # package names compared as pip does (PEP 503)

device_requirements() {  # requirements.txt without what $1 (an interpreter) already has, and without playwright
  "$1" - "$ROOT/requirements.txt" <<'EOF'
import re, sys
from importlib import metadata
for line in open(sys.argv[1]):
    name = re.match(r"\s*([A-Za-z0-9_.-]+)", line.split("#")[0])
    if not name or line.lstrip().startswith("-") or name.group(1).lower() == "playwright":  # -e .; no Chromium there
        continue
    try:
        metadata.version(name.group(1))  # already there: keep the machine's own (torch with CUDA above all)
    except metadata.PackageNotFoundError:
        print(line.strip())
EOF
}

fetch_wheels() {
  local py=${DEVICE_PY:-3.12} req tmp
  local platform=(--only-binary=:all: --python-version "$py" --implementation cp --platform manylinux_2_28_x86_64
                  --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
                  --platform manylinux1_x86_64)
  tmp=$(mktemp -d)
  grep -v -i -E '^\s*(playwright|torch|torchvision)\b|^\s*-' requirements.txt >"$tmp/req.txt"  # not -e .: the repo
  say "resolving requirements.txt for Python $py on x86_64 (metadata only)"
  "$PYTHON" -m pip install -q --dry-run --ignore-installed --report "$tmp/report.json" --target "$tmp/none" \
    "${platform[@]}" -r "$tmp/req.txt" || return 1
  "$PYTHON" -c 'import json, sys; [print(i["metadata"]["name"] + "==" + i["metadata"]["version"])
                for i in json.load(open(sys.argv[1]))["install"]]' "$tmp/report.json" >"$tmp/all.txt"
  : >"$tmp/need.txt"
  while IFS= read -r req; do
    local name; name=$(printf '%s' "${req%%==*}" | norm)
    case " $(echo $IMAGE_HAS | norm) " in *" $name "*) continue ;; esac
    case $name in nvidia-*|torch*|triton) continue ;; esac
    echo "$req" >>"$tmp/need.txt"
  done <"$tmp/all.txt"
  mkdir -p "$WHEELS" && grep -qx "/$WHEELS/" .git/info/exclude 2>/dev/null || echo "/$WHEELS/" >>.git/info/exclude
  say "downloading $(wc -l <"$tmp/need.txt") wheels into $WHEELS/: $(tr '\n' ' ' <"$tmp/need.txt")"
  "$PYTHON" -m pip download -q --no-deps "${platform[@]}" -d "$WHEELS" -r "$tmp/need.txt" || return 1
  du -sh "$WHEELS" >&2
  echo "carry $WHEELS/ to the GPU machine with the working tree, then: bash scripts/device_check.sh" >&2
}

setup_venv() {  # a venv that sees $PYTHON's packages (torch with CUDA) and adds the rest of requirements.txt
  "$PYTHON" -m venv --system-site-packages "$VENV" || return 1
  # A venv made from a venv's python would not see that venv's packages (the GPU image's python3 is one): a .pth
  # file puts the folders on $PYTHON's path that the new venv lacks after the new venv's own.
  local paths='import sys; print("\n".join(p for p in sys.path if p))' site
  site=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  grep -vxF -f <("$VENV/bin/python" -c "$paths") <("$PYTHON" -c "$paths") >"$site/device-base.pth"
  device_requirements "$VENV/bin/python" >"$VENV/requirements-device.txt"
  if [ ! -s "$VENV/requirements-device.txt" ]; then
    return 0
  fi
  echo "missing here: $(tr '\n' ' ' <"$VENV/requirements-device.txt")" >&2
  if [ -d "$WHEELS" ]; then  # offline: --fetch-wheels put exactly what the machine lacks there, dependencies too
    echo "installing $(ls "$WHEELS" | wc -l) wheels from $WHEELS/ (no network)" >&2
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-index --no-deps "$WHEELS"/*.whl
  else
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$VENV/requirements-device.txt"
  fi
}

if [ "${1:-}" = "--fetch-wheels" ]; then
  fetch_wheels
  exit $?
fi

mkdir -p "$OUT_DIR"
start=$SECONDS
status=0
: >"$OUT_DIR/stages.txt"
stage() {  # stage NAME CAP_S LOG COMMAND...: run it under a time cap; note its exit status and time for the table
  local name=$1 cap=$2 log=$3 t=$SECONDS rc
  shift 3
  timeout "$cap" "$@" >"$log" 2>&1
  rc=$?
  echo "$name $rc $((SECONDS - t)) $cap" >>"$OUT_DIR/stages.txt"
  [ "$rc" -eq 0 ] || status=1
}
# Caps add up to 470 s: the whole check stays under 8 minutes even when a stage hangs.
say "1/4 virtual environment ($VENV) from requirements.txt"
export ROOT PYTHON VENV WHEELS
export -f device_requirements setup_venv
stage setup 100 "$OUT_DIR/setup.log" bash -c setup_venv
PY=$VENV/bin/python
if ! "$PY" -c 'import streamlit, torch, captum, plotly' 2>>"$OUT_DIR/setup.log"; then
  say "the environment could not be set up (see $OUT_DIR/setup.log)"
  tail -20 "$OUT_DIR/setup.log" >&2
  exit 1
fi
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT" RESVIZ_CACHE="$OUT_DIR/cache"

say "2/4 GPU tests"
stage "GPU tests" 180 "$OUT_DIR/gpu_tests.log" "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py \
  --junitxml "$OUT_DIR/gpu_tests.xml" -o junit_family=xunit1
tail -3 "$OUT_DIR/gpu_tests.log" >&2

say "3/4 benchmark: $BENCH"
# shellcheck disable=SC2086 - BENCH is a list of module names
stage benchmark 120 "$OUT_DIR/bench.log" "$PY" -m resviz.bench --only $BENCH --json "$OUT_DIR/bench.json"

say "4/4 the same work timed on cuda and on the CPU"
stage "CPU vs GPU" 60 "$OUT_DIR/timing.log" "$PY" scripts/device_report.py time --json "$OUT_DIR/timing.json"

"$PY" scripts/device_report.py table --dir "$OUT_DIR" --seconds $((SECONDS - start)) | tee "$OUT_DIR/device_check.md"
exit $status
