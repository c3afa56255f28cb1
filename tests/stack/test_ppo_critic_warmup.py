"""PPO's critic warm-up (fine-tuning): the first ``n_critic_warmup_itr`` updates move the critic only, the next one
moves the actor; the critic's own learning rate is its optimiser group's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from policies import GaussianPolicy, ValueNet
from stack.algos.ppo import PPO
from stack.config import PPOConfig
from stack.rollout import RolloutStorage

torch.set_num_threads(1)

OBS_DIM, ACT_DIM, T = 3, 2, 64


@pytest.fixture(scope="module", autouse=True)
def _warm_fused_adam():
    """The first fused Adam step of a process pays ~1 s of set-up: here, once, outside the tests' own time."""
    p = nn.Parameter(torch.zeros(1))
    p.grad = torch.ones(1)
    torch.optim.Adam([p], fused=True).step()


def _algo(**kw) -> PPO:
    torch.manual_seed(0)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), log_std_init=-0.5)
    cfg = PPOConfig(lr=1e-2, update_epochs=2, num_minibatches=4, **kw)
    return PPO(policy, ValueNet(OBS_DIM, (16,), "tanh"), cfg)


def _storage(algo: PPO) -> RolloutStorage:
    """A rollout of the algorithm's own samples, advantages favouring larger x, returns 2·obs_0 (a critic target
    worth fitting)."""
    obs = torch.randn(T, OBS_DIM, generator=torch.Generator().manual_seed(1))
    st = RolloutStorage(T, 1, OBS_DIM, ACT_DIM, extras_spec=algo.extras_spec())
    chunk, extras, values = algo.act(obs)
    st.obs[:, 0], st.actions[:, 0], st.values[:, 0], st.returns[:, 0] = obs, chunk, values, 2.0 * obs[:, 0]
    st.extras["log_probs"][:, 0] = extras["log_probs"]
    st.advantages[:, 0] = chunk[:, 0, 0]
    return st


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


def test_actor_is_frozen_for_exactly_the_warmup_updates():
    algo = _algo(n_critic_warmup_itr=2)
    actor, critic = _flat(algo.policy), _flat(algo.critic)
    for i in range(2):  # updates 0 and 1: critic only
        info = algo.update(_storage(algo))
        assert info["critic_warmup"] == 1.0
        assert torch.equal(_flat(algo.policy), actor), f"warm-up update {i} moved the actor"
        assert not torch.equal(_flat(algo.critic), critic), f"warm-up update {i} left the critic as it was"
        assert info["explained_variance_after"] > info["explained_variance"]
        critic = _flat(algo.critic)
    info = algo.update(_storage(algo))  # update 2: the ordinary PPO update
    assert "critic_warmup" not in info
    assert (_flat(algo.policy) - actor).abs().max() > 1e-3


def test_without_warmup_the_first_update_moves_the_actor():
    algo = _algo()
    actor = _flat(algo.policy)
    algo.update(_storage(algo))
    assert (_flat(algo.policy) - actor).abs().max() > 1e-3


def test_warmup_count_survives_a_checkpoint():
    algo = _algo(n_critic_warmup_itr=2)
    algo.update(_storage(algo))
    resumed = _algo(n_critic_warmup_itr=2)
    resumed.load_state_dict(algo.state_dict())
    actor = _flat(resumed.policy)
    resumed.update(_storage(resumed))  # the second warm-up update, not the first actor step
    assert torch.equal(_flat(resumed.policy), actor)


def test_critic_learning_rate_is_its_own_group_and_anneals_with_the_actor():
    algo = _algo(critic_lr=4e-2)
    assert [g["lr"] for g in algo.optimizer.param_groups] == pytest.approx([1e-2, 4e-2])
    algo.set_learning_rate(5e-3)
    assert [g["lr"] for g in algo.optimizer.param_groups] == pytest.approx([5e-3, 2e-2])


def test_finetune_log_std_resets_the_pretrained_std_and_keeps_the_mean():
    from types import SimpleNamespace

    from stack.algos.ppo import make_algo

    torch.manual_seed(0)
    pretrained = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), log_std_init=-1.5)
    obs = torch.randn(4, OBS_DIM)
    mean = pretrained.act(obs, deterministic=True).clone()
    cfg = SimpleNamespace(policy="gaussian", seed=0, ppo=PPOConfig(hidden=(16,), finetune_log_std=-2.3))
    algo = make_algo(cfg, OBS_DIM, ACT_DIM, pretrained=pretrained)
    assert algo.policy.log_std.detach().tolist() == pytest.approx([-2.3] * ACT_DIM)
    assert torch.equal(algo.policy.act(obs, deterministic=True), mean)
