# Two commands from a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The default suite runs on every core (pytest-xdist; a test file stays on one worker, so its
# module-scoped fixtures are built once). The slow suite runs serially: it holds timed sections.
PYTEST_WORKERS ?= auto

export TF_CPP_MIN_LOG_LEVEL := 2

WORKDIR ?= workdir
DATA_DIR ?= $(WORKDIR)/tensorflow_datasets
DEMO_DIR ?= $(WORKDIR)/demo

.PHONY: venv test test-slow demo clean

venv: $(STAMP)

# Re-installs only when the pinned requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# The default suite: fast tests only (the `slow` marker is excluded in pyproject.toml).
test: $(STAMP)
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# The slow end-to-end tests only; CI runs these after `make test`. Collecting none (pytest's exit 5)
# fails: it would mean the `slow` marker was lost, not that there is nothing to run.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

# The main job on the built-in synthetic data: build it, train, evaluate, export, predict.
# Re-running is cheap: the dataset and the finished checkpoint are reused.
DEMO_IMAGE := $(firstword $(wildcard ../shared/data/images/*.jpg))
demo: $(STAMP)
	$(PY) tools/build_dataset.py --dataset=c2f_synthetic/procedural --data_dir=$(DATA_DIR)
	$(PY) tools/train.py --config=configs/synthetic_cpu.py --workdir=$(DEMO_DIR) \
		--config.data.data_dir=$(abspath $(DATA_DIR))
	$(PY) tools/evaluate.py --workdir=$(DEMO_DIR) --baseline --root_depth=limbs --output=$(DEMO_DIR)/eval.json
	$(PY) tools/evaluate.py --workdir=$(DEMO_DIR) --baseline --flip_test --output=$(DEMO_DIR)/eval_flip.json
	$(PY) tools/export.py --workdir=$(DEMO_DIR) --output=$(DEMO_DIR)/saved_model
	$(PY) tools/demo_image.py --data_dir=$(abspath $(DATA_DIR)) --image="$(DEMO_IMAGE)" --output=$(DEMO_DIR)/demo_input.png
	$(PY) tools/predict.py --model=$(DEMO_DIR)/saved_model --image=$(DEMO_DIR)/demo_input.png \
		--output_json=$(DEMO_DIR)/prediction.json --output_png=$(DEMO_DIR)/prediction.png
	@echo "Dataset:     $(abspath $(DATA_DIR))"
	@echo "Checkpoints: $(abspath $(DEMO_DIR))/checkpoints"
	@echo "TensorBoard: $(abspath $(DEMO_DIR))/tensorboard"
	@echo "Metrics:     $(abspath $(DEMO_DIR))/eval.json (limb-length and ground-truth root), eval_flip.json (flip test)"
	@echo "SavedModel:  $(abspath $(DEMO_DIR))/saved_model"
	@echo "Prediction:  $(abspath $(DEMO_DIR))/prediction.json and prediction.png"

clean:
	rm -rf $(VENV) build *.egg-info
