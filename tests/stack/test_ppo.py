"""PPO: the clipped objective's gradient, the value clip, the first-minibatch ratio, KL early stop, and learning."""

import csv
import math

import pytest
import torch

from stack.algos.ppo import PPO, ppo_clip_loss, value_loss
from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage

EPS = 0.2


def _ratio_grad(ratios, adv):
    r = torch.tensor(ratios, requires_grad=True)
    ppo_clip_loss(r, torch.tensor(adv), EPS).backward()
    return r.grad.tolist()


def test_clip_loss_value_by_hand():
    # max(−Â·r, −Â·clip(r)): r=1.5, Â=2 → max(−3, −2.4) = −2.4;  r=0.5, Â=−1 → max(0.5, 0.8) = 0.8
    loss = ppo_clip_loss(torch.tensor([1.5, 0.5]), torch.tensor([2.0, -1.0]), EPS)
    assert float(loss) == pytest.approx((-2.4 + 0.8) / 2)


def test_clip_gradient_is_zero_beyond_the_clip_on_the_improving_side():
    # Â > 0: r > 1+ε is clipped (no incentive to push further); r < 1−ε is not (the loss still pulls it up).
    g = _ratio_grad([1.5, 0.5, 1.1], [2.0, 2.0, 2.0])
    assert g[0] == 0.0
    assert g[1] == pytest.approx(-2.0 / 3)
    assert g[2] == pytest.approx(-2.0 / 3)
    # Â < 0: r < 1−ε is clipped; r > 1+ε is not.
    g = _ratio_grad([0.5, 1.5, 0.9], [-2.0, -2.0, -2.0])
    assert g[0] == 0.0
    assert g[1] == pytest.approx(2.0 / 3)
    assert g[2] == pytest.approx(2.0 / 3)


def test_value_clipping_formula_by_hand():
    v, old, ret = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0]), torch.tensor([3.0, 0.5])
    # sample 0: unclipped (2−3)² = 1; clipped V = 1 + 0.2 = 1.2 → (1.2−3)² = 3.24; max = 3.24
    # sample 1: unclipped (0−0.5)² = 0.25; clipped V = 1 − 0.2 = 0.8 → (0.8−0.5)² = 0.09; max = 0.25
    assert float(value_loss(v, old, ret, clip=0.2)) == pytest.approx(0.5 * (3.24 + 0.25) / 2)
    assert float(value_loss(v, old, ret, clip=None)) == pytest.approx(0.5 * (1.0 + 0.25) / 2)
    # the clipped branch only ever raises the loss, and its gradient w.r.t. V is zero where it wins
    vv = v.clone().requires_grad_(True)
    value_loss(vv, old, ret, clip=0.2).backward()
    assert vv.grad.tolist() == pytest.approx([0.0, 0.5 * 2 * (0.0 - 0.5) / 2])


# ---- one real update on the point mass ----------------------------------------------------------------------------
def _rollout(cfg: PPOConfig, seed: int = 0):
    from policies import GaussianPolicy, ValueNet

    from sim.pool import make_pool

    torch.manual_seed(seed)
    envs = make_pool("point_mass", 4, backend="sync", seed=seed)
    policy = GaussianPolicy(4, 2, hidden=(32, 32), activation="tanh", log_std_init=0.0)
    algo = PPO(policy, ValueNet(4, hidden=(32, 32), activation="tanh"), cfg, seed=seed)
    collector = RolloutCollector(envs, ObsNormalizer(4), RewardScaler(4, cfg.gamma),
                                 ActionScaler.for_space(envs.single_action_space))
    storage = RolloutStorage(cfg.rollout_steps, 4, 4, 2)
    collector.reset(seed=seed)
    collector.collect(algo, storage)
    envs.close()
    algo.compute_returns(storage)
    return algo, storage


def test_ratio_is_one_on_the_first_minibatch_of_the_first_epoch():
    algo, storage = _rollout(PPOConfig(rollout_steps=32, num_minibatches=4, update_epochs=2))
    # raw (unclipped) samples must be stored: the scaled env actions would give another log-prob
    assert storage.actions.abs().max() > 1.0
    info = algo.update(storage)
    assert info["first_ratio_dev"] < 1e-5
    assert info["approx_kl"] > 0.0  # later minibatches did move the policy


def test_kl_early_stop_stops_the_epochs():
    cfg = PPOConfig(rollout_steps=32, num_minibatches=4, update_epochs=8, lr=1e-2, target_kl=1e-6)
    algo, storage = _rollout(cfg)
    info = algo.update(storage)
    assert info["epochs"] == 1.0 and info["last_approx_kl"] > 1e-6
    cfg_no_stop = PPOConfig(rollout_steps=32, num_minibatches=4, update_epochs=8, lr=1e-2, target_kl=None)
    algo, storage = _rollout(cfg_no_stop)
    assert algo.update(storage)["epochs"] == 8.0


# ---- learning --------------------------------------------------------------------------------------------------------
def _point_mass_run(tmp_path, steps: int, name: str):
    from stack.train import train

    cfg = TrainConfig(env=EnvConfig(task="point_mass", num_envs=8, backend="sync"),
                      ppo=PPOConfig(rollout_steps=64, num_minibatches=8), total_env_steps=steps,
                      eval_every=0, eval_episodes=10, checkpoint_every=0, name=name, runs_dir=str(tmp_path),
                      progress=False, seed=3)
    run = train(cfg)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    first = float(rows[0]["train_return"])
    final = float(rows[-1]["eval_return"])
    return first, final


def test_ppo_learns_the_point_mass(tmp_path):
    # Random actions score ≈ 2 over 50 steps; a PD controller ≈ 44. A CI-sized budget: 12k env steps (~10 s).
    first, final = _point_mass_run(tmp_path, 12_288, "pm")
    assert first < 15.0
    assert final > 30.0 and final > first + 20.0


@pytest.mark.slow
def test_ppo_learns_the_point_mass_long(tmp_path, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("long run: select with -m slow")
    _, final = _point_mass_run(tmp_path, 100_000, "pm-long")
    assert final > 42.0
    assert not math.isnan(final)
