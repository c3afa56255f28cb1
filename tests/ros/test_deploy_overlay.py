"""``r2s deploy --sim`` with the overlay named by ``R2S_ROBOT_OVERLAY``: checked before the nodes start, passed to the
sim robot node by its absolute path, and a policy trained with another overlay warned about on stderr (real nodes
over DDS)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from tests.ros.conftest import so101_policy

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from robots.overlay import OVERLAY_ENV, load_overlay, overlay_hash  # noqa: E402
from stack.ros.deploy import cmd_deploy  # noqa: E402


def test_deploy_sim_runs_the_environments_overlay_and_warns_it_is_not_the_policys(ros_env, tmp_path, monkeypatch,
                                                                                   capsys):
    from sim.tasks.reach import ReachTask

    trained = {"robot": "so101", "joints": {"elbow_flex": {"damping": 0.6}}, "command_delay_substeps": 1}
    w = np.zeros((1, 18, 6), np.float32)
    w[0, :6] = np.eye(6)  # hold: command the measured joint positions
    policy = so101_policy(tmp_path / "hold.onnx", w, ReachTask.obs_layout, robot_overlay="trained.yaml",
                          robot_overlay_hash=overlay_hash(trained))
    (tmp_path / "now.yaml").write_text(yaml.safe_dump({**trained, "command_delay_substeps": 2}))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(OVERLAY_ENV, "now.yaml")  # relative: the node gets it by its absolute path
    logs = tmp_path / "logs"
    rc = cmd_deploy(["--policy", policy, "--sim", "--episodes", "1", "--no-record", "--log-dir", str(logs),
                     "--set", 'sim.task_kwargs={"max_episode_steps": 10}', "--set", "sim.reset_delay_s=0.1"])
    out, err = capsys.readouterr()
    assert rc == 0, err[-2000:]
    assert json.loads(out.strip().splitlines()[-1])["episodes"] == 1
    now = tmp_path / "now.yaml"
    assert (f"r2s deploy: WARNING: robot overlay mismatch: the policy was trained with trained.yaml (hash "
            f"{overlay_hash(trained)}), the sim robot runs with now.yaml (hash {overlay_hash(load_overlay(now))})"
            in err), err[-2000:]
    params = yaml.safe_load((logs / "params.yaml").read_text())
    assert params["r2s_sim_robot"]["ros__parameters"]["robot_overlay"] == str(now)
    assert f"robot overlay {now}:" in (logs / "sim.log").read_text()  # what the node says it loaded
