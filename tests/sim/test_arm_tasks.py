"""The SO-101 reach and push tasks: Gymnasium conformance, seeding, input checks, rewards, and their baselines."""

import math
import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from robots.baselines import ArmKinematics, PushBaseline, ReachBaseline
from robots.so101 import SO101
from sim.core import ActionError
from sim.registry import make_task
from sim.tasks.push import PushTask
from sim.tasks.reach import ReachTask

TASKS = [ReachTask, PushTask]


def _rollout(env, policy, seed):
    """Run one episode; returns (first success step or None, final info, rewards, infos)."""
    obs, _ = env.reset(seed=seed)
    first, rewards, infos = None, [], []
    for t in range(env.max_episode_steps):
        obs, r, term, trunc, info = env.step(policy(obs))
        rewards.append(r)
        infos.append(info)
        if info["success"] and first is None:
            first = t + 1
        if term or trunc:
            break
    return first, info, rewards, infos


def _success_stats(env, policy, seeds):
    firsts = [_rollout(env, policy, s)[0] for s in seeds]
    hits = [f for f in firsts if f is not None]
    return len(hits) / len(seeds), (float(np.mean(hits)) if hits else math.inf)


def _random_policy(env, seed):
    rng = np.random.default_rng(seed)
    lo, hi = env.action_space.low, env.action_space.high
    return lambda obs: rng.uniform(lo, hi)


# ---- Gymnasium conformance ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", TASKS)
def test_check_env(cls):
    with warnings.catch_warnings():
        # Expected by design: actions are joint angles (not [-1, 1]); observations are unbounded.
        warnings.filterwarnings("ignore", message=".*(symmetric and normalized|infinity|spec).*")
        check_env(cls(), skip_render_check=True)


@pytest.mark.parametrize("cls", TASKS)
def test_spaces_layout_and_registry(cls):
    env = make_task(cls.scene)
    assert type(env) is cls
    assert env.robot is SO101
    assert env.frame_skip == 25 and env.dt == pytest.approx(1 / SO101.control_rate_hz)
    lo, hi = SO101.pos_limits
    assert np.allclose(env.action_space.low, lo, atol=1e-6) and np.allclose(env.action_space.high, hi, atol=1e-6)
    assert env.observation_space.shape == (sum(s.size for s in env.obs_layout),)
    names = [s.name for s in env.obs_layout]
    assert names[:4] == ["joint_pos", "joint_vel", "ee_pos", "object_pos" if cls is PushTask else "goal"]
    assert env.obs_layout[0].source == "joint_states.position"
    assert all(s.source.startswith("topic:/r2s/") for s in env.obs_layout[2:])
    obs, _ = env.reset(seed=0)
    assert obs.shape == env.observation_space.shape and obs.dtype == np.float64
    with pytest.raises(ValueError, match="reward_type"):
        cls(reward_type="shaped")


@pytest.mark.parametrize("cls", TASKS)
def test_episode_length(cls):
    env = cls()
    env.reset(seed=0)
    hold = env.home.astype(np.float32)
    for t in range(env.max_episode_steps):
        *_, term, trunc, _ = env.step(hold)
        assert not term
        assert trunc == (t == env.max_episode_steps - 1)
    assert cls().max_episode_steps == (100 if cls is ReachTask else 150)


# ---- seeding -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", TASKS)
def test_seeding_is_deterministic(cls):
    def run(seed):
        env = cls(randomization={"mass": (0.8, 1.2), "actuator_gain": (0.8, 1.2), "obs_noise_std": 0.001})
        obs, _ = env.reset(seed=seed)
        out = [obs]
        act = np.random.default_rng(7)
        for _ in range(15):
            obs, r, *_ = env.step(act.uniform(env.action_space.low, env.action_space.high))
            out.append(np.append(obs, r))
        return out

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.allclose(a[0], c[0])


def test_goal_changes_between_episodes_and_stays_in_the_workspace():
    env = ReachTask()
    env.reset(seed=0)
    goals = np.array([env.reset()[0][15:18] for _ in range(200)])
    assert len(np.unique(goals.round(6), axis=0)) == 200
    r = np.hypot(goals[:, 0], goals[:, 1])
    assert goals[:, 2].min() >= 0.03 and goals[:, 2].max() <= 0.25
    assert r.min() >= 0.10 and r.max() <= 0.32
    assert goals[:, 1].min() < -0.1 and goals[:, 1].max() > 0.1  # both sides of the arm


