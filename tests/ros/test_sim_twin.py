"""The sim robot node's model carries the robot overlay (``stack.ros.sim_twin``): parameter or R2S_ROBOT_OVERLAY,
with or without a task, its command delay, and clear refusals; then the node itself (rclpy) and ``r2s deploy``."""

from __future__ import annotations

import time

import mujoco
import numpy as np
import pytest
import yaml

from robots.overlay import OVERLAY_ENV
from robots.so101 import HOME, SO101
from sim.sysid import substep_controls
from stack.ros.deploy import DeployError, deploy
from stack.ros.sim_twin import build_twin

KP, DAMPING, ARMATURE = 31.5, 0.77, 0.0123


def _overlay(tmp_path, name="so101.yaml", **fields) -> str:
    path = tmp_path / name
    body = {"robot": "so101", "joints": {"elbow_flex": {"kp": KP, "damping": DAMPING},
                                         "wrist_flex": {"armature": ARMATURE}},
            "command_delay_substeps": 2, **fields}
    path.write_text(yaml.safe_dump(body))
    return str(path)


def _values(model):
    a = model.actuator("elbow_flex").id
    return (model.actuator_gainprm[a, 0], -model.actuator_biasprm[a, 1],
            model.dof_damping[model.joint("elbow_flex").dofadr[0]],
            model.dof_armature[model.joint("wrist_flex").dofadr[0]])


@pytest.mark.parametrize("task", ["", "reach"])
def test_the_overlay_parameter_sets_the_model_and_the_delay(tmp_path, monkeypatch, task):
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    nominal = build_twin(SO101, task)
    assert nominal.overlay_path == "" and nominal.command_delay is None
    assert "none" in nominal.overlay_line()
    path = _overlay(tmp_path)
    twin = build_twin(SO101, task, robot_overlay=path)
    assert _values(twin.model) == pytest.approx((KP, KP, DAMPING, ARMATURE))
    assert _values(nominal.model) != pytest.approx((KP, KP, DAMPING, ARMATURE))
    # The joints the overlay does not name keep the model's values.
    sp = twin.model.joint("shoulder_pan").dofadr[0]
    assert twin.model.dof_damping[sp] == nominal.model.dof_damping[sp]
    assert twin.command_delay.delay == 2
    if task:
        assert twin.task.robot_overlay == path and twin.task.command_delay_substeps == 2
    line = twin.overlay_line()
    assert path in line and "3 value(s) on 2 joint(s)" in line and "command delay 2 substep(s)" in line


def test_the_environment_variable_is_honoured_and_the_parameter_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, "env.yaml", command_delay_substeps=1))
    assert build_twin(SO101, "reach").command_delay.delay == 1
    assert build_twin(SO101).command_delay.delay == 1
    param = _overlay(tmp_path, "param.yaml", command_delay_substeps=3)
    twin = build_twin(SO101, "reach", robot_overlay=param)
    assert twin.overlay_path == param and twin.command_delay.delay == 3 and twin.task.command_delay_substeps == 3


def test_the_twin_delays_commands_as_the_node_steps_it(tmp_path, monkeypatch):
    # The node's physics loop: the command in force is written to ctrl at each tick, then the twin's command delay
    # steps the tick's substeps. A 2-substep delay equals the undelayed model fed the commands 2 substeps late.
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    twin = build_twin(SO101, robot_overlay=_overlay(tmp_path, joints={}))
    ref = build_twin(SO101)
    tick, ticks = 5, 12
    cmds = np.tile(np.array(HOME), (ticks, 1))
    cmds[3:, 2] += 0.4
    qs = {}
    for name, tw in (("delayed", twin), ("reference", ref)):
        m, d = tw.model, tw.data
        d.qpos[tw.qadr] = HOME
        mujoco.mj_forward(m, d)
        d.ctrl[tw.act_idx] = HOME
        out = []
        if tw.command_delay is not None:
            tw.command_delay.reset(d)
            for c in cmds:
                d.ctrl[tw.act_idx] = c
                tw.command_delay.send(d)
                tw.command_delay.step(m, d, tick)
                out.append(d.qpos[tw.qadr].copy())
        else:
            for k, c in enumerate(substep_controls(cmds, np.array(HOME), tick, 2)):
                d.ctrl[tw.act_idx] = c
                mujoco.mj_step(m, d)
                if (k + 1) % tick == 0:
                    out.append(d.qpos[tw.qadr].copy())
        qs[name] = np.array(out)
    assert np.array_equal(qs["delayed"], qs["reference"])
    assert np.abs(qs["delayed"][-1, 2] - HOME[2]) > 0.05  # the step command did move the elbow


