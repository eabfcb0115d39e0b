# DePOTR: the two set-up commands of the README.
#   make main  - install (idempotent), train + evaluate on the embedded synthetic data (CPU),
#                then draw predicted skeletons on a few val images and print the AP beside the
#                mean-pose baseline with the error breakdown (output/.../analysis); run again, it
#                continues a killed run or re-evaluates a finished one (--resume: train_net.py
#                refuses a new run in an earlier run's folder; a changed config is logged as a warning)
#   make test  - install (idempotent) and run the test suite
#   make lint  - install (idempotent), then ruff: the linter, and the formatter as a check (ruff.toml);
#                `ruff format . && ruff check --fix .` applies them
# DEPOTR_VENV=DIR uses (and installs into) another environment; DEPOTR_DETECTRON2=SOURCE installs
# that Detectron2 instead of v0.6 (tools/install.sh, README "Install").
PY := $(or $(DEPOTR_VENV),.venv)/bin/python
MAIN_CONFIG := configs/depotr_hm_r18_synthetic.yaml
MAIN_OUTPUT := output/depotr_hm_r18_synthetic

.PHONY: install lint main test
install:
	bash tools/install.sh

main: install
	$(PY) train_net.py --config-file $(MAIN_CONFIG) --resume OUTPUT_DIR $(MAIN_OUTPUT)
	$(PY) tools/visualize_predictions.py --config-file $(MAIN_CONFIG) --output $(MAIN_OUTPUT)/predictions \
		MODEL.WEIGHTS $(MAIN_OUTPUT)/model_final.pth
	$(PY) tools/analyze_results.py --config-file $(MAIN_CONFIG) OUTPUT_DIR $(MAIN_OUTPUT)

test: install
	$(PY) -m pytest tests -q -ra

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
