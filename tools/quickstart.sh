#!/usr/bin/env bash
# The quickstart: trains a small Mask2Former (ResNet-18, from scratch) on the synthetic toy instance
# set on CPU, evaluates it (prints the COCO metrics table) and writes visualisations of its
# predictions on the toy validation images. About 10 minutes on 2 cores (MODEL_ZOO.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}
PY=${PY:-.venv/bin/python}
CONFIG=configs/mask2former/toy/maskformer2_R18_toy_instance.yaml
# a shorter schedule than the config's 1500 iterations: the poly decay ends at 800
ITERS=${QUICKSTART_ITERS:-800}
OUT=${QUICKSTART_OUT:-output/quickstart}
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}

echo "quickstart: [1/3] training $CONFIG on toy_instance_train ($ITERS iterations, CPU)"
"$PY" train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT/train" TEST.EVAL_PERIOD 0 SOLVER.MAX_ITER "$ITERS" \
  SOLVER.CHECKPOINT_PERIOD "$ITERS"
echo "quickstart: [2/3] evaluating on toy_instance_val"
"$PY" train_net.py --config-file "$CONFIG" --eval-only MODEL.WEIGHTS "$OUT/train/model_final.pth" OUTPUT_DIR "$OUT/eval"
echo "quickstart: [3/3] drawing predictions"
"$PY" demo/demo.py --config-file "$CONFIG" --input "$DETECTRON2_DATASETS/toy/val/images" --output "$OUT/demo" \
  --opts MODEL.WEIGHTS "$OUT/train/model_final.pth"
echo "quickstart: done. Metrics above; visualisations in $OUT/demo/"
