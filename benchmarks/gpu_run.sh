#!/usr/bin/env bash
# The GPU checks of issue 9 as one prepared command, for a session whose task draws the device machine
# (one H100/H200, JAX and torch but no TensorFlow, nothing downloadable). Sized to end in about 9 minutes.
#
# Here, once (pure-Python wheels the GPU machine lacks; wheels/ is git-ignored):
#     pip download keras namex optree --only-binary=:all: --python-version 3.12 --no-deps -d wheels/
# Then, with the device tool:  run(command="bash benchmarks/gpu_run.sh", carry=["wheels"], timeout_s=600)
# Everything is logged to $OUT/gpu.log (it comes back even when a step runs past its limit).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/modtest-gpu-out}
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
exec > >(tee -a "$LOG") 2>&1
export PYTHONUNBUFFERED=1 KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD  # modtest is not installed there: no pytest11 entry point, hence -p modtest.plugin
step() {  # step SECONDS TITLE COMMAND...
    local limit=$1 title=$2
    shift 2
    echo; echo "=== $title (limit ${limit}s) $(date -u +%T)"
    local t0=$SECONDS
    timeout "$limit" "$@"
    echo "=== rc=$? after $((SECONDS - t0)) s"
}
step 30 "devices" python3 -c "import jax, keras; print(jax.devices(), 'keras', keras.__version__, keras.backend.backend())"
step 60 "example audit, pytest -n 1 on one GPU (cold cache)" python3 -m pytest -q -p no:cacheprovider -p modtest.plugin \
    -n 1 --modtest-cache /tmp/mt-cache --model examples/digits_mlp.keras examples/test_digits_modularity.py
step 200 "VGG-16 32x32, full lesion study, 10,000 images (target <= 3 min)" \
    python3 benchmarks/lesion_vgg.py --size 32 --images 10000 --batch-size 512
step 150 "VGG-16 224x224, 10,000 images, 8 sub-clusters spread over the layers (extrapolated; target <= 20 min)" \
    python3 benchmarks/lesion_vgg.py --size 224 --images 10000 --max-subclusters 8 --batch-size 128
step 60 "feature visualization throughput, 32x32 and 224x224" python3 benchmarks/visualize_throughput.py --objectives 64 --steps 32
echo "done $(date -u +%T)"
