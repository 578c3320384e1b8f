# Two commands from a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv test test-slow test-all clean

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
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The slow end-to-end tests only; CI runs these after `make test`.
test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS); rc=$$?; [ $$rc -eq 5 ] && echo "no slow tests" || exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
