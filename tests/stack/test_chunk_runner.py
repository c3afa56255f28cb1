"""The chunk-aware on-policy runner: idle envs in the pool, chunk execution with episode ends inside a chunk, rewards
summed per decision, V(final_obs) bootstraps, init_from, checkpoints/exact resume and reloading of an FPO run."""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from stack.config import EnvConfig, FPOConfig, TrainConfig
from stack.evaluate import evaluate
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage
from stack.controller import PolicyController
from stack.runners import TIMING_KEYS, eval_seed
from stack.runners.on_policy import make_algo
from stack.train import train


# ---- the pool's idle envs -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("task,backend", [("hopper", "sync"), ("hopper", "pool"), ("point_mass", "sync")])
def test_idle_envs_are_not_stepped_and_the_others_step_as_alone(task, backend):
    from sim.pool import make_pool, resolve_task

    n, seed = 3, 11
    kw = {"num_workers": 2} if backend == "pool" else {}
    pool = make_pool(task, n, backend=backend, seed=seed, **kw)
    alone = [resolve_task(task)() for _ in range(n)]
    rng = np.random.default_rng(0)
    try:
        obs, _ = pool.reset(seed=seed)
        ref = [env.reset(seed=seed + i)[0] for i, env in enumerate(alone)]
        np.testing.assert_array_equal(obs, np.stack(ref))
        lengths = np.zeros(n, int)
        ended_while_masked = 0
        for t in range(120):
            active = rng.random(n) < 0.6 if t % 3 else np.ones(n, bool)
            actions = rng.uniform(-1, 1, size=(n, pool.single_action_space.shape[0]))
            before = obs.copy()
            obs, reward, term, trunc, infos = pool.step(actions, active=active)
            for i, env in enumerate(alone):
                if not active[i]:  # idle: nothing moved
                    np.testing.assert_array_equal(obs[i], before[i])
                    assert reward[i] == 0.0 and not term[i] and not trunc[i]
                    continue
                o, r, te, tr, _ = env.step(np.clip(actions[i], env.action_space.low, env.action_space.high))
                lengths[i] += 1
                assert (r, te, tr) == (reward[i], term[i], trunc[i])
                if te or tr:
                    np.testing.assert_array_equal(infos["final_obs"][i], o)
                    assert infos["episode_length"][i] == lengths[i]  # idle steps did not count
                    ended_while_masked += not active.all()
                    lengths[i] = 0
                    o = env.reset()[0]
                np.testing.assert_array_equal(obs[i], o)
        if task == "hopper":
            assert ended_while_masked > 0  # the masked path saw episode ends (and autoreset)
    finally:
        pool.close()
        for env in alone:
            env.close()


# ---- chunk execution in the collector -------------------------------------------------------------------------------
class _ScriptedChunks:
    """act_steps = 4; env 0 pushes outward at full force (it leaves the box: terminates mid-chunk), the others hold
    still (time limit 6: truncated in the second chunk). V(obs) = obs[:, 0] so the test can recompute it."""

    act_steps = 4

    def act(self, obs):
        n = obs.shape[0]
        chunk = torch.zeros(n, 4, 2)
        chunk[0] = 1.0
        return chunk, {"tag": torch.arange(n, dtype=torch.float32)}, obs[:, 0].clone()

    def value(self, obs):
        return obs[:, 0].clone()


def _reference(seed, i, decisions, max_steps):
    """What env i should give, stepped alone with the same chunks: per decision (reward sum, executed, terminated,
    truncated, final obs or None); a decision stops at its episode's end."""
    from sim.tasks.point_mass import PointMassTask

    env = PointMassTask(max_episode_steps=max_steps)
    obs = env.reset(seed=seed + i)[0]
    out, firsts = [], [obs]
    for _ in range(decisions):
        total, k, final, te, tr = 0.0, 0, None, False, False
        for _ in range(4):
            a = np.full(2, 2.0) if i == 0 else np.zeros(2)
            obs, r, te, tr, _ = env.step(a)
            total, k = total + r, k + 1
            if te or tr:
                final, obs = obs, env.reset()[0]
                break
        out.append((total, k, te, tr, final))
        firsts.append(obs)
    return out, firsts


def test_collector_executes_chunks_and_stops_an_env_at_its_episode_end():
    from sim.pool import make_pool

    n, seed, decisions = 3, 5, 6
    envs = make_pool("point_mass", n, backend="sync", seed=seed, task_kwargs={"max_episode_steps": 6})
    obs_norm = ObsNormalizer(4, enabled=False)
    collector = RolloutCollector(envs, obs_norm, RewardScaler(n, 0.99, enabled=False),
                                 ActionScaler(envs.single_action_space.low, envs.single_action_space.high))
    storage = RolloutStorage(decisions, n, 4, 2, horizon=4, extras_spec={"tag": ()})
    collector.reset(seed=seed)
    stats = collector.collect(_ScriptedChunks(), storage)
    envs.close()
    saw_idle = False
    for i in range(n):
        ref, firsts = _reference(seed, i, decisions, 6)
        for t, (reward, k, te, tr, final) in enumerate(ref):
            assert storage.obs[t, i, 0].item() == pytest.approx(firsts[t][0])  # the decision's first observation
            assert storage.rewards[t, i].item() == pytest.approx(reward, rel=1e-6)  # raw rewards summed
            assert storage.executed[t, i].item() == k
            assert (storage.terminated[t, i].item(), storage.truncated[t, i].item()) == (te, tr)
            assert storage.episode_end[t, i].item() == (te or tr)
            # the state the decision reached: V(final_obs) at an episode end, else V(next decision's obs)
            reached = final if final is not None else firsts[t + 1]
            assert storage.next_values[t, i].item() == pytest.approx(reached[0], rel=1e-6)
            saw_idle |= k < 4
    assert saw_idle
    assert storage.extras["tag"][:, 2].tolist() == [2.0] * decisions
    assert stats.steps == int(storage.executed.sum()) < decisions * n * 4
    assert 6 in stats.episode_lengths  # the time limit, reached in the second chunk


