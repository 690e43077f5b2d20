#!/usr/bin/env bash
# The CPU issue's check on another CPU: the lent device machine's processor (an Intel Xeon with AMX where it
# has one), two of its cores, in one run that writes under $OUT. No GPU is used; no network there.
#
# Before (CPU side): cp312 wheels of openvino, openvino-telemetry and onnxruntime (the versions the project
#   pins; LZMA-repacked to fit, pip reads them) and the checkpoint, cut into 60 MiB folders:
#     python -m pairbert.benchmarks.gpu_carry pack runs/default/best WHEEL... --out .gpu-carry
# Device calls on ONE warm machine (given back after 30 s idle); a call's carry REPLACES the previous one's,
#   so each call copies its folder out of the tree:
#     run(carry=[".gpu-carry/bN"], command="mkdir -p /root/carry && cp -r .gpu-carry/b* /root/carry/")
#   and the last one runs CARRY=/root/carry bash benchmarks/cpu_check.sh (it tars its results into $OUT).
# Steps (each logged, timed, allowed to fail; a deadline keeps the whole run inside one call):
#   environment  lscpu, the CPU's matrix units, OpenVINO's capabilities; two cores on distinct physical cores
#   unpack       join the carried parts, check sha256, float32 weights again (gpu_carry.py)
#   install      the carried wheels into /tmp/site (ahead of the image's onnxruntime), pairbert as a shim
#   export       fp32, optimized, int8, openvino-fp32, openvino-bf16, openvino-int8, each parity-gated on THIS
#                CPU (all cores); openvino-int8 needs NNCF's wheel and those of its dependencies the image
#                lacks among the carried ones (carry the nncf and pydot wheels too), else the
#                export leaves it out (--skip-failed) with a line saying so
#   soak         each CPU variant against fp32 over rounds of varied shapes (variant_soak.py), one process
#                each: a native crash is its exit status, wrong answers its agreement
#   bench        pairbert bench --quick on the two cores (auto calibrates there: what it picks on this CPU)
#   full         full workers (batch 32 x 128, three batch sizes, 304 validation pairs) for the default path
#                and the strongest peers, while the deadline allows
#   peak         the matrix yardstick (fp32, int8, bf16 where the CPU has units), 1.5 s per shape
#   pytest       tests/test_backends.py on this CPU (the bf16 paths that an AVX2 machine skips); PYTEST_ARGS=tests
#                and PYTEST_LIMIT=300 for the whole suite (its serving tests need fastapi/uvicorn wheels carried)
set -uo pipefail
cd "$(dirname "$0")/.."
FINAL_OUT=${OUT:-runs/cpu-check}
OUT=/tmp/cpu-check-out
CARRY=${CARRY:-.gpu-carry}
WORK=${WORK:-/root/cpu-work}
PY=${PYTHON:-python3}
DEADLINE=${DEADLINE:-540}  # seconds after start by which the last step must end (the call's limit is 600)
FULL=${FULL:-pairbert-auto openvino-default torch-bf16 ort-int8 torch-int8 ort-optimized}
rm -rf "$OUT" && mkdir -p "$OUT" "$FINAL_OUT" "$WORK"
exec > >(tee -a "$OUT/log.txt") 2>&1
declare -A STATUS

END=$(($(date +%s) + DEADLINE))
source benchmarks/device_steps.sh  # step, left

environment() {
  lscpu | tee "$OUT/lscpu.txt" | grep -E 'Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(s\)|L2|L3'
  grep -o -w -E 'amx_bf16|amx_int8|amx_tile|avx512_bf16|avx512_vnni|avx_vnni|avx512f|avx2' /proc/cpuinfo \
    | sort | uniq -c | sed 's/^ *//' | tr '\n' ' '
  echo
  # two logical CPUs on two distinct physical cores (first of each core), as a 2-core machine would have
  lscpu -p=CPU,CORE,SOCKET | grep -v '^#' | sort -t, -k3,3n -k2,2n -k1,1n \
    | awk -F, '!seen[$3","$2]++ {print $1}' | head -2 | paste -sd, > "$WORK/cores"
  [ -s "$WORK/cores" ] || { echo "could not pick two cores from lscpu -p"; return 1; }
  echo "bench cores: $(cat "$WORK/cores")"
  $PY -V
}

