"""Hopper, Walker2d and HalfCheetah: parity with Gymnasium's v5 envs, the single-env API, robot specs, action checks."""

from __future__ import annotations

import warnings

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robots import get_robot
from robots.locomotion import HALFCHEETAH, HOPPER, WALKER2D, gymnasium_asset_path, load_gymnasium_model
from robots.spec import RobotSpec
from sim.core import ActionError
from sim.registry import make_task
from sim.tasks.locomotion import HalfCheetahTask, HopperTask, Walker2dTask

CASES = [
    (HopperTask, "Hopper-v5", HOPPER, 4),
    (Walker2dTask, "Walker2d-v5", WALKER2D, 4),
    (HalfCheetahTask, "HalfCheetah-v5", HALFCHEETAH, 5),
]
IDS = ["hopper", "walker2d", "halfcheetah"]


@pytest.mark.parametrize("cls,gym_id,spec,frame_skip", CASES, ids=IDS)
def test_matches_gymnasium_v5(cls, gym_id, spec, frame_skip):
    """Same seed and actions: same observations, rewards, flags and info values as gym.make(<id>) (to 1e-10)."""
    ours = cls()
    ref = gym.make(gym_id)
    assert ours.frame_skip == ref.unwrapped.frame_skip == frame_skip
    assert ours.dt == pytest.approx(ref.unwrapped.dt)
    assert ours.observation_space.shape == ref.observation_space.shape
    np.testing.assert_array_equal(ours.action_space.low, ref.action_space.low)
    np.testing.assert_array_equal(ours.action_space.high, ref.action_space.high)
    rng = np.random.default_rng(0)
    seed = 11
    o1, _ = ours.reset(seed=seed)
    o2, _ = ref.reset(seed=seed)
    np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-10)  # same RNG use: reset(seed) gives the same state
    episodes = 1
    for _ in range(200):
        # float64 actions: Gymnasium computes the control cost in the action's dtype, we always use float64
        a = rng.uniform(-1.0, 1.0, ours.action_space.shape)
        o1, r1, te1, tr1, i1 = ours.step(a)
        o2, r2, te2, tr2, i2 = ref.step(a)
        np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-10)
        assert r1 == pytest.approx(float(r2), abs=1e-10)
        assert (te1, tr1) == (te2, tr2)
        for key, value in i2.items():
            assert i1[key] == pytest.approx(float(value), abs=1e-10), key
        if te1 or tr1:
            seed += 1
            episodes += 1
            o1, _ = ours.reset(seed=seed)
            o2, _ = ref.reset(seed=seed)
            np.testing.assert_allclose(o1, o2, rtol=0, atol=1e-10)
    if cls is not HalfCheetahTask:
        assert episodes > 2, "random actions should end a few Hopper/Walker episodes within 200 steps"


@pytest.mark.parametrize("cls,gym_id,spec,frame_skip", CASES, ids=IDS)
def test_time_limit_matches_gymnasium(cls, gym_id, spec, frame_skip):
    ours = cls(max_episode_steps=7)
    ref = gym.make(gym_id, max_episode_steps=7)
    ours.reset(seed=3)
    ref.reset(seed=3)
    zero = np.zeros(ours.action_space.shape)
    for t in range(7):
        _, _, te1, tr1, _ = ours.step(zero)
        _, _, te2, tr2, _ = ref.step(zero)
        assert te1 == te2
        if not te1:
            assert tr1 == tr2 == (t == 6)
    assert cls().max_episode_steps == 1000


