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

$(VENV)/bin/activate:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# Stamp files record what has been installed, so a second `make` is instant and a changed pyproject reinstalls.
$(VENV)/.train-installed: pyproject.toml | $(VENV)/bin/activate
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e '.[dev]' --config-settings editable_mode=compat
	@./scripts/ensure-gl.sh || true
	touch $@

$(VENV)/.ros-installed: $(VENV)/.train-installed
	$(PIP) install -q -e '.[dev,ros]' --config-settings editable_mode=compat || echo "warning: the ROS 2 wheels did not install; ROS tests will skip"
	touch $@

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
