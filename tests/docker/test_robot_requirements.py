"""``docker/requirements-robot.txt`` + the project with ``--no-deps`` is a complete robot install without torch.

What the robot image does (docker/robot.Dockerfile), in a fresh venv here: install the requirements file, then the
project's wheel with ``--no-deps``; then, in that venv, ``import torch`` fails and the robot side works — the
runtime runs an exported ONNX policy, the recorder's bag writer writes a bag that reads back, and the ROS-free parts
of ``stack.ros`` import with ROS refused (an import hook stands in for a machine without ROS). The nodes import
rclpy, which on a robot comes from the ROS install: the venv also gets the ROS 2 PyPI wheels (the `ros` extra's
``ros-*`` packages, standing in for it; one pip run with the requirements), and the policy, safety and recorder
nodes and their console scripts' entry points import. The simulator (``sim_robot_node``) is not robot-side: it
fails there, for want of mujoco.

Time (2-core shared machine at load average ~9, local package index): building the venv 27-47 s (~400 MB, left to
pytest's tmp_path retention), the three tests ~10 s.
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIREMENTS = REPO / "docker" / "requirements-robot.txt"
PACKAGES = ("stack", "sim", "robots", "policies")  # [tool.setuptools.packages.find] of pyproject.toml
PIP_TIMEOUT_S = 600

# Robot-side modules that need neither ROS nor torch nor a simulator.
PURE_MODULES = ("stack", "stack.runtime", "stack.ros", "stack.ros.topics", "stack.ros.messages", "stack.ros.safety",
                "stack.ros.observation", "stack.ros.episode_tracker", "stack.ros.bag", "stack.ros.deploy",
                "stack.cli", "robots", "robots.spec")
NODE_MODULES = ("stack.ros.common", "stack.ros.policy_node", "stack.ros.safety_node", "stack.ros.recorder_node")
NEVER_ON_A_ROBOT = ("torch", "mujoco", "gymnasium", "genesis")
# What a ROS install provides (the Python packages the nodes import from it).
ROS_PACKAGES = ("rclpy", "rcl_interfaces", "diagnostic_msgs", "sensor_msgs", "std_msgs", "std_srvs",
                "trajectory_msgs", "lifecycle_msgs", "rosgraph_msgs")


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=PIP_TIMEOUT_S, **kwargs)
    command = " ".join(map(str, cmd))
    assert r.returncode == 0, f"{command} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def _pip(python: Path) -> list[str]:
    """pip for ``python``'s environment: this interpreter's pip driving it (``--python``: no ensurepip in the new
    venv, seconds saved), or the venv's own pip when this interpreter has none."""
    try:
        importlib.metadata.version("pip")
        return [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    except importlib.metadata.PackageNotFoundError:
        _run([python, "-m", "ensurepip", "--default-pip"])
        return [str(python), "-m", "pip", "--disable-pip-version-check"]


def _project_wheel(out: Path) -> Path:
    """The project's wheel, built from a copy of its sources (building in the checkout would write build/ and
    *.egg-info into a tree other processes use). This interpreter's setuptools builds it when it is recent enough
    for the pyproject (no isolated build environment to install: seconds saved)."""
    src = out / "src"
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, src / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out / "wheel", src]
    try:
        if int(importlib.metadata.version("setuptools").split(".")[0]) >= 77:
            cmd.insert(4, "--no-build-isolation")
    except importlib.metadata.PackageNotFoundError:
        pass
    _run(cmd)
    (wheel,) = (out / "wheel").glob("r2s_stack-*.whl")
    return wheel


def _ros_wheels() -> list[str]:
    """The `ros` extra's ROS 2 PyPI wheels (rclpy, the rmw, the message packages): what a ROS install provides."""
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ros"]
    return [r for r in extra if r.startswith("ros-")]


