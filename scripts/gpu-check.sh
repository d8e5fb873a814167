#!/usr/bin/env bash
# The GPU check: WebGPU correctness and speed on a GPU host, the CPU measured beside it in the same
# run. Writes JSON results and a log to $OUT (default: bench/results/gpu); each step has its own
# time limit, so a slow or failing step still leaves the others' results.
#
# On a GPU host with a Vulkan driver, Node.js 20 and this checkout built (`npm ci`):
#   bash scripts/gpu-check.sh                 (ONLY="latency-pair synth ..." runs only those steps)
#
# Steps:
#  1. the WebGPU test suites (rollback, greedy exactness, fused graphs) on the real GPU;
#  2. `bench latency`: bundled target and draft, CPU and WebGPU, exported and fused graphs; the
#     CPU's exported and in-place graphs at contexts 128, 512 and 1000;
#  3. `bench offline` on the bundled pair: WebGPU (draft on the GPU, and on the CPU), and the CPU;
#  4. a synthetic 24-layer, 2048-wide pair (`models synth`): latency on CPU and WebGPU, and the
#     offline benchmark on WebGPU and on the CPU.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu-check.log"
: > "$LOG"
SPECD="node bin/specd.js"
SYNTH=${SYNTH_DIR:-/tmp/specd-synth}
PROMPTS=${PROMPTS:-10}
step() { # step NAME SECONDS CMD...; ONLY="name ..." runs just those steps
  local name=$1 limit=$2; shift 2
  [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $name "* ]] || return 0
  echo "== $name ($(date -u +%H:%M:%S), limit ${limit}s): $*" | tee -a "$LOG"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v 'Warning: \|XDG_RUNTIME_DIR\|VerifyEachNodeIsAssignedToAnEp' | tee -a "$LOG"
  echo "-- $name: exit ${PIPESTATUS[0]} after $((SECONDS - t0)) s" | tee -a "$LOG"
}

step machine 30 bash -c 'nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; nproc; node --version; node bin/specd.js doctor'
step tests 240 env SPECD_REQUIRE_WEBGPU=1 node --test --test-concurrency=1 --test-name-pattern='WebGPU' \
  dist/test/model/engine-rollback.test.js dist/test/model/engine-greedy.test.js dist/test/model/engine-graph.test.js
step latency-pair 120 $SPECD bench latency --devices cpu,webgpu --graphs exported,fused --tokens 128 --json "$OUT/gpu-latency-pair.json"
# The KV cache written in place against the exported graph on this host's CPU, by context length.
step latency-contexts 180 $SPECD bench latency --devices cpu --graphs exported,inplace --contexts 128,512,1000 --tokens 64 --json "$OUT/cpu-latency-contexts.json" --chart "$OUT/cpu-latency-contexts.svg"
POLICIES=none,fixed:2,fixed:3,fixed:4,fixed:6,specdec++
step offline-pair-webgpu 150 $SPECD bench offline --device webgpu --dataset gsm8k --prompts "$PROMPTS" --policies "$POLICIES" --json "$OUT/gpu-offline-pair-webgpu.json"
step offline-pair-webgpu-cpu-draft 150 $SPECD bench offline --device webgpu --draft-device cpu --dataset gsm8k --prompts "$PROMPTS" --policies "$POLICIES" --json "$OUT/gpu-offline-pair-webgpu-cpudraft.json"
step offline-pair-cpu 150 $SPECD bench offline --device cpu --dataset gsm8k --prompts "$PROMPTS" --policies "$POLICIES" --json "$OUT/gpu-offline-pair-cpu.json"
[ -d "$SYNTH/target" ] || ONLY=${ONLY:+$ONLY synth} step synth 240 $SPECD models synth --out "$SYNTH" --layers 24 --width 2048 --heads 16 --draft-layers 2
step latency-synth 240 $SPECD bench latency --target "$SYNTH/target" --draft "$SYNTH/draft" --devices cpu,webgpu --tokens 24 --draft-threads 16 --json "$OUT/gpu-latency-synth.json"
step offline-synth-webgpu 240 $SPECD bench offline --device webgpu --target "$SYNTH/target" --draft "$SYNTH/draft" --no-head --dataset gsm8k --prompts 5 --max-tokens 64 \
  --policies none,fixed:2,fixed:4,fixed:6,fixed:8,confidence:0.6 --json "$OUT/gpu-offline-synth-webgpu.json"
step offline-synth-cpu 240 $SPECD bench offline --device cpu --target "$SYNTH/target" --draft "$SYNTH/draft" --no-head --draft-threads 16 --dataset gsm8k --prompts 2 --max-tokens 32 \
  --policies none,fixed:4 --json "$OUT/gpu-offline-synth-cpu.json"
echo "done $(date -u +%H:%M:%S)" | tee -a "$LOG"
