"""sim.sysid: replay with a command delay, a short fit on a synthetic log, unidentified parameters, the overlay."""

from __future__ import annotations

import types

import mujoco
import numpy as np
import pytest
import yaml

from robots.so101 import HOME
from sim import sysid as S

PERIOD = 0.05


def test_substep_controls_shift_commands_and_blend_fractions():
    cmds = np.array([[1.0], [2.0]])
    hold = np.array([0.0])
    assert S.substep_controls(cmds, hold, 3, 0).ravel().tolist() == [1, 1, 1, 2, 2, 2]
    assert S.substep_controls(cmds, hold, 3, 2).ravel().tolist() == [0, 0, 1, 1, 1, 2]
    # Half a substep late: the substep the switch falls in carries the mean of the two targets.
    assert S.substep_controls(cmds, hold, 3, 0.5).ravel().tolist() == [0.5, 1, 1, 1.5, 2, 2]


@pytest.fixture(scope="module")
def fitted():
    """A 6 s chirp on the five arm joints (the gripper held: not excited), measured at 20 Hz with σ = 2 mrad."""
    rng = np.random.default_rng(3)
    steps = 120
    t = np.arange(steps) * PERIOD
    phase = 2 * np.pi * np.cumsum(0.3 + 2.7 * t / t[-1]) * PERIOD
    cmds = np.tile(np.array(HOME), (steps, 1))
    for j in range(5):
        cmds[:, j] += 0.35 * np.sin(phase + 1.3 * j)
    seg = S.Segment(cmds, (np.arange(steps) + 1) * PERIOD, np.zeros_like(cmds), np.array(HOME))
    nominal = S.Arm("so101").values()
    true = {k: v * rng.uniform(0.75, 1.25, 6) for k, v in nominal.items() if k != "frictionloss"}
    real = S.simulate("so101", [seg], true, delay=2, noise_std=0.002, seed=4)
    return true, real, S.fit("so101", real, max_iters=6, profile_iters=2)


def test_fit_recovers_gains_damping_and_the_exact_delay(fitted):
    true, real, res = fitted
    assert res.delay_substeps == 2
    for k in ("damping", "kp", "armature"):
        for i, joint in enumerate(res.joints[:5]):
            assert res.identified[k][i], f"{joint}.{k} not identified (ci {res.ci95[k][i]})"
            assert abs(res.fitted[k][i] / true[k][i] - 1) < 0.05, (joint, k, res.fitted[k][i], true[k][i])
    before, after = np.sqrt(np.mean(res.tracking_before ** 2)), np.sqrt(np.mean(res.tracking_after ** 2))
    assert after < before / 3 and after < 0.0025


def test_unexcited_joint_is_listed_and_left_out_of_the_overlay(fitted):
    _, _, res = fitted
    for k in ("damping", "frictionloss", "armature", "kp"):
        assert f"gripper.{k}" in res.unidentified
    overlay = res.overlay()
    assert "gripper" not in overlay["joints"]
    assert overlay["joints"]["elbow_flex"]["kp"] == pytest.approx(res.fitted["kp"][2])
    assert set(overlay["unidentified"]) == set(res.unidentified)


def test_overlay_is_picked_up_by_make_task(fitted, tmp_path, monkeypatch):
    from robots.overlay import OVERLAY_ENV
    from sim.registry import make_task

    _, _, res = fitted
    path = tmp_path / "so101.yaml"
    path.write_text(yaml.safe_dump(res.overlay()))
    monkeypatch.setenv(OVERLAY_ENV, str(path))
    m = make_task("reach").model
    a = m.actuator("elbow_flex").id
    assert m.actuator_gainprm[a, 0] == pytest.approx(res.fitted["kp"][2])
    assert m.actuator_biasprm[a, 1] == pytest.approx(-res.fitted["kp"][2])
    assert m.dof_damping[m.joint("wrist_flex").dofadr[0]] == pytest.approx(res.fitted["damping"][3])
    assert m.actuator_gainprm[m.actuator("gripper").id, 0] == 40.0  # unidentified: the model's own value
    monkeypatch.delenv(OVERLAY_ENV)
    assert make_task("reach").model.actuator_gainprm[a, 0] == 40.0


def test_missing_sysid_extra_is_a_clear_error(monkeypatch):
    # What `from mujoco import sysid` gives without the extra: the module, with nothing in it.
    monkeypatch.setattr(mujoco, "sysid", types.ModuleType("mujoco.sysid"))
    with pytest.raises(S.SysidUnavailable, match=r"mujoco\[sysid\]"):
        S.fit("so101", [S.Segment(np.zeros((3, 6)), [0.05, 0.1, 0.15], np.zeros((3, 6)), np.zeros(6))])


def test_fitted_overlay_makes_the_task_track_the_real_log(fitted, tmp_path):
    # The round trip: fit -> overlay file -> the reach task (gains, damping, armature and the command delay) replays
    # the "real" robot's log from its start as the fit's own replay did.
    from sim.registry import make_task

    _, real, res = fitted
    path = tmp_path / "so101.yaml"
    path.write_text(yaml.safe_dump(res.overlay()))
    seg = real[0]

    def rms(overlay):
        env = make_task("reach", robot_overlay=overlay, home_noise=0.0, max_episode_steps=len(seg.commands))
        env.reset(seed=0)
        assert np.array_equal(env.data.qpos[:6], seg.q0)
        q = np.array([env.step(c)[0][:6] for c in seg.commands])
        return env, float(np.sqrt(np.mean((q - seg.qpos) ** 2)))

    env, after = rms(str(path))
    assert env.command_delay_substeps == res.delay_substeps == 2
    _, before = rms("")
    assert after < 0.0025 and after < before / 3, (before, after)
