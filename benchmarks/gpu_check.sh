#!/usr/bin/env bash
# Issue 14 part 2: the CUDA path on a lent GPU machine (no network), in one run that writes under $OUT.
#
# Before (CPU side): a cp312 onnxruntime-gpu wheel for CUDA 13 (PyPI's 1.31.1 is), repacked with LZMA
#   (255 → 205 MB; pip reads it) to save a call, and the checkpoint, cut into 60 MiB folders:
#     python -m pairbert.benchmarks.gpu_carry pack runs/default/best onnxruntime_gpu-…whl --out .gpu-carry
# Device calls on ONE warm machine (it is given back after 30 s idle): a call's carry REPLACES what the
# previous call carried, so each call copies its folder out of the tree:
#     run(carry=[".gpu-carry/bN"], command="mkdir -p /root/carry && cp -r .gpu-carry/b* /root/carry/")
#   and the last one (with the last folder) runs this script with CARRY=/root/carry WORK=/root/gpu-work
#   OUT=/tmp/gc, then tars /tmp/gc into $OUT (at most 8 files come back). Reruns on the same warm machine:
#   STEPS="export bench report" CONTESTANTS="ort-fp16-cuda …". Measured figures: benchmarks/results/gpu-h200/.
# Steps (each logged, timed and allowed to fail without stopping the others; a summary at the end;
# STEPS="export bench" runs only those, e.g. for a rerun on the same warm machine):
#   1 environment   nvidia-smi, python, the ML packages already there
#   2 unpack        join the carried parts, check sha256, float32 weights again
#   3 install       onnxruntime-gpu in place of onnxruntime (no index), pairbert without deps
#   4 cuda session  the CUDA provider really runs (preload_dlls from nvidia-* wheels first)
#   5 export        the carried checkpoint → fp32, optimized, fp16; fp16 parity-gated ON CUDA (validated_on)
#   6 bench         a worker per CUDA contestant (ORT fp16/optimized/fp32 with IO binding, torch fp16 eager)
#   7 gpu_peak      the card's fp16/bf16 matrix rate (torch.matmul), model shapes and 8192³
#   8 report        gpu_summary.json: the issue's targets from the files above
#   9 pytest -m gpu CUDA fp16 parity with IO binding, on the tiny test model
#  10 tensorrt      whether the TensorRT execution provider loads
#  11 autocast      a few steps of bf16 autocast training on CUDA (random BERT-base, 256 built-in pairs)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu-check}
CARRY=${CARRY:-.gpu-carry}
WORK=${WORK:-.gpu-check}
PY=${PYTHON:-python3}
THREADS=${THREADS:-8}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
declare -A STATUS

source benchmarks/device_steps.sh  # step

environment() {
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
  $PY -V
  $PY -m pip list 2>/dev/null | grep -iE '^(torch|onnx|onnxruntime|nvidia-|transformers|tokenizers|safetensors|numpy|setuptools|tqdm|psutil)' \
    | tee "$OUT/packages-before.txt"
}

install() {
  local wheel
  wheel=$(ls "$WORK"/wheels/onnxruntime_gpu-*.whl | head -1) || return 1
  $PY -m pip uninstall -y onnxruntime >/dev/null 2>&1 || true
  $PY -m pip install --no-index --no-deps "$wheel" || return 1
  if ! $PY -m pip install --no-index --no-deps --no-build-isolation -e .; then
    echo "editable install failed (setuptools>=69 missing?); using a PYTHONPATH shim"
    rm -rf "$WORK/shim" && mkdir -p "$WORK/shim" && cp -r src/pairbert "$WORK/shim/pairbert"
    for stage in training export runtime benchmarks serving; do ln -s "$PWD/$stage" "$WORK/shim/pairbert/$stage"; done
  fi
  $PY -c "from pairbert.runtime.ort import installed_builds; import onnxruntime as o; \
print(installed_builds(), o.__version__, o.get_available_providers())" | tee "$OUT/onnxruntime.txt"
}

