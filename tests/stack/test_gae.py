"""GAE against hand-computed numbers, and the collector's bootstrapping at same-step autoreset episode ends."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from stack.algos.gae import compute_gae
from stack.normalize import ObsNormalizer, RewardScaler, RunningMeanStd
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage

# One env, five steps, γ = 0.9, λ = 0.8 (γλ = 0.72). Episode A: steps 0–1, ends at step 1; episode B: steps 2–3,
# TERMINATES at step 3; episode C: step 4, still running when the rollout stops (bootstrap V(s_5) = 3).
REWARDS = [1.0, 2.0, 3.0, 4.0, 5.0]
VALUES = [0.5, 1.0, 1.5, 2.0, 2.5]
# next_values: V(s_1) = values[1]; V(final_obs of A) = 10; V(s_3) = values[3]; V(final_obs of B) = 99 (a terminal
# state: must not be used); V(s_5) = 3.
NEXT_VALUES = [1.0, 10.0, 2.0, 99.0, 3.0]


def _run(terminated, episode_end):
    t = lambda x: torch.tensor(x, dtype=torch.float64)[:, None]  # noqa: E731  [T, N=1]
    adv, ret = compute_gae(t(REWARDS), t(VALUES), t(NEXT_VALUES), t(terminated).bool(), t(episode_end).bool(),
                           gamma=0.9, lam=0.8)
    return adv[:, 0].tolist(), ret[:, 0].tolist()


def test_gae_truncation_bootstraps_and_termination_does_not():
    # Episode A ends by a time limit at step 1.
    adv, ret = _run(terminated=[0, 0, 0, 1, 0], episode_end=[0, 1, 0, 1, 0])
    # by hand:
    # δ4 = 5 + 0.9·3 − 2.5 = 5.2                      A4 = 5.2
    # δ3 = 4 + 0 (terminal) − 2.0 = 2.0               A3 = 2.0          (trace cut: episode ended)
    # δ2 = 3 + 0.9·2.0 − 1.5 = 3.3                    A2 = 3.3 + 0.72·2.0 = 4.74
    # δ1 = 2 + 0.9·10 (V(final_obs)) − 1.0 = 10.0     A1 = 10.0         (trace cut: episode ended)
    # δ0 = 1 + 0.9·1.0 − 0.5 = 1.4                    A0 = 1.4 + 0.72·10 = 8.6
    assert adv == pytest.approx([8.6, 10.0, 4.74, 2.0, 5.2], abs=1e-12)
    assert ret == pytest.approx([9.1, 11.0, 6.24, 4.0, 7.7], abs=1e-12)


def test_gae_termination_at_the_same_step_cuts_the_bootstrap():
    # Same data, but episode A TERMINATES at step 1: V(final_obs) = 10 must be ignored.
    adv, _ = _run(terminated=[0, 1, 0, 1, 0], episode_end=[0, 1, 0, 1, 0])
    # δ1 = 2 + 0 − 1.0 = 1.0 → A1 = 1.0;  A0 = 1.4 + 0.72·1.0 = 2.12
    assert adv == pytest.approx([2.12, 1.0, 4.74, 2.0, 5.2], abs=1e-12)


def test_gae_refuses_mismatched_shapes():
    z = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="next_values"):
        compute_gae(z, z, torch.zeros(5, 3), z.bool(), z.bool(), 0.99, 0.95)


# ---- the collector's bootstrapping --------------------------------------------------------------------------------
class _ValueIsFirstCoordinate:
    """An agent with V(obs) = obs[:, 0] and action 0: the test can recompute what each V should be."""

    def __init__(self, act_dim):
        self.act_dim = act_dim

    def act(self, obs):
        n = obs.shape[0]
        return torch.zeros(n, 1, self.act_dim), {"log_probs": torch.zeros(n)}, obs[:, 0].clone()

    def value(self, obs):
        return obs[:, 0].clone()


def _stand_in_vector_env(num_envs, max_steps):
    """Gymnasium's own SyncVectorEnv with same-step autoreset (the contract sim.pool follows)."""
    from sim.tasks.point_mass import PointMassTask

    return gym.vector.SyncVectorEnv(
        [lambda: PointMassTask(max_episode_steps=max_steps) for _ in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


@pytest.mark.parametrize("backend", ["r2s-pool-sync", "gymnasium"])
def test_collector_bootstraps_from_final_obs_not_the_next_episode(backend):
    num_envs, steps = 3, 7
    if backend == "gymnasium":
        envs = _stand_in_vector_env(num_envs, max_steps=3)
    else:
        from sim.pool import make_pool

        envs = make_pool("point_mass", num_envs, backend="sync", task_kwargs={"max_episode_steps": 3})
    seen_final = []
    real_step = envs.step

    def step(actions):  # record the final observations the env hands back
        out = real_step(actions)
        seen_final.append(out[4].get("final_obs"))
        return out

    envs.step = step
    obs_norm = ObsNormalizer(4, enabled=False)
    collector = RolloutCollector(envs, obs_norm, RewardScaler(num_envs, 0.99, enabled=False),
                                 ActionScaler(envs.single_action_space.low, envs.single_action_space.high))
    storage = RolloutStorage(steps, num_envs, 4, 2)
    collector.reset(seed=0)
    stats = collector.collect(_ValueIsFirstCoordinate(2), storage)
    end = storage.episode_end.numpy()
    assert end[2].all() and end[5].all() and end.sum() == 2 * num_envs  # time limit 3: steps 2 and 5 end
    assert not storage.terminated.any()
    nv, v = storage.next_values.numpy(), storage.values.numpy()
    for t in range(steps):
        for i in range(num_envs):
            if end[t, i]:
                # V(final_obs), not V(first obs of the next episode) = values[t + 1]
                assert nv[t, i] == pytest.approx(float(seen_final[t][i][0]))
                assert nv[t, i] != pytest.approx(v[t + 1, i])
            elif t + 1 < steps:
                assert nv[t, i] == v[t + 1, i]
    assert len(stats.episode_returns) == 2 * num_envs
    assert stats.episode_lengths == [3] * (2 * num_envs)
    assert len(stats.successes) == 2 * num_envs
    envs.close()


# ---- normalisers and action scaling ---------------------------------------------------------------------------------
def test_running_mean_std_matches_numpy_over_batches():
    rng = np.random.default_rng(0)
    data = rng.normal(3.0, 2.0, size=(1000, 4))
    rms = RunningMeanStd((4,), epsilon=1e-12)
    for chunk in np.array_split(data, 7):
        rms.update(chunk)
    np.testing.assert_allclose(rms.mean, data.mean(0), rtol=1e-9)
    np.testing.assert_allclose(rms.var, data.var(0), rtol=1e-9)


def test_reward_scaler_resets_the_return_at_episode_ends():
    scaler = RewardScaler(2, gamma=0.5, clip=100.0)
    scaler(np.array([1.0, 1.0]), np.array([False, True]))
    assert scaler.returns.tolist() == [1.0, 0.0]
    scaler(np.array([2.0, 2.0]), np.array([False, False]))
    assert scaler.returns.tolist() == [2.5, 2.0]  # 0.5·1 + 2 and 0.5·0 + 2


def test_action_scaler_maps_unit_box_to_bounds_and_clips():
    s = ActionScaler([-2.0, 0.0], [2.0, 1.0])
    assert s.mode == "minmax"
    np.testing.assert_allclose(s.to_env(np.array([[1.0, -1.0], [0.5, 0.0], [3.0, -7.0]])),
                               [[2.0, 0.0], [1.0, 0.5], [2.0, 0.0]])
    assert ActionScaler([-np.inf], [np.inf]).mode == "raw"
    assert ActionScaler.from_state_dict(s.state_dict()).state_dict() == s.state_dict()
