#!/usr/bin/env bash
# Fuse one dataset split with ivfuse and the classical baselines, then compare them with `ivfuse eval`.
#
#   benchmarks/fusion_quality.sh SPLIT_DIR OUT_DIR [extra `ivfuse eval` options]
#   e.g. benchmarks/fusion_quality.sh ../shared/datasets/MSRS/test runs/quality/MSRS --workers 2
#
# SPLIT_DIR holds ir/ and vi/. Fused images go to OUT_DIR/fused/<method>/ (reused when present:
# delete a folder to redo it), the report to OUT_DIR/report/. Set IVFUSE="python -m ivfuse"
# to run from a source checkout without installing.
set -euo pipefail
split=$1 out=$2
shift 2
ivfuse=${IVFUSE:-ivfuse}
methods=(cdiim average max laplacian dwt gff)
fused=()
for method in "${methods[@]}"; do
  $ivfuse fuse --method "$method" --ir "$split/ir" --vis "$split/vi" -o "$out/fused/$method" --skip-existing --quiet
  fused+=(--fused "$method=$out/fused/$method")
done
$ivfuse eval --ir "$split/ir" --vis "$split/vi" "${fused[@]}" -o "$out/report" --quiet "$@"