install() {
  rm -rf /tmp/site
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
    "$WORK"/wheels/*.whl || return 1
  rm -rf "$WORK/shim" && mkdir -p "$WORK/shim" && cp -r src/pairbert "$WORK/shim/pairbert"
  for stage in training export runtime benchmarks serving; do ln -s "$PWD/$stage" "$WORK/shim/pairbert/$stage"; done
  $PY - <<'PY' | tee "$OUT/versions.txt"
import onnxruntime, openvino, torch, transformers, tokenizers, numpy
print({m.__name__: m.__version__ for m in (onnxruntime, openvino, torch, transformers, tokenizers, numpy)})
import openvino as ov
print("openvino CPU capabilities:", ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
from pairbert.runtime.sessions import has_bf16_units
print("pairbert has_bf16_units:", has_bf16_units())
PY
}

export_bundle() {
  $PY -m pairbert export "$WORK/checkpoint" --out "$WORK/bundle" \
    --variants fp32,optimized,int8,openvino-fp32,openvino-bf16,openvino-int8 --force --skip-failed || return 1
  cp "$WORK/bundle/manifest.json" "$OUT/manifest.json"
  $PY -c "import json; m=json.load(open('$OUT/manifest.json')); \
[print(k, v['validated_on'], v['passed_parity'], v['parity']) for k, v in m['variants'].items()]"
}

pinned() { taskset -c "$(cat "$WORK/cores")" "$@"; }

bench() {
  pinned $PY -m pairbert bench "$WORK/bundle" --checkpoint "$WORK/checkpoint" --quick --threads 2 \
    --out "$OUT/bench-quick"
  local rc=$?
  cp "${PAIRBERT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/pairbert}/calibration.json" "$OUT/" 2>/dev/null
  cat "$OUT/bench-quick/results.md" 2>/dev/null | head -40
  return $rc
}

full() {
  local name
  mkdir -p "$OUT/full"
  for name in $FULL; do
    if (($(left) < 40)); then echo "--- $name: no time left"; continue; fi
    echo "--- $name ($(date -u +%T))"
    timeout $(($(left) - 5)) taskset -c "$(cat "$WORK/cores")" $PY -m pairbert.benchmarks.worker "$name" \
      --bundle "$WORK/bundle" --checkpoint "$WORK/checkpoint" --threads 2 \
      > "$OUT/full/$name.json" 2> "$OUT/full/$name.err" || tail -3 "$OUT/full/$name.err"
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); b=r.get('batch32x128',{}); \
print(r['contestant'], r.get('chosen',''), 'b1', {k: round(v['p50_ms'],2) for k,v in r['latency'].items()}, \
'32x128 p50', round(b.get('p50_ms',0),1), 'tput', {m: {k: round(v['pairs_per_s'],1) for k,v in t.items()} \
for m,t in r['throughput'].items()})" "$OUT/full/$name.json" 2>/dev/null
  done
}

peak() { pinned $PY -m pairbert.benchmarks.gemm_peak 384 2 1.5 | tee "$OUT/gemm_peak.json"; }

soak() {
  local name rc=0
  mkdir -p "$OUT/soak"
  for name in ${SOAK:-openvino-bf16 openvino-int8 openvino-fp32 int8 optimized}; do
    echo "--- $name ($(date -u +%T))"
    timeout 100 taskset -c "$(cat "$WORK/cores")" $PY -m pairbert.benchmarks.variant_soak "$WORK/bundle" "$name" \
      --threads 2 > "$OUT/soak/$name.json" 2> "$OUT/soak/$name.err"
    local code=$?
    ((code != 0)) && rc=1
    echo "exit $code $(tail -c 300 "$OUT/soak/$name.err" | tail -1)"
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ('provider', \
'predictions', 'seconds', 'worst_agreement', 'max_abs_prob_diff', 'passed')})" "$OUT/soak/$name.json" 2>/dev/null
  done
  return $rc
}

export PY OUT WORK CARRY END FULL PYTHONPATH="/tmp/site:$WORK/shim${PYTHONPATH:+:$PYTHONPATH}"
export -f left environment install export_bundle pinned soak bench full peak

step environment 30 environment
[ -d "$WORK/wheels" ] || step unpack 90 $PY benchmarks/gpu_carry.py unpack "$CARRY" --out "$WORK"
step install 90 install
step export 200 export_bundle
step soak 300 soak
step bench 240 bench
step full 300 full
step peak 60 peak
step pytest ${PYTEST_LIMIT:-90} $PY -m pytest ${PYTEST_ARGS:-tests/test_backends.py} -q -x -p no:cacheprovider

echo "=== summary"
for k in environment unpack install export soak bench full peak pytest; do
  echo "$k: ${STATUS[$k]:-not run}"
done | tee "$OUT/summary.txt"
exec >/dev/null 2>&1  # close the pipe to tee (it has printed everything), so log.txt is complete
sleep 1
tar -czf "$FINAL_OUT/cpu-check.tar.gz" -C "$OUT" .
cp "$OUT/log.txt" "$OUT/summary.txt" "$FINAL_OUT/" 2>/dev/null
