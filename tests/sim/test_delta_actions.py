"""Delta joint targets on the arm tasks: the action space, the one conversion formula, the baseline in delta units,
and an exported delta policy that sends absolute targets and drives the absolute task exactly as training did."""

import numpy as np
import pytest
import torch

from policies import GaussianPolicy
from sim.registry import make_task
from sim.tasks.arm import absolute_to_delta, delta_to_absolute


def test_delta_mode_action_space_and_conversion():
    env = make_task("reach", action_mode="delta", delta_scale=0.1)
    assert env.action_space.low.tolist() == [-1.0] * 6 and env.action_space.high.tolist() == [1.0] * 6
    obs, _ = env.reset(seed=0)
    q = obs[:6].copy()
    a = np.array([1.0, -1.0, 0.5, 0.0, 3.0, -0.2])  # 3.0 is clipped to 1 by the env
    env.step(a)
    want = np.clip(q + 0.1 * np.clip(a, -1, 1), env.joint_low, env.joint_high)
    np.testing.assert_allclose(env.data.ctrl, want)
    np.testing.assert_allclose(delta_to_absolute(q, a, 0.1, env.joint_low, env.joint_high), want)


def test_absolute_to_delta_saturates_and_inverts():
    q = np.zeros(3)
    np.testing.assert_allclose(absolute_to_delta(q, [0.05, -0.5, 0.0], 0.1), [0.5, -1.0, 0.0])
    np.testing.assert_allclose(delta_to_absolute(q, absolute_to_delta(q, [0.05, 0.02, -0.03], 0.1), 0.1, -1, 1),
                               [0.05, 0.02, -0.03])


@pytest.mark.parametrize("kwargs", [{"action_mode": "relative"}, {"delta_scale": 0.0}])
def test_bad_action_interface_is_refused_naming_the_field(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        make_task("reach", **kwargs)


def test_the_baseline_solves_reach_in_delta_units():
    env = make_task("reach", action_mode="delta")
    obs, _ = env.reset(seed=4)
    for _ in range(env.max_episode_steps):
        a = env.baseline(obs)
        assert np.all(np.abs(a) <= 1.0)
        obs, _, _, _, info = env.step(a)
    assert info["success"]


def test_action_rate_penalty_is_on_the_joint_target_in_both_modes():
    # Holding still (delta 0 from home ≈ repeating the measured position) costs ~nothing; a full delta step costs.
    env = make_task("reach", action_mode="delta", delta_scale=0.1, action_rate_weight=1.0)
    obs, _ = env.reset(seed=1)
    _, r_still, *_ = env.step(np.zeros(6))
    env.reset(seed=1)
    _, r_move, *_ = env.step(np.ones(6))
    assert r_still - r_move > 0.5 * 6 * 0.1 ** 2  # penalty 0.06, the distance term moves a little too


def test_exported_delta_policy_drives_the_absolute_task_as_training_did(tmp_path):
    from stack.export import DeltaTargets, ExportSpec, delta_targets, export_policy, robot_metadata
    from stack.runtime import OnnxPolicy

    train_env = make_task("reach", action_mode="delta")
    robot_env = make_task("reach")  # what the sim robot runs: absolute targets on the wire
    torch.manual_seed(0)
    policy = GaussianPolicy(18, 6, hidden=(16, 16))
    with torch.no_grad():
        policy.mean.weight.mul_(20.0)  # actions that saturate on some joints: the clip path is exercised
    mean, std = np.zeros(18), np.ones(18)
    delta = delta_targets("reach", {"action_mode": "delta"})
    spec = ExportSpec(mean, std, None, -np.ones(6), np.ones(6), "minmax", delta)
    assert isinstance(spec.delta, DeltaTargets) and spec.delta.joint_offset == 0
    meta = {**robot_metadata("reach"), "run_id": "delta-test"}
    out = export_policy(policy, spec, tmp_path / "p.onnx", meta)
    assert out["parity_max_abs_err"] <= 1e-5
    runner = OnnxPolicy.load(out["path"], robot_env.robot, robot_env.obs_layout)
    o_train, _ = train_env.reset(seed=7)
    o_robot, _ = robot_env.reset(seed=7)
    for _ in range(20):
        with torch.no_grad():
            a = policy.act(torch.as_tensor(o_train, dtype=torch.float32)[None], deterministic=True).numpy().reshape(6)
        target = runner.step(o_robot)
        assert np.all(target >= robot_env.joint_low - 1e-6) and np.all(target <= robot_env.joint_high + 1e-6)
        o_train, *_ = train_env.step(np.clip(a, -1, 1))
        o_robot, *_ = robot_env.step(target)
        np.testing.assert_allclose(o_robot, o_train, atol=1e-4)


def test_a_chunk_executing_delta_policy_is_refused_at_export(tmp_path):
    from policies import DiffusionPolicy
    from stack.export import ExportError, ExportSpec, delta_targets, export_policy, robot_metadata

    policy = DiffusionPolicy(18, 6, horizon=4, act_steps=4, hidden=(16, 16, 16))
    spec = ExportSpec(np.zeros(18), np.ones(18), None, -np.ones(6), np.ones(6), "minmax",
                      delta_targets("reach", {"action_mode": "delta"}))
    with pytest.raises(ExportError, match="act_steps"):
        export_policy(policy, spec, tmp_path / "p.onnx", {**robot_metadata("reach"), "run_id": "x"})
    assert not (tmp_path / "p.onnx").exists()
