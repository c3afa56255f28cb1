"""The on-policy runner: run directory contents, exact resume, and save → load of the trained policy."""

import csv
import json

import numpy as np
import pytest
import torch

from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.controller import PolicyController
from stack.runners import TIMING_KEYS, eval_seed
from stack.train import train

BATCH = 4 * 32


def _cfg(tmp_path, name, steps, backend="sync", **kw):
    return TrainConfig(env=EnvConfig(task="point_mass", num_envs=4, backend=backend, num_workers=2 if backend == "pool"
                                     else None),
                       ppo=PPOConfig(rollout_steps=32, num_minibatches=4, update_epochs=4, anneal_lr=False),
                       total_env_steps=steps, eval_every=2 * BATCH, eval_episodes=4, checkpoint_every=2 * BATCH,
                       name=name, runs_dir=str(tmp_path), progress=False, seed=7, **kw)


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v != "" and k not in TIMING_KEYS} for r in csv.DictReader(f)]


def test_tiny_run_writes_the_run_directory(tmp_path):
    # The real worker pool (2 processes), as a user's run would use it.
    run = train(_cfg(tmp_path, "tiny", 3 * BATCH, backend="pool"))
    assert run == tmp_path / "tiny"
    for f in ("config.yaml", "metrics.csv", "learning_curve.png", "checkpoints/latest/policy/model.safetensors",
              "checkpoints/latest/critic/config.json", "checkpoints/latest/normalization.json",
              "checkpoints/latest/trainer.pt", "checkpoints/latest/meta.json"):
        assert (run / f).exists(), f
    rows = _rows(run)
    assert [r["env_steps"] for r in rows] == [BATCH, 2 * BATCH, 3 * BATCH]
    for key in ("train_return", "policy_loss", "value_loss", "approx_kl", "clipfrac", "lr", "entropy"):
        assert key in rows[-1], key
    assert "eval_return" in rows[1] and "eval_return" in rows[2] and "eval_return" not in rows[0]
    assert "eval_success" in rows[-1]  # the point mass reports success
    meta = json.loads((run / "checkpoints/latest/meta.json").read_text())
    assert meta["env_steps"] == 3 * BATCH and meta["iteration"] == 3
    with pytest.raises(FileExistsError):
        train(_cfg(tmp_path, "tiny", BATCH))


def test_resume_continues_exactly_as_the_uninterrupted_run(tmp_path):
    whole = _rows(train(_cfg(tmp_path, "whole", 4 * BATCH)))
    part = train(_cfg(tmp_path, "part", 2 * BATCH))
    assert [r["env_steps"] for r in _rows(part)] == [BATCH, 2 * BATCH]
    resumed = train(_cfg(tmp_path, "ignored", 4 * BATCH, resume=str(part)))
    assert resumed == part
    rows = _rows(resumed)
    assert [r["env_steps"] for r in rows] == [BATCH, 2 * BATCH, 3 * BATCH, 4 * BATCH]
    assert [r["iteration"] for r in rows] == [1, 2, 3, 4]
    for a, b in zip(whole, rows):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), (a["env_steps"], k)
    meta = json.loads((part / "checkpoints/latest/meta.json").read_text())
    assert meta["env_steps"] == 4 * BATCH


def test_saved_policy_loads_to_the_same_actions(tmp_path):
    from policies import load_policy

    from stack.evaluate import evaluate

    run = train(_cfg(tmp_path, "saved", 2 * BATCH))
    policy = PolicyController.from_checkpoint(run)
    obs = np.random.default_rng(0).normal(size=(16, 4)) * 2.0
    # by hand from the files: normalise, Gaussian mean, clip to [−1, 1], scale to the bounds ±2
    ckpt = run / "checkpoints" / "latest"
    norm = json.loads((ckpt / "normalization.json").read_text())
    x = np.clip((obs - np.array(norm["obs"]["mean"])) / np.sqrt(np.array(norm["obs"]["var"]) + norm["obs"]["epsilon"]),
                -norm["obs"]["clip"], norm["obs"]["clip"])
    net = load_policy(ckpt / "policy")
    with torch.no_grad():
        mean = net.act(torch.as_tensor(x, dtype=torch.float32), deterministic=True)[:, 0].numpy()
    assert norm["action"]["mode"] == "minmax" and norm["action"]["high"] == [2.0, 2.0]
    np.testing.assert_allclose(policy(obs), 2.0 * np.clip(mean, -1, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(policy(obs[0]), policy(obs)[0], rtol=1e-5, atol=1e-6)  # batch 1 vs 16: float32 sums
    # The loaded policy replays the final evaluation the in-memory policy logged, exactly.
    final = _rows(run)[-1]
    again = evaluate(policy, "point_mass", episodes=4, seed=eval_seed(7))
    assert again["return_mean"] == final["eval_return"]


def test_r2s_eval_json_reproduces_the_last_eval_return(tmp_path, capsys):
    from stack import cli

    run = train(_cfg(tmp_path, "evaljson", 2 * BATCH))
    assert cli.main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["episodes"] == 4 and result["seed"] == eval_seed(7)
    assert result["return_mean"] == result["metrics_csv_return"] == _rows(run)[-1]["eval_return"]
    assert 0.0 <= result["success_rate"] <= 1.0


def test_seeds_train_each_seed_and_aggregate(tmp_path):
    import dataclasses

    cfg = dataclasses.replace(_cfg(tmp_path, "group", BATCH), seeds=(1, 2, 3))
    group = train(cfg)
    assert group == tmp_path / "group"
    summary = json.loads((group / "summary.json").read_text())
    finals = [_rows(group / f"seed-{s}")[-1]["eval_return"] for s in (1, 2, 3)]
    assert summary["n"] == 3 and summary["seeds"] == [1, 2, 3]
    assert summary["eval_return"]["values"] == finals
    assert summary["eval_return"]["mean"] == pytest.approx(np.mean(finals))
    assert summary["eval_return"]["se"] == pytest.approx(np.std(finals, ddof=1) / np.sqrt(3))
    assert (group / "learning_curve.png").exists() and (group / "seeds.csv").exists()
    # each seed's run is the run `--seed s` gives
    single = _rows(train(dataclasses.replace(_cfg(tmp_path, "alone", BATCH), seed=2)))
    assert single == _rows(group / "seed-2")