@pytest.mark.parametrize("fields, message", [
    ({"command_delay_substeps": -2}, r"command_delay_substeps must be an integer >= 0"),
    ({"joints": {"elbow_flex": {"kp": None}}}, r"joints\.elbow_flex\.kp must be a finite number >= 0"),
    ({"joints": {"elbow": {"kp": 3.0}}}, r"joints\.elbow: the so101 model has no such joint"),
    ({"robot": "toy_arm"}, r"robot is 'toy_arm', expected 'so101'"),
])
@pytest.mark.parametrize("task", ["", "reach"])
def test_a_bad_overlay_is_refused_naming_the_field(tmp_path, monkeypatch, fields, message, task):
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    with pytest.raises(ValueError, match=message):
        build_twin(SO101, task, robot_overlay=_overlay(tmp_path, **fields))


def test_a_missing_overlay_file_and_a_task_without_overlays_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path / "nope.yaml"))
    with pytest.raises(ValueError, match=r"robot_overlay .*nope\.yaml: cannot read it"):
        build_twin(SO101)
    monkeypatch.delenv(OVERLAY_ENV)
    with pytest.raises(ValueError, match="robot_overlay is the node's own parameter"):
        build_twin(SO101, "reach", task_kwargs={"robot_overlay": "x.yaml"})


def test_deploy_checks_the_overlay_before_starting_any_node(tmp_path):
    policy = tmp_path / "policy.onnx"
    policy.write_bytes(b"not read: robot and task are given")
    bad = _overlay(tmp_path, command_delay_substeps="late")
    with pytest.raises(DeployError, match=r"--robot-overlay: .*command_delay_substeps must be an integer"):
        deploy(str(policy), "so101", sim=True, task="reach", robot_overlay=bad, log_dir=str(tmp_path / "logs"))
    with pytest.raises(DeployError, match=r"--robot-overlay: only the sim robot \(--sim\)"):
        deploy(str(policy), "so101", sim=False, robot_overlay=_overlay(tmp_path), log_dir=str(tmp_path / "logs"))
    assert not (tmp_path / "logs").exists()  # no graph was made


# ---- the node as a process ---------------------------------------------------------------------------------------
def test_the_node_logs_its_overlay_runs_with_it_and_refuses_a_bad_one(ros, tmp_path):
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray

    from stack.ros.deploy import Graph

    good = _overlay(tmp_path)
    bad = _overlay(tmp_path, "bad.yaml", joints={"elbow_flex": {"kp": -1.0}})
    js = ros.listen(JointState, SO101.joint_states_topic)
    graph = Graph({"sim": {"robot": "so101", "task": "reach", "robot_overlay": good, "real_time_factor": 4.0}},
                  log_dir=tmp_path / "good")
    graph.start(["sim"])
    try:
        graph.up(["sim"], timeout_s=60)
        log = graph.nodes["sim"].log_path.read_text()
        assert f"robot overlay {good}: 3 value(s) on 2 joint(s)" in log and "command delay 2 substep(s)" in log, log
        # The delayed physics loop runs: a command still moves the arm.
        js.wait_for(lambda m: True, timeout=10)
        target = np.array(js.last().position)
        target[2] += 0.3
        t0 = time.monotonic()
        ros.publisher(Float64MultiArray, SO101.command_topic).publish(Float64MultiArray(data=target.tolist()))
        js.wait_for(lambda m: abs(m.position[2] - target[2]) < 0.03, since=t0, timeout=10)
        graph.check_alive()
    finally:
        assert graph.stop() == {"sim": 0}
    graph = Graph({"sim": {"robot": "so101", "robot_overlay": bad}}, log_dir=tmp_path / "bad")
    graph.start(["sim"])
    try:
        with pytest.raises(DeployError, match=r"configure failed: configure: ValueError: robot overlay .*bad\.yaml: "
                                              r"joints\.elbow_flex\.kp must be a finite number >= 0, got -1\.0"):
            graph.up(["sim"], timeout_s=60)
    finally:
        assert graph.stop() == {"sim": 0}
