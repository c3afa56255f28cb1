"""docker/compose.yaml without Docker: its services name real images, scripts, files and parameters, share one DDS
setup; and its two commands, run here as plain processes (the containers' paths mapped into the checkout), make a
working sim-in-the-loop graph — the sim robot as the `sim` service starts it (autostart), its health check passing
once joint_states flow, then the robot service's `r2s deploy` (no --sim) driving it and recording a bag."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.docker.test_dockerfiles import parse_dockerfile

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
IMAGE_ROOT = "/opt/r2s"  # WORKDIR of both images: the copied checkout


def interpolate(value: str) -> str:
    """Compose's ``${VAR:-default}`` with every variable unset (the defaults the file documents)."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", value)


def _sim_params() -> set[str]:
    """Parameter names of the sim robot node (its PARAMS dict, read without importing rclpy or mujoco)."""
    tree = ast.parse((REPO / "stack" / "ros" / "sim_robot_node.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "PARAMS" for t in node.targets):
            return {k.value for k in node.value.keys}
    raise AssertionError("no PARAMS in sim_robot_node.py")


def _ros_args(command: list[str]) -> tuple[list[str], dict[str, str]]:
    files, params = [], {}
    for flag, value in zip(command, command[1:]):
        if flag == "--params-file":
            files.append(value)
        elif flag == "-p":
            key, _, v = interpolate(value).partition(":=")
            params[key] = v
    return files, params


# ---- the file ---------------------------------------------------------------------------------------------------
def test_services_build_the_two_images_from_the_repository():
    assert set(SERVICES) == {"sim", "robot"}
    for service, dockerfile in (("sim", "docker/train.Dockerfile"), ("robot", "docker/robot.Dockerfile")):
        build = SERVICES[service]["build"]
        assert (REPO / "docker" / build["context"]).resolve() == REPO
        assert build["dockerfile"] == dockerfile and (REPO / dockerfile).is_file()
    assert interpolate(SERVICES["robot"]["build"]["args"]["ROS_DISTRO"]) in ("jazzy", "kilted")


def test_both_services_share_one_dds_setup():
    sim, robot = SERVICES["sim"], SERVICES["robot"]
    assert sim["environment"] == robot["environment"]  # the same anchor: one ROS_DOMAIN_ID, one RMW
    env = {k: interpolate(str(v)) for k, v in sim["environment"].items()}
    assert 0 <= int(env["ROS_DOMAIN_ID"]) <= 101
    assert env["RMW_IMPLEMENTATION"] == "rmw_fastrtps_cpp"
    # Host network (discovery and UDP as between processes) and host IPC (Fast DDS shared memory across containers).
    for service in (sim, robot):
        assert service["network_mode"] == "host" and service["ipc"] == "host"


def test_sim_service_runs_the_sim_robot_node_with_real_parameters():
    sim = SERVICES["sim"]
    (script,) = sim["entrypoint"]
    assert PYPROJECT_SCRIPTS[script] == "stack.ros.sim_robot_node:main"
    files, params = _ros_args(sim["command"])
    assert files and all((REPO / f.removeprefix(IMAGE_ROOT + "/")).is_file() for f in files), files
    assert params["autostart"] == "true"  # nothing drives its lifecycle in that container
    assert set(params) - {"autostart"} <= _sim_params(), params
    health = [interpolate(w) for w in sim["healthcheck"]["test"][1:]]
    assert health[0] == "python" and (REPO / health[1].removeprefix(IMAGE_ROOT + "/")).is_file(), health


def test_robot_service_deploys_a_mounted_policy_once_the_sim_is_healthy():
    robot = SERVICES["robot"]
    assert robot["depends_on"]["sim"]["condition"] == "service_healthy"
    mounts = {v.split(":")[1]: v.split(":")[2:] for v in map(interpolate, robot["volumes"])}
    assert mounts["/policies"] == ["ro"] and "/bags" in mounts
    command = [interpolate(w) for w in robot["command"]]
    assert command[0] == "--policy" and command[1].startswith("/policies/")
    deploy_source = (REPO / "stack" / "ros" / "deploy.py").read_text()
    for flag in (w for w in command if w.startswith("--")):
        assert f'p.add_argument("{flag}"' in deploy_source, flag
    # The image's working directory is the bag volume (the recorder writes r2s_bag_<UTC time> there).
    workdirs = [i.args for i in parse_dockerfile(REPO / "docker" / "robot.Dockerfile") if i.keyword == "WORKDIR"]
    assert workdirs[-1] == "/bags"


PYPROJECT_SCRIPTS = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]


# ---- its commands, as processes -----------------------------------------------------------------------------------
def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"console script {name} is not installed next to {sys.executable} (pip install -e .)")
    return str(path)