@pytest.fixture(scope="module")
def robot_venv(tmp_path_factory) -> dict:
    """A fresh venv holding docker/requirements-robot.txt, the ROS 2 wheels where this platform has them, and the
    project (--no-deps): ``{"python": Path, "ros": bool}``."""
    root = tmp_path_factory.mktemp("robot_venv")
    _run([sys.executable, "-m", "venv", "--without-pip", root / "venv"])
    python = root / "venv" / "bin" / "python"
    pip = [*_pip(python), "install", "-q", "--no-compile"]
    # One pip run for both (seconds saved); the wheels are cp311 Linux only: without them, the requirements alone.
    ros = subprocess.run([*pip, "-r", REQUIREMENTS, *_ros_wheels()], capture_output=True, timeout=PIP_TIMEOUT_S)
    if ros.returncode != 0:
        _run([*pip, "-r", REQUIREMENTS])
    _run([*pip, "--no-deps", _project_wheel(root)])
    return {"python": python, "ros": ros.returncode == 0}


@pytest.fixture
def robot_python(robot_venv) -> Path:
    return robot_venv["python"]


def _in_venv(python: Path, code: str, cwd: Path) -> dict:
    """Run ``code`` in the robot venv (from ``cwd``, away from the checkout, so only the installed project imports);
    it prints one JSON object as its last line."""
    r = _run([python, "-c", textwrap.dedent(code)], cwd=cwd)
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_robot_venv_has_no_torch_and_imports_the_robot_side_without_it_or_ros(robot_python, tmp_path):
    out = _in_venv(robot_python, f"""
        import sys
        at_start = set(sys.modules)  # what the interpreter loaded before this (the ROS wheels' .pth hook among it)
        import importlib, importlib.abc, importlib.metadata, json

        # Every package of a ROS install: the ones the nodes name, and all that the ROS 2 wheels (ros-*) provide.
        ros = set({ROS_PACKAGES!r}) | {{pkg for pkg, dists in importlib.metadata.packages_distributions().items()
                                       if any(d.lower().startswith(("ros-", "ros_")) for d in dists)}}

        class NoRos(importlib.abc.MetaPathFinder):  # a machine without ROS: its packages do not import
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ros:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name.split(".")[0])
                return None

        sys.meta_path.insert(0, NoRos())
        try:
            import torch
            torch_error = None
        except ModuleNotFoundError as e:
            torch_error = e.name
        installed = {{d.metadata["Name"].lower() for d in importlib.metadata.distributions()}}
        for m in {PURE_MODULES!r}:
            importlib.import_module(m)
        from robots import get_robot
        spec = get_robot("so101")
        loaded = sorted({{k.split(".")[0] for k in set(sys.modules) - at_start}})
        node_errors = {{}}
        for m in {NODE_MODULES!r}:
            try:
                importlib.import_module(m)
                node_errors[m] = None
            except ModuleNotFoundError as e:
                node_errors[m] = e.name
        print(json.dumps({{"torch_error": torch_error, "installed": sorted(installed), "robot": spec.name,
                          "stack_file": sys.modules["stack"].__file__, "node_errors": node_errors,
                          "loaded": loaded, "ros": sorted(ros)}}))
    """, tmp_path)
    assert out["torch_error"] == "torch"
    assert "r2s-stack" in out["installed"]
    assert not set(NEVER_ON_A_ROBOT) & set(out["installed"]), out["installed"]
    assert "site-packages" in out["stack_file"], out["stack_file"]  # the installed project, not the checkout
    assert out["robot"] == "so101"
    # Nothing imported needed (or loaded) torch, a simulator or ROS.
    assert not {*NEVER_ON_A_ROBOT, *out["ros"]} & set(out["loaded"]), set(out["ros"]) & set(out["loaded"])
    # Without ROS, the nodes stop at the first ROS package they import (no other module is missing before it).
    for m in NODE_MODULES:
        assert out["node_errors"][m] in out["ros"], (m, out["node_errors"][m])


