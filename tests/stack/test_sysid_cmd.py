"""``r2s sysid BAG``: a bag recorded from a perturbed SO-101 (synthetic) → an overlay with the fitted gains, a plot."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")
pytest.importorskip("mcap_ros2")

from robots.so101 import HOME  # noqa: E402
from sim import sysid as S  # noqa: E402
from tests.stack.test_logs import PERIOD, Graph  # noqa: E402


def test_sysid_cli_fits_a_recorded_bag_and_writes_overlay_and_plot(tmp_path, capsys):
    from stack.sysid_cmd import main

    steps, dt = 100, PERIOD / 1e9
    t = np.arange(steps) * dt
    cmds = np.tile(np.array(HOME), (steps, 1))
    for j in range(5):
        cmds[:, j] += 0.35 * np.sin(2 * np.pi * np.cumsum(0.3 + 2.7 * t / t[-1]) * dt + 1.3 * j)
    true_kp = S.Arm("so101").values()["kp"] * np.array([0.8, 1.2, 0.9, 1.1, 0.85, 1.0])
    real = S.simulate("so101", [S.Segment(cmds, (np.arange(steps) + 1) * dt, np.zeros_like(cmds), np.array(HOME))],
                      {"kp": true_kp}, delay=1, noise_std=0.002)[0]
    g = Graph(tmp_path / "bag")
    stamp = 1_000 * PERIOD
    g.episode("start", stamp, episode=0, seed=1)
    q = [np.array(HOME)] + list(real.qpos)
    for k in range(steps + 1):
        stamp += PERIOD
        command = cmds[min(k, steps - 1)]
        g.step(stamp, list(q[k]) + [0.0, 0.0, 0.0], list(command - 0.25), reward=0.0)  # the limiter adds 0.25
    g.episode("end", stamp + PERIOD, episode=0, outcome="timeout", length=steps + 1)
    g.close()
    out = tmp_path / "so101.yaml"
    assert main([str(tmp_path / "bag"), "--robot", "so101", "--out", str(out), "--max-iters", "6"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    overlay = yaml.safe_load(out.read_text())
    assert overlay["robot"] == "so101" and overlay["command_delay_substeps"] == 1
    for i, joint in enumerate(("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll")):
        assert overlay["joints"][joint]["kp"] == pytest.approx(true_kp[i], rel=0.05)
    assert "gripper.kp" in overlay["unidentified"] and "gripper" not in overlay["joints"]
    assert printed["after"] < printed["before"] / 3
    assert (tmp_path / "so101.png").stat().st_size > 10_000
    # The file r2s sysid wrote is what the sim runs: the reach task and the sim robot's model carry its gains and
    # its command delay.
    from sim.registry import make_task
    from stack.ros.sim_twin import build_twin

    task = make_task("reach", robot_overlay=str(out))
    twin = build_twin(S.Arm("so101").spec, robot_overlay=str(out))
    assert task.command_delay_substeps == 1 and twin.command_delay.delay == 1
    for model in (task.model, twin.model):
        for joint in ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll"):
            assert model.actuator_gainprm[model.actuator(joint).id, 0] == overlay["joints"][joint]["kp"]
        assert model.actuator_gainprm[model.actuator("gripper").id, 0] == 40.0  # unidentified: the model's own
