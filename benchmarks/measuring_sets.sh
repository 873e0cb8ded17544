#!/usr/bin/env bash
# The fusion comparison on the three measuring sets, one command:
#
#   benchmarks/measuring_sets.sh [DATASETS] [OUT_DIR]
#   (defaults: ../shared/datasets and runs/measuring_sets)
#
# MSRS: all 316 pairs of MSRS/test. TNO: all 17 pairs of TNO/test. RoadScene: the 43 pairs of
# RoadScene/splits/dev.txt (fused from RoadScene/train, evaluated on the listed names only; the
# shipped weights were trained without them: [data] train_lists). Each set goes through
# benchmarks/fusion_quality.sh (ivfuse networks in WEIGHTS plus the classical baselines) and prints
# its table of the six seed metrics and Nabf; reports land in OUT_DIR/<set>/report/.
set -euo pipefail
data=${1:-../shared/datasets} out=${2:-runs/measuring_sets}
here=$(dirname "$0")
metrics=Qabf,EN,PSNR,SF,SD,VIF,Nabf
for set in MSRS TNO RoadScene; do
  echo "## $set"
  case $set in
    MSRS) "$here/fusion_quality.sh" "$data/MSRS/test" "$out/MSRS" --metrics $metrics --grid-images 0 ;;
    TNO) "$here/fusion_quality.sh" "$data/TNO/test" "$out/TNO" --metrics $metrics --grid-images 0 ;;
    RoadScene) "$here/fusion_quality.sh" "$data/RoadScene/train" "$out/RoadScene" --metrics $metrics --grid-images 0 \
                 --images "$data/RoadScene/splits/dev.txt" ;;
  esac
done
