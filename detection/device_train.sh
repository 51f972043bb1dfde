#!/usr/bin/env bash
# One-shot training run for a borrowed GPU machine (or any machine): render -> train -> export, in one command.
#
# Made for the project's device tool, whose sessions get a GPU for ~15 minutes in all and 10 minutes per command, with
# no network and no ultralytics installed there (docs/training.md, "Training on a borrowed GPU"). It renders a fresh
# training set with every core, trains yolo11n (from scratch, or fine-tuning INIT_WEIGHTS) time-boxed to
# TRAIN_MINUTES, exports it with a dynamic input size and copies the model package folder (model.onnx +
# manifest.json), the training record and the data set's recipe (dataset.json) to $OUT. Quantising and signing happen
# afterwards on the developer machine (docs/training.md step 4b), never on the borrowed one: the signing key does not
# travel.
#
# Settings (environment variables, defaults in brackets):
#   OUT               where the results go [required]
#   PY                the Python with torch [python3]
#   N_TILES           rendered training tiles [8000]      TILE_PX      tile size [640]
#   DATA_SEED         generator seed, never one of the held-out bases 800000/900000 [5]
#   EPOCHS            epochs [15]                         TRAIN_MINUTES time box for training [5]
#   BATCH             batch size [32]                     LOADERS      data-loader workers [8]
#   INIT_WEIGHTS      a .pt to fine-tune from (e.g. runs/rebuilt/crystal-yolo11n-1.1.0.pt from bench/pt_from_onnx.py)
#   MODEL_VERSION     version written into the manifest [1.3.0]
#   BLUR_RULE         the renderer's --blur-rule [fixed]  NEAR_OOF     the renderer's --near-oof [0]
#   ACTIVATION        detection.train's --activation: relu or silu [the model's own: silu for yolo11n]
#   RELU_LAYERS       detection.train's --relu-layers, e.g. 0-8,23: ReLU in those layers only [none]
#   DISTILL_FROM      detection.train's --distill-from: a teacher .pt (e.g. INIT_WEIGHTS itself with ACTIVATION=relu)
#   LR0, WARMUP_EPOCHS  detection.train's --lr0 / --warmup-epochs (e.g. 0.0004 and 0 to continue a trained model)
#   RENDER_WORKERS    render processes [all cores]        WORK         scratch folder [/tmp/cqc-device]
# Wheels: when a folder .whl exists (ultralytics, ultralytics-thop, polars, polars-runtime-32; see the docs), they are
# installed into $WORK/site first, without network or dependencies.
set -euo pipefail

: "${OUT:?set OUT to the folder that receives the results}"
PY=${PY:-python3}
N_TILES=${N_TILES:-8000}
TILE_PX=${TILE_PX:-640}
DATA_SEED=${DATA_SEED:-5}
EPOCHS=${EPOCHS:-15}
TRAIN_MINUTES=${TRAIN_MINUTES:-5}
BATCH=${BATCH:-32}
LOADERS=${LOADERS:-8}
INIT_WEIGHTS=${INIT_WEIGHTS:-}
MODEL_VERSION=${MODEL_VERSION:-1.3.0}
BLUR_RULE=${BLUR_RULE:-fixed}
NEAR_OOF=${NEAR_OOF:-0}
ACTIVATION=${ACTIVATION:-}
RELU_LAYERS=${RELU_LAYERS:-}
DISTILL_FROM=${DISTILL_FROM:-}
LR0=${LR0:-}
WARMUP_EPOCHS=${WARMUP_EPOCHS:-}
RENDER_WORKERS=${RENDER_WORKERS:-$(nproc)}
WORK=${WORK:-/tmp/cqc-device}

case "$DATA_SEED" in 8[0-9][0-9][0-9][0-9][0-9]|9[0-9][0-9][0-9][0-9][0-9])
    echo "DATA_SEED $DATA_SEED lies in the held-out seed ranges (800000+, 900000+); choose another" >&2; exit 2;;
esac
if [ -e "$WORK/runs/device" ]; then
    echo "$WORK/runs/device exists from an earlier run; remove it or set WORK" >&2; exit 2
fi
mkdir -p "$WORK" "$OUT"
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }

if [ -d .whl ] && compgen -G ".whl/*.whl" > /dev/null; then
    stamp "installing the carried wheels"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" .whl/*.whl
    export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
"$PY" - <<'EOF'
import torch, ultralytics
print("torch", torch.__version__, "cuda" if torch.cuda.is_available() else "cpu only", "| ultralytics", ultralytics.__version__)
EOF

stamp "rendering $N_TILES tiles of ${TILE_PX} px (seed $DATA_SEED, blur rule $BLUR_RULE, near-oof $NEAR_OOF, \
$RENDER_WORKERS workers)"
"$PY" -m detection.synthetic --out "$WORK/data" --n "$N_TILES" --seed "$DATA_SEED" --size "${TILE_PX}x${TILE_PX}" \
    --difficulty mixed --format mixed --split 0.95,0.05,0.0 --blur-rule "$BLUR_RULE" --near-oof "$NEAR_OOF" \
    --workers "$RENDER_WORKERS" > "$WORK/render.log"

stamp "training (at most $EPOCHS epochs or $TRAIN_MINUTES min)"
hours=$("$PY" -c "print(round($TRAIN_MINUTES / 60, 4))")
init=()
if [ -n "$INIT_WEIGHTS" ]; then init=(--init-weights "$INIT_WEIGHTS"); else init=(--model yolo11n.yaml); fi
if [ -n "$ACTIVATION" ]; then init+=(--activation "$ACTIVATION"); fi
if [ -n "$RELU_LAYERS" ]; then init+=(--relu-layers "$RELU_LAYERS"); fi
if [ -n "$DISTILL_FROM" ]; then init+=(--distill-from "$DISTILL_FROM"); fi
if [ -n "$LR0" ]; then init+=(--lr0 "$LR0"); fi
if [ -n "$WARMUP_EPOCHS" ]; then init+=(--warmup-epochs "$WARMUP_EPOCHS"); fi
"$PY" -m detection.train --data "$WORK/data/data.yaml" "${init[@]}" --imgsz "$TILE_PX" --epochs "$EPOCHS" \
    --batch "$BATCH" --workers "$LOADERS" --out "$WORK/runs/device" --data-seed "$DATA_SEED" --time-hours "$hours"

stamp "exporting (dynamic input size)"
"$PY" -m detection.export --weights "$WORK/runs/device/weights/best.pt" --out "$WORK/export/crystal-yolo11n" \
    --name crystal-yolo11n --version "$MODEL_VERSION" --imgsz 640 --dynamic-size --force
cp "$WORK/export/crystal-yolo11n/model.onnx" "$WORK/export/crystal-yolo11n/manifest.json" "$OUT/"
cp "$WORK/runs/device/training.json" "$WORK/runs/device/results.csv" "$WORK/data/dataset.json" "$OUT/"
stamp "done: $(ls "$OUT" | tr '\n' ' ')"
