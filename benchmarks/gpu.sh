#!/usr/bin/env bash
# Every GPU row of the benchmark in one command (benchmarks/README.md, "One GPU run"):
#
#   bash benchmarks/gpu.sh --peak_tflops=989 [gpu_bench.py flags ...]
#
# For a host whose Python has jax (CUDA), flax, optax, orbax-checkpoint, absl and torch but no TensorFlow.
#  1. ml_collections (pure Python; c2f_vol's configs need it) is installed from the carried wheel directory
#     ($WHEELS, default .wheels/) into a temporary --target directory ($SITE), only if it is not importable.
#  2. A quick CPU check that c2f_vol's train step and inference build and run under this Python's flax and
#     optax (gpu_bench.py --worker=check_env); if it fails and $WHEELS/pinned/ holds wheels (the project's
#     pinned flax and optax), those are installed into $SITE and the check is repeated.
#  3. benchmarks/gpu_bench.py with the arguments given: every row, one JSON and one table, under a deadline.
# Environment: PYTHON (default python3), WHEELS, SITE; OUT (where the results go, when set).
set -uo pipefail
export C2F_BENCH_T0="${C2F_BENCH_T0:-$(date +%s.%N)}"  # the deadline counts from here
cd "$(dirname "$0")/.." || exit 2
PYTHON="${PYTHON:-python3}"
WHEELS="${WHEELS:-.wheels}"
SITE="${SITE:-/tmp/c2f_site}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"

install_wheels() {  # install_wheels WHEEL...: into $SITE, which then comes first on PYTHONPATH
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@" \
    || return 1
  case ":$PYTHONPATH:" in *":$SITE:"*) ;; *) export PYTHONPATH="$SITE:$PYTHONPATH" ;; esac
}

if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  wheel=$(ls "$WHEELS"/ml_collections-*.whl 2>/dev/null | head -n 1)
  if [ -z "$wheel" ]; then
    echo "error: ml_collections is not importable by $PYTHON and $WHEELS/ holds no ml_collections-*.whl" \
         "(fill it: see benchmarks/README.md)" >&2
    exit 2
  fi
  install_wheels "$wheel" || { echo "error: could not install $wheel into $SITE" >&2; exit 2; }
  echo "gpu.sh: installed $(basename "$wheel") into $SITE"
fi

if ! JAX_PLATFORMS=cpu "$PYTHON" benchmarks/gpu_bench.py --worker=check_env "$@"; then
  if ls "$WHEELS"/pinned/*.whl >/dev/null 2>&1; then
    echo "gpu.sh: c2f_vol does not run under this Python's packages; trying the pinned wheels in $WHEELS/pinned/"
    install_wheels "$WHEELS"/pinned/*.whl \
      && JAX_PLATFORMS=cpu "$PYTHON" benchmarks/gpu_bench.py --worker=check_env "$@" \
      || echo "gpu.sh: the check still fails; running anyway (the rows will say why they fail)"
  else
    echo "gpu.sh: the check failed and $WHEELS/pinned/ holds no wheels; running anyway"
  fi
fi

exec "$PYTHON" benchmarks/gpu_bench.py "$@"