@pytest.mark.parametrize("cls", [c[0] for c in CASES], ids=IDS)
def test_gymnasium_env_checker(cls):
    env = cls()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Gymnasium warns about unbounded Box observations, as for its own envs
        check_env(env, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("cls,gym_id,spec,frame_skip", CASES, ids=IDS)
def test_robot_spec_matches_model(cls, gym_id, spec, frame_skip):
    env = cls()
    m = env.model
    assert env.robot is spec and get_robot(spec.name) is spec
    assert isinstance(spec, RobotSpec) and spec.control_mode == "effort"
    assert spec.model_source.startswith("gymnasium:")
    names = tuple(m.joint(int(m.actuator_trnid[i, 0])).name for i in range(m.nu))
    assert spec.joint_names == names
    lo, hi = spec.pos_limits
    joint_ids = m.actuator_trnid[:, 0]
    np.testing.assert_allclose(lo, m.jnt_range[joint_ids, 0], atol=1e-12)
    np.testing.assert_allclose(hi, m.jnt_range[joint_ids, 1], atol=1e-12)
    np.testing.assert_allclose(spec.effort_limits, np.abs(m.actuator_ctrlrange[:, 1] * m.actuator_gear[:, 0]))
    assert spec.control_rate_hz == pytest.approx(1.0 / (m.opt.timestep * frame_skip))
    assert spec.control_rate_hz == pytest.approx(1.0 / env.dt)
    assert sum(s.size for s in env.obs_layout) == env.observation_space.shape[0]
    assert {s.source for s in env.obs_layout} >= {"joint_states.position", "joint_states.velocity"}
    spec.check_metadata(spec.to_metadata())  # round trip (vel_max is inf: no limit in the XML)


def test_hopper_rate_and_asset_helpers():
    assert HOPPER.control_rate_hz == 125.0 and HALFCHEETAH.control_rate_hz == 20.0
    assert gymnasium_asset_path("hopper").endswith("assets/hopper.xml")
    assert gymnasium_asset_path("gymnasium:hopper.xml") == gymnasium_asset_path("hopper.xml")
    m = load_gymnasium_model("hopper.xml")
    assert isinstance(m, mujoco.MjModel) and m.nu == 3
    with pytest.raises(FileNotFoundError, match="available"):
        gymnasium_asset_path("no_such_robot.xml")


def test_registry_builds_tasks_with_kwargs():
    env = make_task("hopper", reset_noise_scale=0.0, max_episode_steps=5)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs[:5], env.init_qpos[1:])  # no reset noise
    assert env.max_episode_steps == 5


@pytest.mark.parametrize("cls", [c[0] for c in CASES], ids=IDS)
def test_bad_actions_are_refused_and_state_unchanged(cls):
    env = cls()
    env.reset(seed=0)
    env.step(np.full(env.action_space.shape, 0.3))
    qpos, qvel, elapsed = env.data.qpos.copy(), env.data.qvel.copy(), env._elapsed
    n = env.action_space.shape[0]
    bad_actions = [np.zeros(n + 1), np.zeros((1, n)), np.r_[np.nan, np.zeros(n - 1)], np.r_[np.zeros(n - 1), np.inf]]
    for bad in bad_actions:
        with pytest.raises(ActionError):
            env.step(bad)
        np.testing.assert_array_equal(env.data.qpos, qpos)
        np.testing.assert_array_equal(env.data.qvel, qvel)
        assert env._elapsed == elapsed


def test_out_of_range_actions_are_clipped():
    a, b = HopperTask(), HopperTask()
    a.reset(seed=4)
    b.reset(seed=4)
    big = np.array([5.0, -7.0, 0.5])
    oa, ra, *_ = a.step(big)
    ob, rb, *_ = b.step(np.clip(big, -1.0, 1.0))
    np.testing.assert_array_equal(a.data.ctrl, [1.0, -1.0, 0.5])
    np.testing.assert_array_equal(oa, ob)
    assert ra == rb  # the control cost uses the clipped action


def test_float32_actions_accepted():
    env = HopperTask()
    env.reset(seed=0)
    obs, reward, *_ = env.step(env.action_space.sample())
    assert obs.dtype == np.float64 and obs.shape == (11,) and isinstance(reward, float)


def test_walker_and_cheetah_observation_details():
    w = Walker2dTask()
    w.reset(seed=0)
    w.data.qvel[:] = 50.0
    assert np.all(w._get_obs()[8:] == 10.0)  # Walker clips velocities at ±10
    c = HalfCheetahTask()
    c.reset(seed=0)
    c.data.qvel[:] = 50.0
    assert np.all(c._get_obs()[8:] == 50.0)  # HalfCheetah does not


def test_render_rgb_array_any_size():
    env = HopperTask(render_mode="rgb_array", width=800, height=600)  # larger than the XML's offscreen buffer
    env.reset(seed=0)
    try:
        img = env.render()
    except mujoco.FatalError as e:  # no OpenGL on this machine
        pytest.skip(f"no OpenGL context: {e}")
    assert img.shape == (600, 800, 3) and img.dtype == np.uint8 and img.std() > 0
    env.close()
    assert HopperTask().render() is None  # render_mode None