def _to_host(word: str, policies: Path) -> str:
    word = interpolate(word)
    return word.replace(IMAGE_ROOT, str(REPO)).replace("/policies", str(policies))


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow  # 17-25 s on the shared 2-core machine: a sim robot and the deployed graph over real DDS
def test_compose_commands_run_sim_in_the_loop_as_processes(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    pytest.importorskip("mujoco", reason="the sim robot needs mujoco")
    from sim.tasks.reach import ReachTask
    from stack.ros import topics
    from stack.ros.bag import read_bag
    from tests.ros.conftest import so101_policy

    policies, bags = tmp_path / "policies", tmp_path / "bags"
    policies.mkdir()
    bags.mkdir()
    w = np.zeros((1, 18, 6), np.float32)
    w[0, :6] = np.eye(6)  # hold: command the measured joint positions
    so101_policy(policies / "policy.onnx", w, ReachTask.obs_layout, content_hash="compose-hold-v1")
    env = {**os.environ, **{k: interpolate(str(v)) for k, v in SERVICES["sim"]["environment"].items()}}
    env["ROS_DOMAIN_ID"] = str(101 + os.getpid() % 100)  # this test's own domain on a shared machine

    sim = SERVICES["sim"]
    sim_cmd = [_script(sim["entrypoint"][0]), *(_to_host(w, policies) for w in sim["command"]),
               "-p", "task_kwargs:='{\"max_episode_steps\": 20}'", "-p", "reset_delay_s:=0.1"]  # short episodes
    health_cmd = [sys.executable if w == "python" else _to_host(w, policies) for w in sim["healthcheck"]["test"][1:]]
    robot_cmd = [_script("r2s"), "deploy", *(_to_host(w, policies) for w in SERVICES["robot"]["command"]),
                 "--duration", "5", "--log-dir", str(tmp_path / "logs")]  # 3 s once left no whole episode
    assert parse_dockerfile(REPO / "docker" / "robot.Dockerfile")[-2].args.endswith('"r2s", "deploy"]')

    sim_log = open(tmp_path / "sim.log", "w")
    sim_proc = subprocess.Popen(sim_cmd, env=env, stdout=sim_log, stderr=subprocess.STDOUT, cwd=tmp_path)
    try:
        healthy, deadline = False, time.monotonic() + 60
        while not healthy and time.monotonic() < deadline and sim_proc.poll() is None:
            healthy = subprocess.run(health_cmd, env=env, capture_output=True, timeout=30).returncode == 0
        assert healthy, f"the sim never became healthy:\n{(tmp_path / 'sim.log').read_text()[-3000:]}"
        robot = subprocess.run(robot_cmd, env=env, capture_output=True, text=True, timeout=120, cwd=bags)
    finally:
        _stop(sim_proc)
        sim_log.close()
    sim_text = (tmp_path / "sim.log").read_text()
    assert robot.returncode == 0, f"{shlex.join(robot_cmd)}:\n{robot.stdout[-2000:]}\n{robot.stderr[-2000:]}"
    summary = json.loads(robot.stdout.strip().splitlines()[-1])
    assert summary["exit_codes"] == {"policy": 0, "safety": 0, "recorder": 0}, summary
    (bag,) = bags.glob("r2s_bag_*")  # in the working directory, as in the robot image's /bags
    log = read_bag(bag)
    events = [(m.status[0].message, {kv.key: kv.value for kv in m.status[0].values}) for _, m in log[topics.EPISODE]]
    # The sim's episodes run from its start, whoever listens: the bag (recorder first, policy last) opens on
    # episodes run before the policy was active, which carry no policy version; the one in flight at the stop is
    # closed by the recorder ("recording stopped"). From the first episode that starts under the policy on, every
    # one is whole and carries the deployed policy's version.
    starts = [i for i, (e, v) in enumerate(events) if e == "start" and "policy_version" in v]
    assert starts, (json.dumps(events), sim_text[-2000:])
    whole = [v for e, v in events[starts[0]:] if e == "end" and v.get("reason") != "recording stopped"]
    assert whole, json.dumps(events)
    assert all(v.get("policy_version") == "compose-hold-v1" and v.get("length") == "20" for v in whole), whole
    assert len(log[topics.EXECUTED]) >= 20 and log["/joint_states"]


def test_health_check_fails_when_no_sim_publishes(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")
    env = {**os.environ, "ROS_DOMAIN_ID": str(201 + os.getpid() % 30), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST"}
    health = [interpolate(w) for w in SERVICES["sim"]["healthcheck"]["test"][1:]]
    cmd = [sys.executable, health[1].replace(IMAGE_ROOT, str(REPO)), health[2], "0.5"]
    assert subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode == 1
