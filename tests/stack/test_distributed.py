"""Several learner processes (stack.distributed, gloo, 2 CPU processes): one PPO update on two shards equals one
process's update on the concatenated batch, on both ranks alike; merged normaliser statistics equal those of the
concatenated data; ranks step disjoint env seeds; ``r2s train --nproc 2`` writes one run directory from rank 0.

The two ranks are spawned once for the module (torch.multiprocessing, a free local port); each writes what it
computed to a file that the tests compare with one process's results.
"""

from __future__ import annotations

import csv
import json
import socket

import numpy as np
import pytest
import torch

from stack.algos.ppo import make_algo
from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.normalize import RunningMeanStd
from stack.rollout import RolloutStorage

pytestmark = pytest.mark.distributed

WORLD = 2
T, N_RANK, OBS, ACT = 16, 3, 5, 2
"""The shared synthetic rollout: T decisions × WORLD·N_RANK envs; rank r holds envs r·N_RANK … (r + 1)·N_RANK − 1."""


def _algo_cfg() -> TrainConfig:
    # One minibatch per epoch: its gradient is the mean over the whole batch, so two shards' averaged gradients
    # are the concatenated batch's. Three epochs (three Adam steps); the value clip and advantage normalisation on.
    return TrainConfig(ppo=PPOConfig(hidden=(16, 16), num_minibatches=1, update_epochs=3, rollout_steps=T,
                                     target_kl=10.0), seed=3)


def _storage(algo, envs: slice) -> RolloutStorage:
    """The synthetic rollout's envs ``envs`` (numbers from one generator, so every process sees the same data; the
    log-probs and values from the algorithm's own initial networks, as a collector would store them)."""
    rng = np.random.default_rng(0)
    n_all = WORLD * N_RANK
    obs = rng.normal(size=(T, n_all, OBS))[:, envs]
    actions = rng.normal(size=(T, n_all, ACT))[:, envs]
    rewards = rng.normal(size=(T, n_all))[:, envs]
    terminated = (rng.random((T, n_all)) < 0.08)[:, envs]
    truncated = (rng.random((T, n_all)) < 0.05)[:, envs] & ~terminated
    n = obs.shape[1]
    s = RolloutStorage(T, n, OBS, ACT, extras_spec=algo.extras_spec())
    s.obs.copy_(torch.as_tensor(obs, dtype=torch.float32))
    s.actions.copy_(torch.as_tensor(actions, dtype=torch.float32)[:, :, None])
    s.rewards.copy_(torch.as_tensor(rewards, dtype=torch.float32))
    s.terminated.copy_(torch.as_tensor(terminated))
    s.truncated.copy_(torch.as_tensor(truncated))
    s.episode_end.copy_(s.terminated | s.truncated)
    with torch.no_grad():
        flat_obs = s.obs.reshape(-1, OBS)
        s.values.copy_(algo.critic(flat_obs).reshape(T, n))
        s.extras["log_probs"].copy_(algo.policy.distribution(flat_obs).log_prob(s.actions[:, :, 0].reshape(-1, ACT))
                                    .sum(-1).reshape(T, n))
        following = torch.cat([s.values[1:], algo.critic(s.obs[-1]).unsqueeze(0)])
        s.next_values.copy_(torch.where(s.episode_end, s.values + 0.5, following))
    return s


def _one_update(envs: slice) -> tuple[torch.Tensor, dict]:
    cfg = _algo_cfg()
    torch.manual_seed(cfg.seed)
    algo = make_algo(cfg, OBS, ACT)
    storage = _storage(algo, envs)
    algo.compute_returns(storage)
    info = algo.update(storage)
    params = torch.cat([p.detach().reshape(-1) for p in algo.parameters])
    return params, info


def _obs_batches(rank: int) -> list[np.ndarray]:
    """Rank ``rank``'s stream of observation batches (uneven sizes, shifted means)."""
    rng = np.random.default_rng(100 + rank)
    return [rng.normal(loc=rank + k, scale=1.0 + rank, size=(3 + 2 * k + rank, 4)) for k in range(4)]


