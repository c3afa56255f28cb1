"""The robot overlay's command delay in the arm tasks (``sim.core.CommandDelay``) and the overlay's checks.

The reference for "delayed by N substeps" is the undelayed model stepped one substep at a time with the targets of
``sim.sysid.substep_controls`` (the fit's replay): the task must reproduce it bit for bit, for N and only for N.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import yaml

from robots.overlay import command_delay_substeps, load_overlay
from robots.so101 import HOME
from sim.core import CommandDelay
from sim.registry import make_task
from sim.sysid import substep_controls

STEPS = 6


def _overlay(tmp_path, name="so101.yaml", **fields) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({"robot": "so101", **fields}))
    return str(path)


def _commands() -> np.ndarray:
    """Joint targets that step away from home and back (each joint its own amplitude), one per control step."""
    amp = np.array([0.3, -0.25, 0.35, -0.3, 0.2, 0.1])
    sign = np.array([1, 1, -1, -1, 1, 0])
    return np.array(HOME) + np.outer(sign[:STEPS], amp)


def _task_run(robot_overlay: str):
    env = make_task("reach", robot_overlay=robot_overlay, home_noise=0.0)
    env.reset(seed=0)
    q0 = env.data.qpos[:6].copy()
    qs = []
    for a in _commands():
        obs, *_ = env.step(a)
        qs.append(obs[:6])
    return env, q0, np.array(qs)


def _reference(delay: int, q0: np.ndarray) -> np.ndarray:
    """Joint positions at the end of each control step of the undelayed reach model fed, substep by substep, the
    commands shifted by ``delay`` substeps."""
    env = make_task("reach", robot_overlay="", home_noise=0.0)
    env.reset(seed=0)
    m, d = env.model, env.data
    ctrl = substep_controls(_commands(), q0, env.frame_skip, delay)
    out = []
    for k, c in enumerate(ctrl):
        d.ctrl[:] = c
        mujoco.mj_step(m, d)
        if (k + 1) % env.frame_skip == 0:
            out.append(d.qpos[:6].copy())
    return np.array(out)


@pytest.mark.parametrize("delay", [0, 2, 30])
def test_delay_shifts_the_joint_response_by_exactly_n_substeps(tmp_path, delay):
    env, q0, q = _task_run(_overlay(tmp_path, command_delay_substeps=delay))
    assert env.command_delay_substeps == delay
    assert np.array_equal(q, _reference(delay, q0))
    for other in {max(0, delay - 1), delay + 1} - {delay}:
        assert np.abs(q - _reference(other, q0)).max() > 1e-5, f"a delay of {delay} looks like {other}"


def test_no_delay_is_the_unchanged_step(tmp_path):
    # An overlay with command_delay_substeps: 0 and no overlay at all give the same trajectory, bit for bit.
    _, _, with_zero = _task_run(_overlay(tmp_path, command_delay_substeps=0))
    env, _, without = _task_run("")
    assert env.command_delay is None and np.array_equal(with_zero, without)


def test_delay_restarts_at_reset(tmp_path):
    env = make_task("reach", robot_overlay=_overlay(tmp_path, command_delay_substeps=3), home_noise=0.0)
    runs = []
    for _ in range(2):
        env.reset(seed=1)
        runs.append(np.array([env.step(a)[0] for a in _commands()]))
    assert np.array_equal(runs[0], runs[1])  # nothing queued in episode 1 leaks into episode 2


def test_command_delay_line_switches_at_the_due_substep():
    m = mujoco.MjModel.from_xml_string(
        "<mujoco><worldbody><body><joint name='j' type='slide'/><geom size='.1' mass='1'/></body></worldbody>"
        "<actuator><motor joint='j'/></actuator></mujoco>")
    d = mujoco.MjData(m)
    line = CommandDelay(3)
    line.reset(d)  # ctrl 0 in force
    seen = []
    for cmd in (1.0, 2.0):
        d.ctrl[:] = cmd
        line.send(d)
        assert d.ctrl[0] == seen[-1] if seen else d.ctrl[0] == 0.0  # sending changes nothing yet
        for _ in range(5):
            line.step(m, d, 1)
            seen.append(float(d.ctrl[0]))
    # Each command acts from 3 substeps after it was sent: the ctrl during substeps 0..9.
    assert seen == [0, 0, 0, 1, 1, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="command_delay_substeps"):
        CommandDelay(-1)


@pytest.mark.parametrize("fields, message", [
    ({"command_delay_substeps": -1}, r"command_delay_substeps must be an integer >= 0.*-1"),
    ({"command_delay_substeps": 1.5}, r"command_delay_substeps must be an integer >= 0.*1\.5"),
    ({"command_delay_substeps": "two"}, r"command_delay_substeps must be an integer >= 0.*'two'"),
    ({"joints": {"elbow_flex": {"kp": "stiff"}}}, r"joints\.elbow_flex\.kp must be a finite number >= 0.*'stiff'"),
    ({"joints": {"elbow_flex": {"damping": -0.1}}}, r"joints\.elbow_flex\.damping must be a finite number >= 0"),
    ({"joints": {"elbow_flex": {"stiffness": 1.0}}}, r"joints\.elbow_flex has unknown field\(s\) \['stiffness'\]"),
    ({"robot": "halfcheetah"}, r"robot is 'halfcheetah', expected 'so101'"),
])
def test_malformed_overlay_is_refused_naming_the_field(tmp_path, fields, message):
    path = _overlay(tmp_path, **fields)
    with pytest.raises(ValueError, match=message):
        load_overlay(path, "so101")
    with pytest.raises(ValueError, match=message):
        make_task("reach", robot_overlay=path)


def test_overlay_that_is_not_yaml_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("robot: so101\njoints: {elbow_flex: [\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: not valid YAML"):
        load_overlay(path)
    assert command_delay_substeps({"robot": "so101", "command_delay_substeps": 2.0}) == 2
