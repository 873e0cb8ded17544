#!/usr/bin/env bash
# Fuse one dataset split with ivfuse and the classical baselines, then compare them with `ivfuse eval`.
#
#   benchmarks/fusion_quality.sh SPLIT_DIR OUT_DIR [extra `ivfuse eval` options]
#   e.g. benchmarks/fusion_quality.sh ../shared/datasets/MSRS/test runs/quality/MSRS --workers 2
#
# SPLIT_DIR holds ir/ and vi/. Fused images go to OUT_DIR/fused/<name>/ (reused when present:
# delete a folder to redo it), the report to OUT_DIR/report/. Environment:
#   WEIGHTS  space-separated NAME=FILE fusion weights to compare
#            (default: "ivfuse=src/ivfuse/weights/fusion.safetensors")
#   IVFUSE   the command (default: ivfuse; "python -m ivfuse" from a source checkout)
set -euo pipefail
split=$1 out=$2
shift 2
ivfuse=${IVFUSE:-ivfuse}
weights=${WEIGHTS:-ivfuse=src/ivfuse/weights/fusion.safetensors}
fused=()
fuse() {  # NAME, then `ivfuse fuse` options choosing the method
  local name=$1
  shift
  $ivfuse fuse "$@" --ir "$split/ir" --vis "$split/vi" -o "$out/fused/$name" --skip-existing --quiet
  fused+=(--fused "$name=$out/fused/$name")
}
for entry in $weights; do
  fuse "${entry%%=*}" --weights "${entry#*=}"
done
for method in average max laplacian dwt gff; do
  fuse "$method" --method "$method"
done
$ivfuse eval --ir "$split/ir" --vis "$split/vi" "${fused[@]}" -o "$out/report" --quiet "$@"
