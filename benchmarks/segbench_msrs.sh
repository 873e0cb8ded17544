#!/usr/bin/env bash
# The segmentation benchmark on every labelled MSRS frame (docs/segbench.md), one command:
#
#   benchmarks/segbench_msrs.sh [MSRS_DIR] [OUT_DIR]      # defaults: ../shared/datasets/MSRS runs/segbench
#
# 1. links the labelled frames of train and test (only those are fused and used),
# 2. fuses them with the shipped network (semantic), its content-only network and two classical
#    baselines (gff, laplacian), those of KINDS only; existing outputs are kept, so a rerun resumes,
# 3. trains configs/segbench.toml per input kind (IR, visible, the four fused kinds) and seed in
#    $JOBS processes of one thread each (kinds split between them), then writes the report
#    (summary.md with the paired intervals, CSVs) into OUT_DIR/report with one more call that trains nothing.
#    Finished (kind, seed) runs are kept in OUT_DIR/report/runs: rerun the script to resume.
#
# Environment: SEEDS (default 0,1,2,3,4), JOBS (default 2), IVFUSE (default: ivfuse), KINDS (default:
# ir,vis,ivfuse-content,ivfuse-semantic,gff,laplacian; a subset fuses, trains and reports only those).
set -euo pipefail
MSRS=${1:-../shared/datasets/MSRS}
OUT=${2:-runs/segbench}
SEEDS=${SEEDS:-0,1,2,3,4}
JOBS=${JOBS:-2}
IVFUSE=${IVFUSE:-ivfuse}
CONFIG=configs/segbench.toml
IFS=, read -r -a kinds <<< "${KINDS:-ir,vis,ivfuse-content,ivfuse-semantic,gff,laplacian}"

for split in train test; do
    mkdir -p "$OUT/frames/$split/ir" "$OUT/frames/$split/vi"
    for label in "$MSRS/$split/label"/*; do
        stem=$(basename "${label%.*}")
        for modality in ir vi; do
            source=$(ls "$MSRS/$split/$modality/$stem".* 2>/dev/null | head -n 1)
            [ -n "$source" ] || { echo "error: $label: no $modality image named $stem" >&2; exit 2; }
            ln -sfn "$(realpath "$source")" "$OUT/frames/$split/$modality/$(basename "$source")"
        done
    done
    frames="$OUT/frames/$split"
    for kind in "${kinds[@]}"; do
        fuse=($IVFUSE fuse --ir "$frames/ir" --vis "$frames/vi" -o "$OUT/fused/$kind/$split" --skip-existing --quiet)
        case $kind in
            ir | vis) ;;
            ivfuse-semantic) "${fuse[@]}" ;;
            ivfuse-content) "${fuse[@]}" --weights src/ivfuse/weights/fusion_content.safetensors ;;
            gff | laplacian) "${fuse[@]}" --method "$kind" ;;
            *) echo "error: KINDS: unknown kind $kind (ir, vis, ivfuse-content, ivfuse-semantic, gff, laplacian)" >&2; exit 2 ;;
        esac
    done
done

folders() {
    case $1 in
        ir) echo "$OUT/frames/train/ir $OUT/frames/test/ir" ;;
        vis) echo "$OUT/frames/train/vi $OUT/frames/test/vi" ;;
        *) echo "$OUT/fused/$1/train $OUT/fused/$1/test" ;;
    esac
}
bench() {  # bench KIND... : one seg-bench call over these kinds
    local arguments=()
    for kind in "$@"; do
        # shellcheck disable=SC2046
        arguments+=(--input "$kind" $(folders "$kind"))
    done
    $IVFUSE seg-bench --config "$CONFIG" --seeds "$SEEDS" --train-labels "$MSRS/train/label" \
        --test-labels "$MSRS/test/label" -o "$OUT/report" --quiet "${arguments[@]}"
}
pids=()
for ((job = 0; job < JOBS; job++)); do
    mine=()
    for ((index = job; index < ${#kinds[@]}; index += JOBS)); do mine+=("${kinds[index]}"); done
    [ ${#mine[@]} -gt 0 ] || continue
    bench "${mine[@]}" > "$OUT/job$job.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
[ $status -eq 0 ] || { echo "error: a seg-bench job failed; see $OUT/job*.log" >&2; exit 1; }
bench "${kinds[@]}"
echo "benchmarks/segbench_msrs.sh: $((SECONDS / 3600)) h $((SECONDS % 3600 / 60)) min"