def test_push_object_and_goal_are_feasible():
    env = PushTask()
    env.reset(seed=0)
    for _ in range(200):
        obs = env.reset()[0]
        obj, goal = obs[15:18], obs[18:21]
        assert obj[2] == pytest.approx(0.015) and goal[2] == pytest.approx(0.015)
        ro, rg = np.hypot(*obj[:2]), np.hypot(*goal[:2])
        assert 0.16 <= ro <= 0.22 and 0.14 <= rg <= 0.26
        d = np.linalg.norm(goal[:2] - obj[:2])
        assert 0.06 <= d <= 0.12
        # never toward the base: the push direction has a non-negative radial component
        assert np.dot(goal[:2] - obj[:2], obj[:2] / ro) >= -1e-9


# ---- action checks -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", TASKS)
@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((1, 6)), np.array([0, 0, np.nan, 0, 0, 0]),
                                 np.array([0, np.inf, 0, 0, 0, 0])])
def test_bad_action_raises_and_leaves_state_unchanged(cls, bad):
    env = cls()
    env.reset(seed=1)
    env.step(env.home)
    qpos, qvel, t, ctrl, elapsed = (env.data.qpos.copy(), env.data.qvel.copy(), env.data.time,
                                    env.data.ctrl.copy(), env._elapsed)
    with pytest.raises(ActionError):
        env.step(bad)
    np.testing.assert_array_equal(env.data.qpos, qpos)
    np.testing.assert_array_equal(env.data.qvel, qvel)
    np.testing.assert_array_equal(env.data.ctrl, ctrl)
    assert env.data.time == t and env._elapsed == elapsed


@pytest.mark.parametrize("cls", TASKS)
def test_out_of_range_action_is_clipped(cls):
    a, b = cls(), cls()
    a.reset(seed=2)
    b.reset(seed=2)
    wild = np.array([5.0, -5.0, 5.0, -5.0, 9.0, -1.0])
    clipped = np.clip(wild, a.action_space.low, a.action_space.high)
    oa = a.step(wild)
    ob = b.step(clipped)
    np.testing.assert_array_equal(oa[0], ob[0])
    assert oa[1] == ob[1]
    np.testing.assert_allclose(a.data.ctrl, clipped, atol=1e-6)


# ---- observation and reward --------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", TASKS)
def test_ee_pos_is_forward_kinematics_of_joint_pos(cls):
    env = cls()
    kin = ArmKinematics()
    obs, _ = env.reset(seed=5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        np.testing.assert_allclose(obs[12:15], kin.fk(obs[:6]), atol=1e-9)
        obs, *_ = env.step(env.home + rng.uniform(-0.4, 0.4, 6))


def test_dense_reward_increases_as_the_fingertip_approaches_the_goal():
    env = ReachTask(success_bonus=0.0, action_rate_weight=0.0)
    _, _, rewards, infos = _rollout(env, env.baseline, seed=0)
    dist = np.array([i["distance"] for i in infos])
    np.testing.assert_allclose(rewards, -dist)
    assert dist[-1] < 0.02 < dist[0]
    assert rewards[-1] > rewards[0] + 0.05
    # And with the defaults: a bonus on success and a (small) action-rate penalty.
    env = ReachTask()
    obs, _ = env.reset(seed=0)
    a = env.home.copy()
    _, r0, *_, info = env.step(a)
    penalty = env.action_rate_weight * float(np.sum((a - obs[:6]) ** 2))
    assert r0 == pytest.approx(-info["distance"] - penalty)


@pytest.mark.parametrize("cls", TASKS)
def test_sparse_reward_and_terminate_on_success(cls):
    env = cls(reward_type="sparse")
    _, info, rewards, infos = _rollout(env, env.baseline, seed=1)
    assert rewards == [1.0 if i["success"] else 0.0 for i in infos]
    assert info["success"] and all(i["goal_reached"] == i["success"] for i in infos)
    env = cls(terminate_on_success=True)
    first, info, rewards, _ = _rollout(env, env.baseline, seed=1)
    assert info["success"] and len(rewards) == first


def test_push_dense_reward_shape():
    env = PushTask(success_bonus=0.0, action_rate_weight=0.0)
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.home)
    assert r == pytest.approx(-(0.5 * info["ee_object_distance"] + 1.0 * info["distance"]))


