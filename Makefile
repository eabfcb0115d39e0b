# DePOTR: the two set-up commands of the README.
#   make main  - install (idempotent) and run the main job: train + evaluate on the embedded data
#   make test  - install (idempotent) and run the test suite
PY := .venv/bin/python

.PHONY: install main test
install:
	bash tools/install.sh

main: install
	$(PY) tools/main_job.py

test: install
	$(PY) -m pytest tests -q -ra
