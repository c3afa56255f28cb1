"""SAC: the replay buffer, the TD target's treatment of terminal states, and learning on the point mass."""

import csv

import numpy as np
import pytest
import torch

from stack.algos.sac import SAC
from stack.config import EnvConfig, SACConfig, TrainConfig
from stack.replay import ReplayBuffer


def test_replay_buffer_wraps_around_and_keeps_the_latest():
    buf = ReplayBuffer(5, obs_dim=1, act_dim=1)
    for k in range(3):  # 3 vector steps of 2 envs = 6 transitions into 5 slots
        r = np.array([2 * k, 2 * k + 1], np.float32)
        buf.add(r[:, None], r[:, None], r, r[:, None] + 100, np.array([0, 1]))
    assert buf.size == 5
    assert sorted(buf.rewards.tolist()) == [1, 2, 3, 4, 5]  # transition 0 was overwritten
    batch = buf.sample(64, torch.device("cpu"))
    assert torch.equal(batch["next_obs"][:, 0], batch["rewards"] + 100)
    assert torch.equal(batch["terminated"], (batch["rewards"] % 2 == 1).float())
    # a checkpointed buffer samples exactly as the original would
    state = buf.state_dict()
    again = ReplayBuffer(5, obs_dim=1, act_dim=1)
    again.load_state_dict(state)
    a, b = buf.sample(16, torch.device("cpu")), again.sample(16, torch.device("cpu"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def _sac(gamma=0.5):
    from policies import GaussianPolicy, QNet

    torch.manual_seed(0)
    actor = GaussianPolicy(2, 1, hidden=(8,), activation="relu", state_dependent_std=True, squash="tanh")
    return SAC(actor, QNet(2, 1, hidden=(8,)), SACConfig(gamma=gamma, q_lr=0.0, policy_lr=0.0, autotune=False))


def test_td_target_ignores_the_next_state_only_at_termination():
    sac = _sac()
    obs = torch.zeros(2, 2)
    batch = {"obs": obs, "actions": torch.zeros(2, 1), "rewards": torch.tensor([1.0, 1.0]),
             "next_obs": torch.ones(2, 2), "terminated": torch.tensor([1.0, 0.0])}
    # With lr 0 the networks do not move: recompute the target the update must have regressed towards.
    q1, q2 = sac.qnet(obs, batch["actions"])
    gen_state = sac.generator.get_state()
    out = sac.update(batch)
    sac.generator.set_state(gen_state)
    with torch.no_grad():
        next_a, next_lp = sac._sample(batch["next_obs"])
        soft = torch.minimum(*sac.qnet_target(batch["next_obs"], next_a)) - sac.alpha * next_lp
    target = torch.tensor([1.0, 1.0 + 0.5 * float(soft[1])])  # terminated: r only; else r + γ·soft V(s')
    expected = ((q1 - target) ** 2).mean() + ((q2 - target) ** 2).mean()
    assert float(out["q_loss"]) == pytest.approx(float(expected.detach()), rel=1e-5)


def test_sac_learns_the_point_mass(tmp_path):
    from stack.train import train

    # 1000 gradient steps (batch 64, 64×64 nets) after 500 random steps; random actions score ≈ 2, learned ≈ 40+.
    cfg = TrainConfig(algo="sac", env=EnvConfig(task="point_mass", num_envs=2, backend="sync"),
                      sac=SACConfig(learning_starts=500, replay_ratio=0.4, batch_size=64, hidden=(64, 64),
                                    log_every=500),
                      total_env_steps=3000, eval_every=0, eval_episodes=10, name="sac", runs_dir=str(tmp_path),
                      progress=False, seed=1)
    run = train(cfg)
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    first, final = float(rows[0]["train_return"]), float(rows[-1]["eval_return"])
    assert first < 15.0
    assert final > 30.0
    assert (run / "checkpoints/latest/policy/model.safetensors").exists()


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v and k not in ("steps_per_s", "time_s", "eval_s")}
                for r in csv.DictReader(f)]


def _tiny(tmp_path, name, steps, **kw):
    return TrainConfig(algo="sac", env=EnvConfig(task="point_mass", num_envs=2, backend="sync"),
                       sac=SACConfig(learning_starts=100, replay_ratio=0.5, batch_size=32, hidden=(16, 16),
                                     log_every=100),
                       total_env_steps=steps, eval_every=200, eval_episodes=2, checkpoint_every=200, name=name,
                       runs_dir=str(tmp_path), progress=False, seed=2, **kw)


def test_sac_resume_continues_exactly_and_r2s_eval_reproduces_it(tmp_path):
    from stack import checkpoint
    from stack.evaluate import evaluate_run
    from stack.train import train

    whole = _rows(train(_tiny(tmp_path, "whole", 600)))
    part = train(_tiny(tmp_path, "part", 400))
    assert checkpoint.load(part).trainer_state()["buffer"]["size"] == 400  # the replay buffer travels along
    resumed = _rows(train(_tiny(tmp_path, "ignored", 600, resume=str(part))))
    assert [r["env_steps"] for r in resumed] == [100, 200, 300, 400, 500, 600]
    assert whole == resumed
    result = evaluate_run(part)
    assert result["return_mean"] == result["metrics_csv_return"] == resumed[-1]["eval_return"]
