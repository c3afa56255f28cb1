"""PPO with SAC's automatic temperature (``ppo.auto_entropy``) and entropy-regularised returns
(``ppo.entropy_in_returns``): the direction of α's step, the soft rewards GAE sees, and the checkpoint round trip."""

from __future__ import annotations

import math

import pytest
import torch

from policies import GaussianPolicy, ValueNet
from stack.algos.gae import compute_gae
from stack.algos.ppo import PPO
from stack.config import PPOConfig
from stack.rollout import RolloutStorage

torch.set_num_threads(1)
OBS_DIM, ACT_DIM = 3, 2


def make_ppo(log_std: float = 0.0, **kw) -> PPO:
    torch.manual_seed(0)
    cfg = PPOConfig(lr=1e-2, update_epochs=2, num_minibatches=2, **kw)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(8,), log_std_init=log_std)
    return PPO(policy, ValueNet(OBS_DIM, (8,), "tanh"), cfg)


def storage_of(algo: PPO, t: int = 16, n: int = 4) -> RolloutStorage:
    """A rollout of the algorithm's own samples on random observations, random rewards, no episode end."""
    g = torch.Generator().manual_seed(1)
    st = RolloutStorage(t, n, OBS_DIM, ACT_DIM, extras_spec=algo.extras_spec())
    for i in range(t):
        obs = torch.randn(n, OBS_DIM, generator=g)
        chunk, extras, values = algo.act(obs)
        st.obs[i], st.actions[i], st.values[i] = obs, chunk, values
        st.put_extras(i, extras)
    st.rewards.copy_(torch.randn(t, n, generator=g))
    st.next_values.copy_(torch.randn(t, n, generator=g))
    st.executed.fill_(1)
    return st


def gaussian_entropy(log_std: float) -> float:
    return ACT_DIM * (0.5 * math.log(2 * math.pi * math.e) + log_std)


@pytest.mark.parametrize("log_std, target, grows", [(0.0, -ACT_DIM, False), (-2.0, 1.0, True)])
def test_alpha_grows_below_the_target_entropy_and_shrinks_above_it(log_std, target, grows):
    # H(log σ=0) = 2.84 nats > −2: α must shrink; H(log σ=−2) = −1.16 < 1: α must grow.
    assert (gaussian_entropy(log_std) < target) == grows
    algo = make_ppo(log_std, auto_entropy=True, ent_coef=0.05, target_entropy=target)
    st = storage_of(algo)
    algo.compute_returns(st)
    out = algo.update(st)
    assert (out["alpha"] > 0.05) == grows and out["alpha"] != pytest.approx(0.05)


def test_default_target_is_minus_the_action_dimension():
    assert make_ppo(auto_entropy=True, ent_coef=0.01).target_entropy == -ACT_DIM


def test_auto_entropy_needs_a_positive_start():
    with pytest.raises(ValueError, match="ppo.ent_coef"):
        make_ppo(auto_entropy=True, ent_coef=0.0)


def test_entropy_in_returns_runs_gae_on_soft_rewards_and_keeps_the_task_rewards():
    algo = make_ppo(ent_coef=0.3, entropy_in_returns=True)
    st = storage_of(algo)
    rewards = st.rewards.clone()
    algo.compute_returns(st)
    soft = rewards - 0.3 * st.extras["log_probs"]
    adv, ret = compute_gae(soft, st.values, st.next_values, st.terminated, st.episode_end, algo.cfg.gamma,
                           algo.cfg.gae_lambda)
    assert torch.allclose(st.advantages, adv) and torch.allclose(st.returns, ret)
    assert torch.equal(st.rewards, rewards)
    plain = make_ppo(ent_coef=0.3)
    st2 = storage_of(plain)
    plain.compute_returns(st2)
    assert not torch.allclose(st2.returns, ret)  # the option changes the returns (the log-probs are not 0)


def test_the_temperature_is_checkpointed():
    algo = make_ppo(log_std=-2.0, auto_entropy=True, ent_coef=0.05, target_entropy=1.0)
    st = storage_of(algo)
    algo.compute_returns(st)
    algo.update(st)
    state = algo.state_dict()
    fresh = make_ppo(log_std=-2.0, auto_entropy=True, ent_coef=0.05, target_entropy=1.0)
    fresh.load_state_dict(state)
    assert float(fresh.alpha) == pytest.approx(float(algo.alpha)) and float(algo.alpha) != pytest.approx(0.05)
    state.pop("log_alpha")
    with pytest.raises(KeyError, match="log_alpha"):
        fresh.load_state_dict(state)
