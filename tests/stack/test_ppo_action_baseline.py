"""PPO with action-dependent factorized baselines (``ppo.action_baseline``): the update's direction on a bandit (a
flipped advantage sign fails here), its surrogate's gradient at r = 1 is the unbiased per-dimension estimator of
``stack.algos.action_baseline``, and the baseline network trains and checkpoints with the algorithm."""

from __future__ import annotations

import torch

from policies import GaussianPolicy, ValueNet
from stack.algos.action_baseline import (MaskedActionBaseline, action_baseline_gradient, per_dim_log_probs,
                                         per_dimension_clip_loss)
from stack.algos.ppo import PPO
from stack.config import PPOConfig
from tests.stack.test_algorithm_signs import (  # noqa: F401  (_warm_fused_adam: an autouse fixture)
    ACT_DIM, OBS_DIM, _warm_fused_adam, bandit_obs, bandit_storage, favour_positive_x)

torch.set_num_threads(1)


def make(seed: int = 0, **cfg) -> PPO:
    torch.manual_seed(seed)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(16,), log_std_init=-0.5)
    return PPO(policy, ValueNet(OBS_DIM, (16,), "tanh"),
               PPOConfig(**{"lr": 1e-2, "update_epochs": 2, "num_minibatches": 4, "action_baseline": True,
                            "hidden": (16,), **cfg}))


def reward_storage(algo: PPO, obs: torch.Tensor, reward_of):
    """The bandit's rollout with Q̂ = R = V + reward: the per-dimension advantages are built from the returns."""
    st = bandit_storage(algo, obs, reward_of)
    st.returns[:, 0] = st.values[:, 0] + st.advantages[:, 0]
    return st


def test_the_update_moves_the_mean_toward_the_higher_return_action():
    algo = make()
    obs = bandit_obs()
    with torch.no_grad():
        before = algo.policy.act(obs[:1], deterministic=True)[0, 0]
    out = algo.update(reward_storage(algo, obs, favour_positive_x))
    with torch.no_grad():
        shift = algo.policy.act(obs[:1], deterministic=True)[0, 0] - before
    # x (whose action the return rewards) moves up (a flipped sign of Â_i moves it down); y, no signal, moves less
    assert shift[0] > 0.15, shift
    assert shift[0] > shift[1].abs(), shift
    assert out["first_ratio_dev"] < 1e-5 and "baseline_loss" in out


def test_the_surrogate_gradient_at_ratio_one_is_the_per_dimension_estimator():
    torch.manual_seed(1)
    policy = GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(8,), log_std_init=-0.3)
    obs, actions, q_hat = torch.randn(64, OBS_DIM), torch.randn(64, ACT_DIM), torch.randn(64)
    baselines = MaskedActionBaseline(OBS_DIM, ACT_DIM, (8,))(obs, actions).detach()
    new = per_dim_log_probs(policy, obs, actions)
    loss = per_dimension_clip_loss(new, new.detach(), q_hat[:, None] - baselines, clip=0.2)
    grad = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(policy.parameters()))])
    expected = action_baseline_gradient(policy, obs, actions, q_hat, baselines)
    torch.testing.assert_close(-grad, expected)  # the loss descends along the ascent direction of J


def test_the_baseline_fits_the_returns_and_is_saved_with_the_trainer_state():
    algo = make(seed=2, lr=3e-3)
    obs = bandit_obs()
    st = reward_storage(algo, obs, favour_positive_x)
    losses = [algo.update(st)["baseline_loss"] for _ in range(5)]
    assert losses[-1] < losses[0], losses
    other = make(seed=3)
    other.load_state_dict(algo.state_dict())
    for a, b in zip(algo.action_baseline.parameters(), other.action_baseline.parameters()):
        assert torch.equal(a, b)