# ---- the runner -----------------------------------------------------------------------------------------------------
def _fpo_cfg(tmp_path, name, steps, **kw):
    fpo = FPOConfig(rollout_steps=16, num_minibatches=4, update_epochs=2, critic_hidden=(32, 32), horizon=3,
                    act_steps=3, variant="fpo++")
    return TrainConfig(algo="fpo", env=EnvConfig(task="point_mass", num_envs=4, backend="sync",
                                                 task_kwargs={"max_episode_steps": 20}),
                       fpo=fpo, total_env_steps=steps, eval_every=300, eval_episodes=3, checkpoint_every=300,
                       name=name, runs_dir=str(tmp_path), progress=False, seed=7, **kw)


def _rows(run):
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v != "" and k not in TIMING_KEYS} for r in csv.DictReader(f)]


def test_fpo_run_resumes_exactly_and_reloads_to_its_final_evaluation(tmp_path):
    whole = _rows(train(_fpo_cfg(tmp_path, "whole", 700)))
    part = train(_fpo_cfg(tmp_path, "part", 300))
    resumed = _rows(train(_fpo_cfg(tmp_path, "ignored", 700, resume=str(part))))
    assert len(whole) == len(resumed) >= 4
    for a, b in zip(whole, resumed):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-9), (a["env_steps"], k)
    ckpt = part / "checkpoints" / "latest"
    for f in ("policy/model.safetensors", "critic/config.json", "normalization.json", "trainer.pt"):
        assert (ckpt / f).exists(), f
    meta = json.loads((ckpt / "meta.json").read_text())
    assert (meta["algo"], meta["policy"], meta["act_steps"], meta["horizon"]) == ("fpo", "flow", 3, 3)
    assert meta["sampling"] == {"zero_noise": True, "steps": 10}
    # env steps count the executed steps: episodes of 20 end inside chunks of 3
    assert whole[0]["env_steps"] < 16 * 4 * 3
    # the loaded policy (zero-sampling, chunks of 3) replays the final evaluation exactly
    policy = PolicyController.from_checkpoint(part)
    again = evaluate(policy, "point_mass", 3, eval_seed(7), task_kwargs={"max_episode_steps": 20})
    assert again["return_mean"] == resumed[-1]["eval_return"]
    # random-noise evaluation is a sampling override away
    assert PolicyController.from_checkpoint(part, zero_noise=False).sampling["zero_noise"] is False


def test_init_from_loads_weights_normaliser_and_scaling_and_freezes_the_statistics(tmp_path):
    from policies import FlowPolicy

    from stack import checkpoint
    from stack.runners.on_policy import OnPolicyRunner

    torch.manual_seed(0)
    bc = FlowPolicy(4, 2, horizon=4, act_steps=2, hidden=(16, 16), euler_steps=5)
    norm = ObsNormalizer(4)
    norm.update(np.random.default_rng(0).normal(3.0, 2.0, size=(100, 4)))
    scaler = ActionScaler([-1.0, -1.0], [1.0, 1.0])  # not the task's ±2: the pretrained policy's own scaling wins
    checkpoint.save(tmp_path / "bc" / "checkpoints" / "latest", modules={"policy": bc},
                    normalization={"obs": norm.state_dict(), "action": scaler.state_dict()},
                    meta={"algo": "bc", "policy": "flow", "task": "point_mass", "obs_dim": 4, "act_dim": 2,
                          "horizon": 4, "act_steps": 2, "obs_steps": 1, "sampling": {}, "seed": 0, "env_steps": 0})
    cfg = _fpo_cfg(tmp_path, "ft", 100, init_from=str(tmp_path / "bc"))
    cfg = dataclasses.replace(cfg, fpo=dataclasses.replace(cfg.fpo, act_steps=0))  # 0: the pretrained policy's
    runner = OnPolicyRunner(cfg)
    try:
        assert runner.algo.act_steps == 2 and runner.algo.policy.horizon == 4 and runner.algo.policy.euler_steps == 5
        for k, v in bc.state_dict().items():
            assert torch.equal(runner.algo.policy.state_dict()[k], v), k
        assert runner.obs_normalizer.state_dict() == norm.state_dict()
        assert runner.action_scaler.state_dict() == scaler.state_dict()
        runner.collector.reset(seed=0)
        runner.collector.collect(runner.algo, runner.storage)
        assert runner.obs_normalizer.state_dict() == norm.state_dict()  # frozen
    finally:
        runner.envs.close()


def test_make_algo_dispatches_by_name_and_imports_lazily():
    r = subprocess.run([sys.executable, "-c", "import sys, stack.train; "
                        "assert 'stack.algos.fpo' not in sys.modules and 'stack.algos.dppo' not in sys.modules"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    from stack.algos.fpo import FPO
    from stack.algos.ppo import PPO

    assert isinstance(make_algo(TrainConfig(algo="ppo"), 4, 2, torch.device("cpu")), PPO)
    assert isinstance(make_algo(TrainConfig(algo="fpo"), 4, 2, torch.device("cpu")), FPO)
    with pytest.raises(ValueError, match="on-policy runner"):
        make_algo(TrainConfig(algo="sac"), 4, 2, torch.device("cpu"))
