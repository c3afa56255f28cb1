"""The task base class (sim.core.MujocoTask): domain randomisation, observation noise, action latency, action checks.

Exercised through HopperTask, the simplest concrete task.
"""

from __future__ import annotations

import numpy as np
import pytest

from sim.core import ActionError, DomainRandomization
from sim.tasks.locomotion import HopperTask

RANGES = {"friction": (0.5, 1.5), "mass": (0.8, 1.2), "joint_damping": (0.5, 2.0), "armature": (0.5, 2.0),
          "actuator_gain": (0.9, 1.1)}


def _params(env) -> dict[str, np.ndarray]:
    m = env.model
    return {"friction": m.geom_friction[:, 0].copy(), "mass": m.body_mass.copy(), "inertia": m.body_inertia.copy(),
            "damping": m.dof_damping.copy(), "armature": m.dof_armature.copy(), "gain": m.actuator_gainprm[:, 0].copy()}


def test_randomisation_is_off_by_default():
    nominal = _params(HopperTask())
    env = HopperTask()
    assert not env.randomization.enabled
    for seed in range(3):
        env.reset(seed=seed)
        for key, value in _params(env).items():
            np.testing.assert_array_equal(value, nominal[key], err_msg=key)
    assert env._latency == 0


def test_randomisation_changes_params_per_reset_and_is_seeded():
    nominal = _params(HopperTask())
    a, b = HopperTask(randomization=RANGES), HopperTask(randomization=dict(RANGES))
    assert a.randomization.enabled and a.model is not HopperTask().model  # own model copy
    seen = []
    for seed in (1, 2):
        a.reset(seed=seed)
        b.reset(seed=seed)
        pa, pb = _params(a), _params(b)
        for key in pa:
            np.testing.assert_array_equal(pa[key], pb[key], err_msg=key)  # deterministic under a seed
        seen.append(pa)
        scale = pa["mass"][1:] / nominal["mass"][1:]
        assert np.allclose(scale, scale[0]) and 0.8 <= scale[0] <= 1.2
        np.testing.assert_allclose(pa["inertia"][1:] / nominal["inertia"][1:], scale[0])
        f = pa["friction"] / nominal["friction"]
        assert 0.5 <= f[0] <= 1.5
        g = pa["gain"] / nominal["gain"]
        assert 0.9 <= g[0] <= 1.1
    for key in ("friction", "mass", "gain"):
        assert not np.array_equal(seen[0][key], seen[1][key]), key  # new draw each episode
        assert not np.array_equal(seen[0][key], nominal[key]), key
    a.reset()  # scaled from nominal each time, never compounding
    assert np.all(_params(a)["mass"][1:] / nominal["mass"][1:] <= 1.2 + 1e-12)


def test_randomised_dynamics_differ_and_reproduce():
    def rollout(randomization, seed):
        env = HopperTask(randomization=randomization)
        env.reset(seed=seed)
        return np.array([env.step(np.full(3, 0.5))[0] for _ in range(20)])

    plain = rollout(None, 0)
    heavy = rollout({"mass": (1.5, 1.5)}, 0)
    assert not np.allclose(plain, heavy)
    np.testing.assert_array_equal(rollout(RANGES, 5), rollout(RANGES, 5))


def test_from_dict_refuses_unknown_fields():
    with pytest.raises(ValueError, match="unknown field"):
        DomainRandomization.from_dict({"gravity": (0.9, 1.1)})
    assert DomainRandomization.from_dict({"mass": [0.9, 1.1]}).mass == (0.9, 1.1)
    assert not DomainRandomization.from_dict(None).enabled


def test_observation_noise():
    clean, noisy = HopperTask(), HopperTask(randomization={"obs_noise_std": 0.05})
    diffs = []
    for seed in range(3):
        noisy.reset(seed=seed)
        for _ in range(30):
            obs = noisy.step(np.zeros(3))[0]
            diffs.append(obs - noisy._get_obs())
    diffs = np.array(diffs)
    assert abs(diffs.std() - 0.05) < 0.01 and abs(diffs.mean()) < 0.01
    o0, _ = clean.reset(seed=0)
    assert np.array_equal(o0, clean._get_obs())  # no noise by default
    # seeded: the same noise again
    a, b = HopperTask(randomization={"obs_noise_std": 0.05}), HopperTask(randomization={"obs_noise_std": 0.05})
    np.testing.assert_array_equal(a.reset(seed=9)[0], b.reset(seed=9)[0])


@pytest.mark.parametrize("k", [1, 3])
def test_action_latency_delays_by_the_drawn_steps(k):
    env = HopperTask(randomization={"action_latency_steps": k})
    # each episode draws a delay in [0, k]: find a seed that draws exactly k
    for seed in range(100):
        env.reset(seed=seed)
        if env._latency == k:
            break
    else:
        pytest.fail(f"no seed drew latency {k}")
    actions = [np.full(3, 0.1 * (i + 1)) for i in range(k + 4)]
    executed = []
    for a in actions:
        env.step(a)
        executed.append(env.data.ctrl.copy())
    for t in range(len(actions)):
        np.testing.assert_array_equal(executed[t], actions[max(0, t - k)])  # the first k+1 steps run action 0
    env.reset(seed=seed)  # the queue starts empty each episode
    env.step(actions[-1])
    np.testing.assert_array_equal(env.data.ctrl, actions[-1])


def test_no_latency_executes_at_once():
    env = HopperTask()
    env.reset(seed=0)
    env.step(np.array([0.1, 0.2, 0.3]))
    np.testing.assert_array_equal(env.data.ctrl, [0.1, 0.2, 0.3])


def test_action_error_leaves_state_and_counter_alone():
    env = HopperTask(max_episode_steps=3)
    env.reset(seed=0)
    before = env.data.qpos.copy()
    with pytest.raises(ActionError, match="shape"):
        env.step(np.zeros(4))
    with pytest.raises(ActionError, match="NaN/inf"):
        env.step(np.array([0.0, np.nan, 0.0]))
    np.testing.assert_array_equal(env.data.qpos, before)
    truncated = [env.step(np.zeros(3))[3] for _ in range(3)]
    assert truncated == [False, False, True]  # refused actions did not count as steps