def _rank_main(rank: int, port: int, out_dir: str, runs_dir: str) -> None:
    import torch.distributed as dist

    from stack import distributed
    from stack.runners.on_policy import OnPolicyRunner

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        result: dict = {}
        # 1. one PPO update on this rank's shard
        params, info = _one_update(slice(rank * N_RANK, (rank + 1) * N_RANK))
        result["params"], result["info"] = params, info
        # 2. normaliser statistics merged twice over a stream of batches
        rms = distributed.ShardedRunningMeanStd(RunningMeanStd((4,)))
        batches = _obs_batches(rank)
        for b in batches[:2]:
            rms.update(b)
        rms.sync()
        result["rms_first"] = rms.state_dict()
        for b in batches[2:]:
            rms.update(b)
        rms.sync()
        result["rms"] = rms.state_dict()
        per_update = distributed.ShardedRunningMeanStd(RunningMeanStd(()), sync_every_update=True)
        per_update.update(batches[0][:, 0])
        result["rms_every_update"] = per_update.state_dict()
        # 3. the runner: this rank's envs and their seeds
        cfg = TrainConfig(env=EnvConfig(task="point_mass", num_envs=4, backend="sync"), seed=11, progress=False,
                          runs_dir=runs_dir, name="seeds", tensorboard=False,
                          ppo=PPOConfig(hidden=(8, 8), rollout_steps=4))
        runner = OnPolicyRunner(cfg)
        runner.collector.reset(seed=runner.env_seed(0))
        result["num_envs"] = runner.num_envs
        result["reset_obs"] = runner.collector.current_obs.copy()
        result["has_run_dir"] = runner.run is not None
        runner.envs.close()
        torch.save(result, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("ranks")
    mp.spawn(_rank_main, args=(_free_port(), str(out), str(out / "runs")), nprocs=WORLD, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


def test_both_ranks_hold_identical_parameters_after_an_update(ranks):
    assert torch.equal(ranks[0]["params"], ranks[1]["params"])
    assert ranks[0]["info"] == ranks[1]["info"]


def test_the_update_equals_one_process_on_the_concatenated_batch(ranks):
    cfg = _algo_cfg()
    torch.manual_seed(cfg.seed)
    before = torch.cat([p.detach().reshape(-1) for p in make_algo(cfg, OBS, ACT).parameters])
    single, info = _one_update(slice(0, WORLD * N_RANK))
    # each shard alone gives another update: the test would fail without the all-reduce
    alone, _ = _one_update(slice(0, N_RANK))
    assert (alone - single).abs().max() > 1e-4
    assert (single - before).abs().max() > 5e-4  # three Adam steps of lr 3e-4
    torch.testing.assert_close(ranks[0]["params"], single, rtol=1e-4, atol=1e-6)
    for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac", "explained_variance", "epochs",
                "first_ratio_dev"):
        assert ranks[0]["info"][key] == pytest.approx(info[key], rel=1e-4, abs=1e-6), key


def test_merged_normaliser_statistics_equal_those_of_the_concatenated_data(ranks):
    batches = [_obs_batches(r) for r in range(WORLD)]
    for key, upto in (("rms_first", 2), ("rms", 4)):
        ref = RunningMeanStd((4,))
        ref.update(np.concatenate([b for r in range(WORLD) for b in batches[r][:upto]]))
        for r in range(WORLD):
            got = ranks[r][key]
            np.testing.assert_allclose(got["mean"], ref.mean, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(got["var"], ref.var, rtol=1e-10)
            assert got["count"] == pytest.approx(ref.count)
    ref = RunningMeanStd(())
    ref.update(np.concatenate([batches[r][0][:, 0] for r in range(WORLD)]))
    for r in range(WORLD):
        assert ranks[r]["rms_every_update"]["mean"] == pytest.approx(float(ref.mean))
        assert ranks[r]["rms_every_update"]["var"] == pytest.approx(float(ref.var))


def test_ranks_step_disjoint_envs_seeded_as_one_pool(ranks):
    from sim.pool import make_pool

    pool = make_pool("point_mass", 4, backend="sync", seed=11)
    obs, _ = pool.reset(seed=11)
    pool.close()
    assert [r["num_envs"] for r in ranks] == [2, 2]
    np.testing.assert_array_equal(np.concatenate([r["reset_obs"] for r in ranks]), obs)
    assert not np.array_equal(ranks[0]["reset_obs"], ranks[1]["reset_obs"])
    assert [r["has_run_dir"] for r in ranks] == [True, False]


def test_r2s_train_nproc_2_writes_one_run_from_rank_0(tmp_path):
    from stack.cli import main

    steps_per_iteration = 4 * 8
    rc = main(["train", "--env.task", "point_mass", "--env.num-envs", "4", "--env.backend", "sync",
               "--ppo.rollout-steps", "8", "--ppo.num-minibatches", "2", "--ppo.update-epochs", "2",
               "--ppo.hidden", "16", "16", "--total-env-steps", str(2 * steps_per_iteration), "--eval-episodes", "2",
               "--checkpoint-every", str(steps_per_iteration), "--nproc", "2", "--runs-dir", str(tmp_path),
               "--name", "ddp", "--no-progress", "--no-tensorboard"])
    assert rc == 0
    run = tmp_path / "ddp"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # one row per iteration (not one per rank), counting both ranks' env steps
    assert [int(float(r["env_steps"])) for r in rows] == [steps_per_iteration, 2 * steps_per_iteration]
    assert rows[-1]["eval_return"] != ""
    meta = json.loads((run / "checkpoints/latest/meta.json").read_text())
    assert meta["env_steps"] == 2 * steps_per_iteration
    import yaml

    assert yaml.safe_load((run / "config.yaml").read_text())["nproc"] == 2
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "launch.yaml",
                                                     "learning_curve.png", "metrics.csv"]
