# Two commands do everything on a fresh machine:  make demo   and   make test
# Each creates .venv when missing and installs what it needs (torch first, from the pinned CPU/standard build).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
# Headless MuJoCo rendering for videos: EGL (Mesa on CPU machines, the driver on GPU machines).
export MUJOCO_GL ?= egl

.PHONY: demo test test-genesis install lint bench-sim clean

LOG    := $(VENV)/install.log
# Installs are quiet: pip's and the build backend's output goes to $(LOG), shown only when a step fails.
QUIET   = >> $(LOG) 2>&1 || (tail -40 $(LOG); exit 1)

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	@echo "installing into $(VENV) (log: $(LOG))"
	@$(PIP) install -q --upgrade pip $(QUIET)

# Stamp files record what has been installed, so a second `make` is instant and a changed pyproject reinstalls.
$(VENV)/.train-installed: pyproject.toml | $(VENV)/bin/activate
	@echo "pip install $(TORCH); pip install -e '.[dev,dist,sysid]'"
	@$(PIP) install -q $(TORCH) $(QUIET)
	@$(PIP) install -q -e '.[dev,dist,sysid]' $(QUIET)
	@./scripts/ensure-gl.sh || true
	@touch $@

$(VENV)/.ros-installed: $(VENV)/.train-installed
	@echo "pip install -e '.[dev,ros]' (the ROS 2 wheels)"
	@$(PIP) install -q -e '.[dev,ros]' >> $(LOG) 2>&1 || echo "warning: the ROS 2 wheels did not install (see $(LOG)); ROS tests will skip"
	@touch $@

install: $(VENV)/.ros-installed

demo: $(VENV)/.ros-installed
	OMP_NUM_THREADS=1 $(VENV)/bin/r2s demo

test: $(VENV)/.ros-installed
	OMP_NUM_THREADS=1 $(PY) -m pytest -q tests

# The genesis extra lives in its own venv: genesis-world would downgrade pillow and plotly in the main one (it keeps
# the pinned mujoco and torch). Opt-in (≈ 2 min install, 4.6 GB; the tests ≈ 2 min on a cold kernel cache, ≈ 1 min warm).
GVENV := .venv-genesis
GLOG  := $(GVENV)/install.log
$(GVENV)/.genesis-installed: pyproject.toml
	@test -x $(GVENV)/bin/python || $(PYTHON) -m venv $(GVENV)
	@echo "pip install $(TORCH); pip install -e '.[dev,genesis]' into $(GVENV) (log: $(GLOG))"
	@$(GVENV)/bin/python -m pip install -q --upgrade pip >> $(GLOG) 2>&1 || (tail -40 $(GLOG); exit 1)
	@$(GVENV)/bin/python -m pip install -q $(TORCH) >> $(GLOG) 2>&1 || (tail -40 $(GLOG); exit 1)
	@$(GVENV)/bin/python -m pip install -q -e '.[dev,genesis]' >> $(GLOG) 2>&1 || (tail -40 $(GLOG); exit 1)
	@touch $@

test-genesis: $(GVENV)/.genesis-installed
	OMP_NUM_THREADS=1 $(GVENV)/bin/python -m pytest -q -m genesis tests/sim/test_genesis.py tests/stack/test_train_genesis.py

lint: $(VENV)/.train-installed
	$(VENV)/bin/ruff check stack sim robots policies tests

bench-sim: $(VENV)/.train-installed
	$(VENV)/bin/r2s bench sim

clean:
	rm -rf $(VENV) runs .pytest_cache
