# The README's two commands: `make quickstart` (the main job) and `make test`.
PYTHON := $(if $(VIRTUAL_ENV),$(VIRTUAL_ENV)/bin/python,.venv/bin/python)

# Configs timed by `make bench` (override: make bench BENCH_CONFIGS="a.yaml b.yaml" BENCH_ARGS=...).
BENCH_CONFIGS ?= configs/mask2former/coco/instance-segmentation/maskformer2_R50_bs16_50ep.yaml \
	configs/sotr/R50.yaml configs/transfiner/transfiner/mask_rcnn_R_50_FPN_3x.yaml \
	configs/cft/cft_r50-d32_512x512_ade20k.yaml
BENCH_ARGS ?= --threads 2 --input-size 800 1216 --runs 5 --warmup 1
BENCH_DIR ?= output/bench

.PHONY: install test test-fast quickstart bench

install:
	bash tools/install.sh

test: install
	$(PYTHON) -m pytest tests

test-fast: install
	$(PYTHON) -m pytest tests -m "not slow"

quickstart: install
	bash tools/quickstart.sh

bench: install
	@mkdir -p $(BENCH_DIR)
	@for c in $(BENCH_CONFIGS); do \
		$(PYTHON) tools/benchmark.py --config-file $$c $(BENCH_ARGS) --json $(BENCH_DIR)/$$(basename $$c .yaml).json || exit 1; \
	done
	$(PYTHON) tools/benchmark.py --op msdeform --threads 2 --json $(BENCH_DIR)/msdeform.json
	$(PYTHON) tools/benchmark.py --op roialign --threads 2 --runs 5 --warmup 1 --json $(BENCH_DIR)/roialign.json
