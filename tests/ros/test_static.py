"""What can be checked without running nodes: no torch in the robot-side modules, launch files and parameter files
that name only things that exist."""

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
LAUNCH = REPO / "launch"
NODE_MODULES = ("stack.ros.policy_node", "stack.ros.safety_node", "stack.ros.sim_robot_node",
                "stack.ros.recorder_node")


def test_ros_modules_never_import_torch():
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    mods = [*NODE_MODULES, "stack.ros.episode_node", "stack.ros.keyboard_operator", "stack.ros.deploy",
            "stack.ros.bag", "stack.ros.safety", "stack.ros.common", "stack.ros.messages",
            "stack.ros.observation", "stack.ros.episode_tracker",
            "stack.runtime", "sim.registry", "sim.tasks.reach"]
    code = ("import sys\n" + "".join(f"import {m}\n" for m in mods)
            + "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
            + "assert not bad, f'torch imported: {bad[:5]}'\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr


def _launch_files():
    return sorted(LAUNCH.glob("*.launch.py"))


def test_launch_files_compile_and_name_existing_executables_and_parameter_files():
    from stack.ros.deploy import CONSOLE_SCRIPTS

    files = _launch_files()
    assert {f.name for f in files} == {"robot.launch.py", "sim.launch.py"}
    helper = ast.parse((LAUNCH / "r2s_graph.py").read_text())
    compile(helper, "r2s_graph.py", "exec")
    executables = next(ast.literal_eval(node.value) for node in ast.walk(helper)
                       if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "EXECUTABLES")
    # Every executable the launch files can start is a console script of ours whose entry point exists.
    from stack.ros import topics

    node_names = {topics.POLICY_NODE, topics.SAFETY_NODE, topics.SIM_ROBOT_NODE, topics.RECORDER_NODE,
                  topics.EPISODE_NODE}
    for node_name, exe in executables.items():
        assert exe in CONSOLE_SCRIPTS, f"{exe} is not one of the console scripts {sorted(CONSOLE_SCRIPTS)}"
        assert node_name in node_names
        module, func = CONSOLE_SCRIPTS[exe].split(":")
        assert (REPO / (module.replace(".", "/") + ".py")).is_file()
        assert f"def {func}(" in (REPO / (module.replace(".", "/") + ".py")).read_text()
    started = {}
    for f in files:
        tree = ast.parse(f.read_text())
        compile(tree, str(f), "exec")
        names = [c.args[0].value for c in ast.walk(tree)
                 if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "r2s_node"]
        assert names, f"{f.name} starts no node"
        for n in names:
            assert n in executables, f"{f.name} starts {n!r}, which has no executable"
        started[f.name] = names
        # Parameter files named as literals beside the launch file exist.
        for c in ast.walk(tree):
            if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.endswith(".yaml"):
                assert (LAUNCH / c.value).is_file(), f"{f.name} names {c.value}, which does not exist"
    assert started["robot.launch.py"] == ["r2s_recorder", "r2s_episodes", "r2s_safety", "r2s_policy"]
    assert started["sim.launch.py"] == ["r2s_sim_robot", "r2s_recorder", "r2s_safety", "r2s_policy"]


def test_every_node_is_an_installed_console_script():
    import shutil
    import tomllib

    from stack.ros.deploy import CONSOLE_SCRIPTS

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for exe, target in CONSOLE_SCRIPTS.items():
        assert scripts.get(exe) == target, f"pyproject.toml [project.scripts] {exe} = {scripts.get(exe)!r}"
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "r2s").exists():  # installed into this environment: the node scripts are there beside it
        for exe in CONSOLE_SCRIPTS:
            assert shutil.which(exe, path=str(bin_dir)), f"{exe} not installed in {bin_dir}"


def test_parameter_files_set_only_declared_parameters():
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    from stack.ros import topics

    modules = {topics.POLICY_NODE: "stack.ros.policy_node", topics.SAFETY_NODE: "stack.ros.safety_node",
               topics.SIM_ROBOT_NODE: "stack.ros.sim_robot_node", topics.RECORDER_NODE: "stack.ros.recorder_node",
               topics.EPISODE_NODE: "stack.ros.episode_node"}
    for path in LAUNCH.glob("*.yaml"):
        data = yaml.safe_load(path.read_text())
        assert set(data) <= set(modules), f"{path.name}: unknown node sections {set(data) - set(modules)}"
        for node, section in data.items():
            declared = set(importlib.import_module(modules[node]).PARAMS) | {"autostart", "use_sim_time"}
            unknown = set(section["ros__parameters"]) - declared
            assert not unknown, f"{path.name}: {node} has no parameter(s) {sorted(unknown)}"


@pytest.mark.parametrize("module", ["stack.ros.policy_node", "stack.ros.safety_node", "stack.ros.sim_robot_node",
                                    "stack.ros.recorder_node", "stack.ros.episode_node"])
def test_node_help_lists_its_parameters_without_starting(module):
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    code = f"import sys; from {module} import main; sys.exit(main(['x', '--help']))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in importlib.import_module(module).PARAMS:
        assert f"  {name} (default" in r.stdout


def test_r2s_deploy_refuses_a_missing_policy_file(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    r = subprocess.run([sys.executable, "-m", "stack", "deploy", "--policy", str(tmp_path / "nope.onnx"), "--sim"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "nope.onnx: no such file" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr


def _dict_params(call: ast.Call) -> dict[str, ast.expr]:
    """The literal-keyed parameter dicts an ``r2s_node(name, [params, {...}])`` call passes."""
    out = {}
    for node in ast.walk(call):
        if isinstance(node, ast.Dict):
            out.update({k.value: v for k, v in zip(node.keys, node.values) if isinstance(k, ast.Constant)})
    return out


def test_launch_arguments_are_declared_and_reach_declared_node_parameters():
    tree = ast.parse((LAUNCH / "sim.launch.py").read_text())
    declared = {c.args[0].value for c in ast.walk(tree)
                if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "DeclareLaunchArgument"}
    used = {c.args[0].value for c in ast.walk(tree)
            if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "LaunchConfiguration"}
    assert used <= declared, f"sim.launch.py reads undeclared launch argument(s) {sorted(used - declared)}"
    sim = next(c for c in ast.walk(tree) if isinstance(c, ast.Call) and getattr(c.func, "id", "") == "r2s_node"
               and c.args[0].value == "r2s_sim_robot")
    params = _dict_params(sim)
    # robot_overlay reaches the sim robot node as a string parameter even when empty (an untyped "" would be read as
    # YAML, i.e. no value): ParameterValue(LaunchConfiguration("robot_overlay"), value_type=str).
    value = params.get("robot_overlay")
    assert isinstance(value, ast.Call) and value.func.id == "ParameterValue", ast.dump(value) if value else params
    assert value.args[0].args[0].value == "robot_overlay"
    assert {k.arg: getattr(k.value, "id", None) for k in value.keywords} == {"value_type": "str"}
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    from stack.ros.sim_robot_node import PARAMS

    assert set(params) <= set(PARAMS), f"unknown sim robot parameter(s) {sorted(set(params) - set(PARAMS))}"
