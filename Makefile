# Two commands do everything on a fresh machine:  make demo   and   make test
# Each creates .venv when missing and installs what it needs (torch first, from the pinned CPU/standard build).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
# Headless MuJoCo rendering for videos: EGL (Mesa on CPU machines, the driver on GPU machines).
export MUJOCO_GL ?= egl

.PHONY: demo test install lint bench-sim clean

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

lint: $(VENV)/.train-installed
	$(VENV)/bin/ruff check stack sim robots policies tests

bench-sim: $(VENV)/.train-installed
	$(VENV)/bin/r2s bench sim

clean:
	rm -rf $(VENV) runs .pytest_cache
