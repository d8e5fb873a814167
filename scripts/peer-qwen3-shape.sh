#!/usr/bin/env bash
# specd against llama.cpp's llama-server on a real model shape: a synthetic pair of Qwen3-0.6B's
# shape (hidden 1024, 16 query / 8 key-value heads of 128, MLP 3072, vocabulary 151,936, tied
# embeddings; random weights, Qwen3's tokenizer), written once by `specd models synth`, then
# `specd bench peer` at Q8_0 / --dtype q8 (the GGUF writer converts it; llama-quantize quantizes it).
#
#   eval "$(bash scripts/llama-server-debian.sh)"
#   bash scripts/peer-qwen3-shape.sh [bench peer options, e.g. --rounds 3 --json out.json]
#
# Environment: QWEN3_SHAPE_LAYERS (target blocks, default 4), QWEN3_SHAPE_DRAFT_LAYERS (default 1),
# QWEN3_SHAPE_DIR (where the pair is kept between runs; default $TMPDIR/specd-qwen3-0.6b-shape-L<layers>).
# Defaults of the comparison: --quant q8 --no-head --policies none,fixed:4 --prompts 4
# --max-tokens 64 --rounds 1; later options override them.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
layers=${QWEN3_SHAPE_LAYERS:-4}
draft_layers=${QWEN3_SHAPE_DRAFT_LAYERS:-1}
dir=${QWEN3_SHAPE_DIR:-${TMPDIR:-/tmp}/specd-qwen3-0.6b-shape-L$layers}
specd=(node "$here/bin/specd.js")
if [ ! -f "$dir/target/config.json" ]; then
  rm -rf "$dir"
  "${specd[@]}" models synth --preset qwen3-0.6b --layers "$layers" --draft-layers "$draft_layers" --out "$dir"
fi
exec "${specd[@]}" bench peer --target "$dir/target" --draft "$dir/draft" --no-head --quant q8 \
  --policies none,fixed:4 --prompts 4 --max-tokens 64 --rounds 1 "$@"
