#!/usr/bin/env bash
# The quickstart: trains a small model on the synthetic toy set on CPU, evaluates it (prints the
# metrics table) and writes visualisations of its predictions on the toy validation images.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${VIRTUAL_ENV:+$VIRTUAL_ENV/bin/python}
PY=${PY:-.venv/bin/python}
CONFIG=configs/baselines/mask_rcnn_R18_FPN_toy.yaml
OUT=output/quickstart
export DETECTRON2_DATASETS=${DETECTRON2_DATASETS:-datasets}

echo "quickstart: [1/3] training $CONFIG on toy_instance_train (CPU)"
"$PY" train_net.py --config-file "$CONFIG" OUTPUT_DIR "$OUT/train" TEST.EVAL_PERIOD 0
echo "quickstart: [2/3] evaluating on toy_instance_val"
"$PY" train_net.py --config-file "$CONFIG" --eval-only MODEL.WEIGHTS "$OUT/train/model_final.pth" OUTPUT_DIR "$OUT/eval"
echo "quickstart: [3/3] drawing predictions"
"$PY" demo/demo.py --config-file "$CONFIG" --input "$DETECTRON2_DATASETS/toy/val/images" --output "$OUT/demo" \
  --opts MODEL.WEIGHTS "$OUT/train/model_final.pth"
echo "quickstart: done. Metrics above; visualisations in $OUT/demo/"
