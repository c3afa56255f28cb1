"""Several learner processes (stack.distributed, gloo, 2 CPU processes): one PPO, FPO or DPPO update on two shards
equals one process's update on the concatenated batch, on both ranks alike; merged normaliser statistics equal those
of the concatenated data; ranks step disjoint env seeds; ``r2s train --nproc 2`` writes one run directory from rank 0;
``--workers ray`` trains on RayPool actors exactly as on the local pool.

The two ranks are spawned once for the module (torch.multiprocessing, a free local port); each writes what it
computed to a file that the tests compare with one process's results.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import socket

import numpy as np
import pytest
import torch

from stack.config import DPPOConfig, EnvConfig, FPOConfig, PPOConfig, TrainConfig
from stack.normalize import RunningMeanStd
from stack.rollout import RolloutStorage

pytestmark = pytest.mark.distributed

WORLD = 2
T, N_RANK, OBS, ACT = 16, 3, 5, 2
"""The shared synthetic rollout: T decisions × WORLD·N_RANK envs; rank r holds envs r·N_RANK … (r + 1)·N_RANK − 1."""


ALGOS = ("ppo", "fpo", "dppo")


def _algo_cfg(algo: str) -> TrainConfig:
    # One minibatch per epoch: its gradient is the mean over the whole batch, so two shards' averaged gradients
    # are the concatenated batch's. Three epochs (three Adam steps); advantage normalisation on (PPO: value clip).
    if algo == "ppo":
        return TrainConfig(ppo=PPOConfig(hidden=(16, 16), num_minibatches=1, update_epochs=3, rollout_steps=T,
                                         target_kl=10.0), seed=3)
    if algo == "fpo":
        return TrainConfig(algo="fpo", policy="flow", seed=3,
                           fpo=FPOConfig(hidden=(16, 16), critic_hidden=(16, 16), n_mc=4, num_minibatches=1,
                                         update_epochs=3, rollout_steps=T, max_grad_norm=0.5))
    # DPPO from a fresh diffusion policy: one minibatch of every (decision, denoising step) pair
    return TrainConfig(algo="dppo", policy="diffusion", seed=3,
                       dppo=DPPOConfig(actor_hidden=(16,), critic_hidden=(16,), denoising_steps=4,
                                       ft_denoising_steps=2, horizon=2, act_steps=2, rollout_steps=T,
                                       batch_size=4096, update_epochs=3, max_grad_norm=1.0))


def _make_algo(algo: str):
    cfg = _algo_cfg(algo)
    torch.manual_seed(cfg.seed)
    return importlib.import_module(f"stack.algos.{algo}").make_algo(cfg, OBS, ACT)


def _storage(algo, envs: slice) -> RolloutStorage:
    """The synthetic rollout's envs ``envs``: observations, rewards and flags from one numpy generator, actions and
    extras from the algorithm's ``act`` on every env's observations (its generators seeded alike in every process),
    so each process holds its slice of one rollout."""
    rng = np.random.default_rng(0)
    n_all = WORLD * N_RANK
    obs = torch.as_tensor(rng.normal(size=(T, n_all, OBS)), dtype=torch.float32)
    rewards = torch.as_tensor(rng.normal(size=(T, n_all)), dtype=torch.float32)
    terminated = torch.as_tensor(rng.random((T, n_all)) < 0.08)
    truncated = torch.as_tensor(rng.random((T, n_all)) < 0.05) & ~terminated
    with torch.no_grad():
        acted = [algo.act(obs[t]) for t in range(T)]
    n = len(range(n_all)[envs])
    s = RolloutStorage(T, n, OBS, ACT, horizon=acted[0][0].shape[1], extras_spec=algo.extras_spec())
    for t, (chunk, extras, values) in enumerate(acted):
        s.actions[t] = chunk[envs]
        s.values[t] = values[envs]
        s.put_extras(t, {k: v[envs] for k, v in extras.items()})
    s.obs.copy_(obs[:, envs])
    s.rewards.copy_(rewards[:, envs])
    s.terminated.copy_(terminated[:, envs])
    s.truncated.copy_(truncated[:, envs])
    s.episode_end.copy_(s.terminated | s.truncated)
    s.executed.fill_(algo.act_steps)
    with torch.no_grad():
        following = torch.cat([s.values[1:], algo.value(s.obs[-1]).unsqueeze(0)])
    s.next_values.copy_(torch.where(s.episode_end, s.values + 0.5, following))
    return s


def _params(algo) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for m in algo.policy_modules().values() for p in m.parameters()])


def _one_update(name: str, envs: slice) -> tuple[torch.Tensor, dict]:
    algo = _make_algo(name)
    storage = _storage(algo, envs)
    algo.compute_returns(storage)
    info = algo.update(storage)
    return _params(algo), info


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
        # 1. one update of each algorithm on this rank's shard
        for name in ALGOS:
            result[name] = _one_update(name, slice(rank * N_RANK, (rank + 1) * N_RANK))
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


@pytest.mark.parametrize("name", ALGOS)
def test_both_ranks_hold_identical_parameters_after_an_update(ranks, name):
    assert torch.equal(ranks[0][name][0], ranks[1][name][0])
    assert ranks[0][name][1] == ranks[1][name][1]


@pytest.mark.parametrize("name", ALGOS)
def test_the_update_equals_one_process_on_the_concatenated_batch(ranks, name):
    before = _params(_make_algo(name))
    single, info = _one_update(name, slice(0, WORLD * N_RANK))
    # each shard alone gives another update: the test would fail without the all-reduce
    alone, _ = _one_update(name, slice(0, N_RANK))
    assert (alone - single).abs().max() > 1e-4
    assert (single - before).abs().max() > 2e-4  # three Adam steps of lr ≥ 1e-4
    params, got = ranks[0][name]
    torch.testing.assert_close(params, single, rtol=1e-4, atol=1e-6)
    keys = [k for k in info if k not in ("std",)]
    assert {"policy_loss", "value_loss", "approx_kl", "clipfrac", "explained_variance", "first_ratio_dev"} <= set(keys)
    for key in keys:
        assert got[key] == pytest.approx(info[key], rel=1e-4, abs=1e-6), key


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


def test_r2s_train_nproc_2_writes_one_run_from_rank_0_and_resumes_exactly(tmp_path):
    from stack.cli import main
    from stack.runners import TIMING_KEYS

    steps_per_iteration = 4 * 8

    def train(name: str, iterations: int, *extra: str) -> int:
        return main(["train", "--env.task", "point_mass", "--env.num-envs", "4", "--env.backend", "sync",
                     "--ppo.rollout-steps", "8", "--ppo.num-minibatches", "2", "--ppo.update-epochs", "2",
                     "--ppo.hidden", "16", "16", "--ppo.no-anneal-lr",  # the rate does not depend on the total
                     "--total-env-steps", str(iterations * steps_per_iteration), "--eval-episodes", "2",
                     "--checkpoint-every", str(steps_per_iteration), "--eval-every", str(steps_per_iteration),
                     "--nproc", "2",
                     "--runs-dir", str(tmp_path), "--name", name, "--no-progress", "--no-tensorboard", *extra])

    def learned(run) -> list[dict]:
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in csv.DictReader(f)]

    rc = train("ddp", 2)
    assert rc == 0
    # a run stopped at its first checkpoint and resumed: rank 1's generators are reseeded there as the whole run's
    # were (only rank 0's are saved), so the second iteration's update is the same
    assert train("part", 1) == 0
    assert train("part", 2, "--resume", str(tmp_path / "part")) == 0
    assert learned(tmp_path / "part") == learned(tmp_path / "ddp")
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


@pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                    reason="ray is not installed (the project's `dist` extra: pip install -e '.[dist]')")
def test_train_workers_ray_logs_what_the_local_pool_logs(tmp_path):
    import dataclasses

    import ray

    from stack.runners import TIMING_KEYS
    from stack.train import train

    cfg = TrainConfig(env=EnvConfig(task="point_mass", num_envs=4, backend="sync", num_workers=2), seed=5,
                      ppo=PPOConfig(hidden=(16, 16), rollout_steps=8, num_minibatches=2, update_epochs=2),
                      total_env_steps=64, eval_episodes=2, checkpoint_every=10**9, runs_dir=str(tmp_path),
                      progress=False, tensorboard=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        on_ray = train(dataclasses.replace(cfg, workers="ray", name="ray"))
    finally:
        ray.shutdown()
    local = train(dataclasses.replace(cfg, name="local"))

    def rows(run):
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in csv.DictReader(f)]

    assert len(rows(local)) == 2
    assert rows(on_ray) == rows(local)  # 2 actors of 2 envs each: the same trajectories, the same updates
    with pytest.raises(ValueError, match="workers='rai'"):
        train(dataclasses.replace(cfg, workers="rai", name="bad"))
    assert not (tmp_path / "bad").exists()