cuda_session() {
  $PY - "$OUT/cuda_session.json" <<'PY'
import json, sys
import numpy as np, onnx, onnxruntime as ort
from onnx import helper, TensorProto
from pairbert.runtime.ort import prepare_cuda
prepare_cuda(ort)
x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2])
y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])
model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
s = ort.InferenceSession(model.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
out = s.run(None, {"x": np.eye(2, dtype=np.float32)})[0]
result = {"providers": s.get_providers(), "ok": bool(np.allclose(out, np.eye(2)))}
json.dump(result, open(sys.argv[1], "w")); print(result)
sys.exit(0 if result["providers"][0] == "CUDAExecutionProvider" else 1)
PY
}

export_bundle() {
  $PY -m pairbert export "$WORK/checkpoint" --out "$WORK/bundle" --variants fp32,optimized,fp16 || return 1
  $PY -c "import json,sys; m=json.load(open('$WORK/bundle/manifest.json')); \
json.dump({k: {'validated_on': v['validated_on'], 'passed': v['passed_parity'], **v['parity']} \
for k, v in m['variants'].items()}, open('$OUT/parity.json', 'w'), indent=1); print(open('$OUT/parity.json').read())"
  cp "$WORK/bundle/manifest.json" "$OUT/manifest.json"
}

bench() {
  local name rc=0
  for name in ${CONTESTANTS:-ort-fp16-cuda ort-fp16-cuda-nographs torch-fp16-cuda ort-optimized-cuda ort-fp32-cuda}; do
    echo "--- $name"
    timeout 90 $PY -m pairbert.benchmarks.worker "$name" --bundle "$WORK/bundle" \
      --checkpoint "$WORK/checkpoint" --threads "$THREADS" > "$OUT/bench-$name.json" 2> "$OUT/bench-$name.err" \
      || { rc=1; tail -3 "$OUT/bench-$name.err"; }
  done
  return $rc
}

gpu_peak() {
  $PY -m pairbert.benchmarks.gpu_peak --hidden 384 > "$OUT/gpu_peak.json" && cat "$OUT/gpu_peak.json"
}

tensorrt() {
  $PY - "$WORK/bundle/model.optimized.onnx" <<'PY'
import sys, onnxruntime as ort
available = "TensorrtExecutionProvider" in ort.get_available_providers()
print({"listed": available})
if available:
    try:
        s = ort.InferenceSession(sys.argv[1], providers=["TensorrtExecutionProvider", "CUDAExecutionProvider"])
        print({"session_providers": s.get_providers()})
    except Exception as exc:
        print({"error": str(exc).splitlines()[0]})
PY
}

autocast_training() {
  head -256 training/data/train.jsonl > "$WORK/train256.jsonl"
  $PY -m pairbert train --source random:bert-base --tokenizer "$WORK/checkpoint/tokenizer.json" --device cuda \
    --train "$WORK/train256.jsonl" --epochs 1 --batch-size 32 --output-dir "$WORK/train-cuda" --quiet \
    | tee "$OUT/autocast_train.txt"
  cp "$WORK/train-cuda/best/pairbert.json" "$OUT/autocast_pairbert.json" 2>/dev/null || true
}

export PY OUT WORK CARRY THREADS PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$(realpath -m "$WORK")/shim"
export -f environment install cuda_session export_bundle bench gpu_peak tensorrt autocast_training

step environment 60 environment
# gpu_carry.py needs only torch and safetensors: run as a file, before pairbert is installed.
[ -d "$WORK/wheels" ] || step unpack 120 $PY benchmarks/gpu_carry.py unpack "$CARRY" --out "$WORK"
step install 120 install
step cuda_session 60 cuda_session
step export 180 export_bundle
step bench 330 bench
step gpu_peak 60 gpu_peak
step report 30 $PY -m pairbert.benchmarks.gpu_report "$OUT"
step pytest_gpu 150 $PY -m pytest -m gpu -q -p no:cacheprovider --junitxml "$OUT/pytest-gpu.xml"
step tensorrt 45 tensorrt
step autocast_training 120 autocast_training

echo "=== summary"
for k in environment unpack install cuda_session export bench gpu_peak report pytest_gpu tensorrt autocast_training; do
  echo "$k: ${STATUS[$k]:-not run}"
done | tee "$OUT/summary.txt"