def test_robot_venv_runs_an_exported_policy_and_writes_a_bag(robot_python, tmp_path):
    from sim.tasks.reach import ReachTask
    from tests.ros.conftest import so101_policy

    rng = np.random.default_rng(0)
    w = (0.1 * rng.standard_normal((1, 18, 6))).astype(np.float32)
    policy = so101_policy(tmp_path / "linear.onnx", w, ReachTask.obs_layout, content_hash="linear-v1")
    obs = (0.1 * rng.standard_normal(18)).astype(np.float32)
    out = _in_venv(robot_python, f"""
        import json, sys
        import numpy as np
        from robots import get_robot
        from stack.runtime import OnnxPolicy
        from stack.ros.bag import BagWriter, read_bag
        from rosbags.typesys import Stores, get_typestore

        policy = OnnxPolicy.load({str(policy)!r}, get_robot("so101"))
        raw = policy.infer(np.array({obs.tolist()!r}, np.float32)[None, None])[0, 0]
        action = policy.step(np.array({obs.tolist()!r}))

        store = get_typestore(Stores.ROS2_KILTED)
        t = store.types
        msg_type = "std_msgs/msg/Float64MultiArray"
        bag = BagWriter({str(tmp_path / "bag")!r}, compression="zstd")
        bag.add_topic("/r2s/safety/executed", msg_type)
        for i in range(3):
            msg = t[msg_type](layout=t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
                              data=np.asarray(action, np.float64) + i)
            bag.write("/r2s/safety/executed", bytes(store.serialize_cdr(msg, msg_type)), 1_000 + i)
        bag.close()
        back = [list(m.data) for _, m in read_bag({str(tmp_path / "bag")!r})["/r2s/safety/executed"]]
        print(json.dumps({{"raw": raw.tolist(), "action": np.asarray(action).tolist(), "back": back,
                          "low": np.asarray(policy.command_low).tolist(),
                          "high": np.asarray(policy.command_high).tolist(),
                          "version": policy.meta.content_hash, "torch": "torch" in sys.modules}}))
    """, tmp_path)
    expected = obs @ w[0]
    assert out["version"] == "linear-v1" and not out["torch"]
    np.testing.assert_allclose(out["raw"], expected, rtol=1e-5, atol=1e-6)  # the graph, run by onnxruntime
    expected = np.clip(expected, out["low"], out["high"])  # the step's command: clamped to the joint limits
    np.testing.assert_allclose(out["action"], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["back"], [expected + i for i in range(3)], rtol=1e-5, atol=1e-6)


def test_robot_nodes_import_with_rclpy_and_without_torch(robot_venv, tmp_path):
    """With rclpy present (the PyPI wheels here, /opt/ros on a robot), the policy, safety and recorder nodes import,
    and so do their console scripts' entry points, loading neither torch nor a simulator."""
    if not robot_venv["ros"]:
        pytest.skip("the ROS 2 PyPI wheels do not install on this platform (cp311 Linux x86_64 only)")
    robot_python = robot_venv["python"]
    scripts = ("r2s-policy-node", "r2s-safety-node", "r2s-recorder-node")
    out = _in_venv(robot_python, f"""
        import importlib, importlib.metadata, json, sys
        for m in {NODE_MODULES!r}:
            importlib.import_module(m)
        eps = {{ep.name: ep for ep in importlib.metadata.entry_points(group="console_scripts")}}
        mains = {{name: callable(eps[name].load()) for name in {scripts!r}}}
        try:
            importlib.import_module("stack.ros.sim_robot_node")
            sim_error = None
        except ModuleNotFoundError as e:
            sim_error = e.name
        print(json.dumps({{"sim_error": sim_error, "mains": mains,
                          "loaded": sorted({{k.split(".")[0] for k in sys.modules}})}}))
    """, tmp_path)
    assert "rclpy" in out["loaded"]
    assert not set(NEVER_ON_A_ROBOT) & set(out["loaded"]), out["loaded"]
    assert out["sim_error"] == "mujoco"
    assert out["mains"] == dict.fromkeys(scripts, True)
    assert all((robot_python.parent / script).is_file() for script in scripts)
    r = _run([robot_python.parent / "r2s", "deploy", "--help"], cwd=tmp_path)
    assert "--policy" in r.stdout