def test_push_pre_push_shaping_pulls_the_fingertip_behind_the_puck():
    env = PushTask(success_bonus=0.0, action_rate_weight=0.0, shaping="pre_push")
    env.reset(seed=0)
    _, r, _, _, info = env.step(env.home)
    assert r == pytest.approx(-(0.5 * info["ee_pre_push_distance"] + 1.0 * info["distance"]))
    pre = np.array(env.pre_push_point())
    obj, goal = env._obj.copy(), env.goal
    # behind the puck: on the goal→puck line, past the puck, pre_push_offset from its center, at pushing height
    to_goal = (goal[:2] - obj[:2]) / np.linalg.norm(goal[:2] - obj[:2])
    rel = pre[:2] - obj[:2]
    assert rel @ to_goal == pytest.approx(-env.pre_push_offset)
    assert abs(rel[0] * to_goal[1] - rel[1] * to_goal[0]) < 1e-9
    # the fingertip term is zero at the pre-push point and grows away from it (a flipped offset fails here)
    env._ee[:] = pre
    assert env._task_terms()[2]["ee_pre_push_distance"] == pytest.approx(0.0, abs=1e-12)
    in_front = obj.copy()
    in_front[:2] += env.pre_push_offset * to_goal
    in_front[2] = pre[2]
    env._ee[:] = in_front
    shaped_front = env._task_terms()[0]
    env._ee[:] = pre
    assert env._task_terms()[0] > shaped_front
    with pytest.raises(ValueError, match="shaping"):
        PushTask(shaping="behind")


# ---- baselines ---------------------------------------------------------------------------------------------------
def test_reach_baseline_succeeds_but_slowly():
    env = ReachTask()
    seeds = range(100, 120)
    rate, steps = _success_stats(env, env.baseline, seeds)
    assert rate >= 0.8
    # The same IK with big steps gets there in a fraction of the time: the baseline is slower than it needs to be.
    fast = ReachBaseline(env.obs_layout, max_step=0.1, max_joint_step=1.0)
    fast_rate, fast_steps = _success_stats(env, fast, seeds)
    assert fast_rate >= rate
    assert steps >= 2.0 * fast_steps, (steps, fast_steps)
    # A random policy practically never ends at the goal: success is not trivially true.
    random_rate = np.mean([_rollout(env, _random_policy(env, s), s)[1]["success"] for s in seeds])
    assert random_rate <= 0.1


def test_push_baseline_succeeds_most_of_the_time():
    env = PushTask()
    seeds = range(200, 210)
    rate, steps = _success_stats(env, env.baseline, seeds)
    assert rate >= 0.5
    fast = PushBaseline(env.obs_layout, push_step=0.015, max_step=0.03, max_joint_step=0.4)
    _, fast_steps = _success_stats(env, fast, seeds)
    assert steps >= 1.5 * fast_steps, (steps, fast_steps)
    random_rate = np.mean([_rollout(env, _random_policy(env, s), s)[1]["success"] for s in seeds])
    assert random_rate <= 0.2


@pytest.mark.parametrize("cls", TASKS)
def test_baseline_is_a_function_of_the_observation(cls):
    env = cls()
    obs, _ = env.reset(seed=9)
    other = cls()
    seen, _ = other.reset(seed=3)
    for _ in range(5):
        seen, *_ = other.step(other.baseline(seen))
    # Same observation -> same action, whatever the controller saw before.
    np.testing.assert_array_equal(env.baseline(obs), other.baseline(obs))
    assert env.action_space.contains(env.baseline(obs).astype(np.float32))


def test_baseline_refuses_a_layout_without_its_segments():
    with pytest.raises(ValueError, match="object_pos"):
        PushBaseline(ReachTask.obs_layout)


# ---- rendering ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", TASKS)
def test_render_overview_camera(cls):
    env = cls(render_mode="rgb_array", width=160, height=120)
    env.reset(seed=0)
    try:
        frame = env.render()
    except Exception as e:  # no OpenGL context on this machine (EGL/OSMesa missing)
        pytest.skip(f"offscreen rendering unavailable: {e}")
    assert frame.shape == (120, 160, 3) and frame.dtype == np.uint8
    assert frame.std() > 10  # an image, not a blank buffer
    env.close()
