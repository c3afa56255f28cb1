"""``train(cfg) -> run directory``: the shared on-policy runner (and the entry to the off-policy one for SAC).

The runner owns the loop, the learning-rate schedule, the normalisers, logging, evaluation and checkpoints; the
algorithm (``stack.algos.<algo>``: ppo, fpo, dppo) owns acting and updating; ``stack.rollout`` owns storage and
collection. One iteration::

    rollout (T decisions × N envs: each decision an action chunk whose first act_steps actions are executed, same-step
    autoreset, V(final_obs) bootstraps) → GAE over decisions → epochs of minibatch updates → metrics row
    → [deterministic evaluation] → [checkpoint]

Gaussian PPO is the case act_steps = 1. The algorithm object the runner drives (``make_algo`` of its module)::

    act_steps                      actions of each chunk executed per decision
    extras_spec() -> {name: shape} per-decision tensors the storage keeps for it (log-probs, (τ, ε) pairs, chains, …)
    act(obs) -> (chunk [N, act_steps, A], extras {name: [N, ...]}, V [N])     policy space, normalised obs
    act_deterministic(obs) -> chunk [N, act_steps, A]                        evaluation (FPO: zero-sampling)
    value(obs) -> [N];  compute_returns(storage);  update(storage) -> metrics
    policy_modules() -> {name: nn.Module}                                    what the checkpoint saves
    state_dict() / load_state_dict();  learning_rate;  set_learning_rate(lr)
    eval_sampling() -> dict (optional)                                       how a loaded policy samples (meta.json)

``init_from`` (a BC run directory) fine-tunes its policy: the weights, the observation normaliser and the action
scaling come from its latest checkpoint, and the normaliser stays frozen (the policy was trained on those statistics).

Checkpoint (``runs/<name>/checkpoints/latest/``, written to a temporary folder and swapped in, so a crash never
leaves half a checkpoint)::

    policy/, critic/, …  policies.save_policy of each of ``algo.policy_modules()`` (rebuildable without this code)
    normalization.json  observation normaliser (mean, var, count, clip, epsilon), action scaling (mode, low, high),
                        reward scaler — everything ``load_trained_policy`` and the ONNX exporter need besides weights
    trainer.pt          optimiser, the algorithm's generators, iteration, env steps, recent returns
    meta.json           iteration, env_steps, task, algo, act_steps, horizon, sampling (readable without torch)

Resume (``cfg.resume=<run dir>``) continues from that checkpoint with the config given now (so a larger
``total_env_steps`` extends a run). Every checkpoint is also an episode boundary: right after saving, the runner resets
all envs with seed ``cfg.seed + env_steps`` (and a resumed run starts with that same reset), so a resumed run
continues exactly as the uninterrupted one would have — same actions, same minibatches, same metrics (tested).
The episodes cut short there are treated as truncations (the rollout's last row bootstraps from V).
"""

from __future__ import annotations

import json
import math
import shutil
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np
import torch

from stack.algos.bc import ChunkedPolicy
from stack.config import TrainConfig
from stack.normalize import ObsNormalizer, RewardScaler
from stack.rollout import ActionScaler, RolloutCollector, RolloutStorage
from stack.runs import RunDir, default_run_name

CHECKPOINT = "latest"
EVAL_SEED_OFFSET = 1_000_000
"""Evaluation envs are seeded ``EVAL_SEED_OFFSET + cfg.seed·1000 + i``: never a training seed."""
TIMING_KEYS = ("steps_per_s", "rollout_s", "env_s", "update_s", "eval_s", "time_s")
"""Metrics that depend on the machine, not on the computation (left out when comparing runs)."""


# ---- building blocks ------------------------------------------------------------------------------------------------
def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but torch.cuda.is_available() is False; use 'cpu' or 'auto'")
    return device


def task_kwargs_of(cfg: TrainConfig) -> dict:
    kwargs = dict(cfg.env.task_kwargs or {})
    if cfg.env.randomization:
        kwargs["randomization"] = dict(cfg.env.randomization)
    return kwargs


def make_envs(cfg: TrainConfig):
    from sim.pool import make_pool

    kw = {"seed": cfg.seed, "task_kwargs": task_kwargs_of(cfg)}
    if cfg.env.backend == "pool":
        kw["num_workers"] = cfg.env.num_workers
    return make_pool(cfg.env.task, cfg.env.num_envs, backend=cfg.env.backend, **kw)


ON_POLICY = ("ppo", "fpo", "dppo")
"""Algorithms the on-policy runner drives (``stack.algos.<name>.make_algo``)."""


def make_algo(cfg: TrainConfig, obs_dim: int, act_dim: int, device: torch.device,
              pretrained: torch.nn.Module | None = None):
    """The algorithm object of ``cfg.algo`` (its module imported only when used: dppo/fpo pull in more code)."""
    import importlib

    if cfg.algo not in ON_POLICY:
        raise ValueError(f"algo={cfg.algo!r}: the on-policy runner drives {ON_POLICY}")
    return importlib.import_module(f"stack.algos.{cfg.algo}").make_algo(cfg, obs_dim, act_dim, device, pretrained)


def load_pretrained(run_dir: str | Path, device: str | torch.device = "cpu"):
    """A BC run (or checkpoint folder) to fine-tune: (policy module, ObsNormalizer, ActionScaler, meta)."""
    from policies import load_policy

    path = Path(run_dir)
    ckpt = checkpoint_dir(path) if (path / "checkpoints").is_dir() else path
    if not (ckpt / "policy").is_dir():
        raise FileNotFoundError(f"init_from: no policy checkpoint at {ckpt / 'policy'}")
    policy = load_policy(ckpt / "policy", device=device).train()
    norm = json.loads((ckpt / "normalization.json").read_text())
    obs_normalizer = ObsNormalizer(policy.obs_dim)
    obs_normalizer.load_state_dict(norm["obs"])
    meta = json.loads((ckpt / "meta.json").read_text()) if (ckpt / "meta.json").exists() else {}
    return policy, obs_normalizer, ActionScaler.from_state_dict(norm["action"]), meta


class TrainedPolicy:
    """A trained policy as a numpy callable: ``obs [obs_dim] or [B, obs_dim] -> env action`` (deterministic).

    normalise (``obs_normalizer``) → Gaussian mean (``policy``) → clip to [−1, 1] and scale to the env's bounds
    (``action_scaler``). The three parts are attributes so an exporter can bake them into one graph.
    """

    def __init__(self, policy: torch.nn.Module, obs_normalizer: ObsNormalizer, action_scaler: ActionScaler,
                 device: str | torch.device = "cpu"):
        self.policy = policy
        self.obs_normalizer = obs_normalizer
        self.action_scaler = action_scaler
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs)
        single = obs.ndim == 1
        x = torch.from_numpy(self.obs_normalizer(obs[None] if single else obs)).to(self.device)
        action = self.action_scaler.to_env(self.policy.act(x, deterministic=True)[:, 0].cpu().numpy())
        return action[0] if single else action


class AlgoPolicy(ChunkedPolicy):
    """The runner's evaluation controller for chunk algorithms: ``bc.ChunkedPolicy``'s per-env chunk queues, planning
    with ``algo.act_deterministic`` (normalise → chunk → first act_steps actions → env units)."""

    def __init__(self, algo, obs_normalizer: ObsNormalizer, action_scaler: ActionScaler,
                 device: str | torch.device = "cpu"):
        super().__init__(algo.policy_modules()["policy"], obs_normalizer, action_scaler, act_steps=algo.act_steps,
                         device=device)
        self.algo = algo

    @torch.no_grad()
    def plan(self, obs_hist: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self.obs_normalizer(obs_hist[:, -1])).to(self.device)
        chunk = self.algo.act_deterministic(x)[:, : self.act_steps]
        return self.action_scaler.to_env(chunk.cpu().numpy())


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / CHECKPOINT


def load_normalization(run_dir: str | Path) -> dict:
    """``normalization.json`` of the latest checkpoint: ``{"obs": ..., "action": ..., "reward": ...}``."""
    return json.loads((checkpoint_dir(run_dir) / "normalization.json").read_text())


def load_trained_policy(run_dir: str | Path, device: str = "cpu", **sampling):
    """The latest checkpoint of a run as a deterministic ``obs -> action`` numpy callable (normalisation included).

    PPO/SAC runs: a ``TrainedPolicy`` (the Gaussian mean). Chunk algorithms (FPO, DPPO): a ``bc.ChunkedPolicy`` that
    executes ``act_steps`` of each chunk and samples as the run's ``meta.json`` says (FPO: zero-sampling), keeping a
    queue per env — drive a batch of envs with ``act_batch(obs, env_indices)`` after ``reset()``. ``sampling``
    overrides the saved options (e.g. ``zero_noise=False`` for random-noise evaluation, ``steps=5``).
    """
    from policies import load_policy

    ckpt = checkpoint_dir(run_dir)
    if not ckpt.exists():
        raise FileNotFoundError(f"load_trained_policy: no checkpoint at {ckpt}")
    dev = resolve_device(device)
    policy = load_policy(ckpt / "policy", device=dev)
    norm = load_normalization(run_dir)
    obs_normalizer = ObsNormalizer(policy.obs_dim)
    obs_normalizer.load_state_dict(norm["obs"])
    scaler = ActionScaler.from_state_dict(norm["action"])
    meta = json.loads((ckpt / "meta.json").read_text())
    if meta.get("algo") in ("ppo", "sac"):
        return TrainedPolicy(policy, obs_normalizer, scaler, dev)
    return ChunkedPolicy(policy, obs_normalizer, scaler, {**meta.get("sampling", {}), **sampling},
                         meta.get("act_steps"), dev, seed=int(meta.get("seed", 0)))


# ---- the on-policy runner -------------------------------------------------------------------------------------------
class OnPolicyRunner:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        if cfg.resume:
            path = Path(cfg.resume)
            if not checkpoint_dir(path).exists():
                raise FileNotFoundError(f"resume: no checkpoint at {checkpoint_dir(path)}")
            meta = json.loads((checkpoint_dir(path) / "meta.json").read_text())
            _truncate_metrics(path / "metrics.csv", meta["env_steps"])
        else:
            name = cfg.name or default_run_name(cfg.algo, cfg.env.task)
            path = Path(cfg.runs_dir) / name
            if (path / "metrics.csv").exists():
                raise FileExistsError(f"run directory {path} already holds a run; pick another name or pass "
                                      f"resume={str(path)!r}")
        self.run = RunDir(path, config=cfg)
        torch.manual_seed(cfg.seed)
        self.envs = make_envs(cfg)
        obs_space, act_space = self.envs.single_observation_space, self.envs.single_action_space
        self.obs_dim, self.act_dim = int(np.prod(obs_space.shape)), int(act_space.shape[0])
        p = self.algo_cfg = cfg.algo_config
        pretrained = None
        if cfg.init_from:
            pretrained, self.obs_normalizer, self.action_scaler, _ = load_pretrained(cfg.init_from, self.device)
            if (pretrained.obs_dim, pretrained.act_dim) != (self.obs_dim, self.act_dim):
                raise ValueError(f"init_from {cfg.init_from}: the policy has obs_dim={pretrained.obs_dim}, act_dim="
                                 f"{pretrained.act_dim}; task {cfg.env.task} has {self.obs_dim}, {self.act_dim}")
            if getattr(pretrained, "obs_steps", 1) != 1:
                raise ValueError(f"init_from {cfg.init_from}: the runner conditions on one observation; the policy "
                                 f"has obs_steps={pretrained.obs_steps}")
        else:
            self.obs_normalizer = ObsNormalizer(self.obs_dim, clip=getattr(p, "clip_obs", 10.0),
                                                enabled=getattr(p, "norm_obs", True))
            self.action_scaler = ActionScaler.for_space(act_space)
        self.algo = make_algo(cfg, self.obs_dim, self.act_dim, self.device, pretrained)
        self.base_lr = self.algo.learning_rate
        """The configured learning rate (anneal_lr scales it down linearly)."""
        self.reward_scaler = RewardScaler(cfg.env.num_envs, p.gamma, clip=p.clip_reward, enabled=p.norm_reward)
        # Fine-tuning keeps the pretrained policy's observation statistics: it was trained on them.
        self.collector = RolloutCollector(self.envs, self.obs_normalizer, self.reward_scaler, self.action_scaler,
                                          self.device, update_obs_stats=not cfg.init_from)
        self.storage = RolloutStorage(p.rollout_steps, cfg.env.num_envs, self.obs_dim, self.act_dim, self.device,
                                      horizon=self.algo.act_steps, extras_spec=self.algo.extras_spec())
        self.iteration = 0
        self.env_steps = 0
        self.recent_returns: deque[float] = deque(maxlen=20)
        if cfg.resume:
            self.load_checkpoint()

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        from policies import save_policy

        root = self.run.path / "checkpoints"
        tmp, old, final = root / ".latest.tmp", root / ".latest.old", root / CHECKPOINT
        shutil.rmtree(tmp, ignore_errors=True)
        for name, module in self.algo.policy_modules().items():
            save_policy(module, tmp / name)
        normalization = {"obs": self.obs_normalizer.state_dict(), "action": self.action_scaler.state_dict(),
                         "reward": self.reward_scaler.state_dict()}
        (tmp / "normalization.json").write_text(json.dumps(normalization, indent=1))
        torch.save({"algo": self.algo.state_dict(), "iteration": self.iteration, "env_steps": self.env_steps,
                    "recent_returns": list(self.recent_returns)}, tmp / "trainer.pt")
        policy = self.algo.policy_modules()["policy"]
        meta = {"iteration": self.iteration, "env_steps": self.env_steps, "algo": self.cfg.algo,
                "policy": getattr(policy, "kind", self.cfg.policy), "task": self.cfg.env.task,
                "task_kwargs": task_kwargs_of(self.cfg), "obs_dim": self.obs_dim, "act_dim": self.act_dim,
                "seed": self.cfg.seed, "act_steps": self.algo.act_steps,
                "horizon": getattr(policy, "horizon", self.algo.act_steps), "obs_steps": 1,
                "sampling": self.algo.eval_sampling() if hasattr(self.algo, "eval_sampling") else {},
                "init_from": self.cfg.init_from}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        shutil.rmtree(old, ignore_errors=True)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
        return final

    def load_checkpoint(self) -> None:
        from policies import load_policy

        ckpt = checkpoint_dir(self.run.path)
        for name, module in self.algo.policy_modules().items():
            load_policy(ckpt / name, module, device=self.device).train()
        norm = json.loads((ckpt / "normalization.json").read_text())
        self.obs_normalizer.load_state_dict(norm["obs"])
        self.reward_scaler.load_state_dict(norm["reward"])
        saved_scaler = ActionScaler.from_state_dict(norm["action"])
        if saved_scaler.state_dict() != self.action_scaler.state_dict():
            raise ValueError(f"resume: the checkpoint's action scaling {saved_scaler.state_dict()} differs from "
                             f"the task's {self.action_scaler.state_dict()}")
        # On the CPU: generator states must stay CPU byte tensors; the optimiser moves its state to the parameters.
        state = torch.load(ckpt / "trainer.pt", map_location="cpu", weights_only=True)
        self.algo.load_state_dict(state["algo"])
        self.iteration = int(state["iteration"])
        self.env_steps = int(state["env_steps"])
        self.recent_returns.extend(state["recent_returns"])

    # ---- evaluation ---------------------------------------------------------------------------------------------
    def trained_policy(self) -> TrainedPolicy | AlgoPolicy:
        if self.cfg.algo == "ppo":
            return TrainedPolicy(self.algo.policy, self.obs_normalizer, self.action_scaler, self.device)
        return AlgoPolicy(self.algo, self.obs_normalizer, self.action_scaler, self.device)

    def evaluate(self, video: bool = False) -> dict:
        from stack.evaluate import evaluate

        return evaluate(self.trained_policy(), self.cfg.env.task, self.cfg.eval_episodes,
                        seed=EVAL_SEED_OFFSET + 1000 * self.cfg.seed, video=video, task_kwargs=task_kwargs_of(self.cfg))

    # ---- the loop -----------------------------------------------------------------------------------------------
    def learn(self) -> Path:
        from tqdm import tqdm

        cfg, p = self.cfg, self.algo_cfg
        total = cfg.total_env_steps
        self.collector.reset(seed=cfg.seed + self.env_steps)
        bar = tqdm(total=total, initial=min(self.env_steps, total), unit="step", disable=not cfg.progress,
                   dynamic_ncols=True, mininterval=1.0, desc=f"{cfg.algo} {cfg.env.task}")
        t_start = time.perf_counter()
        last_eval: dict | None = None
        last_eval_step = -1
        try:
            while self.env_steps < total:
                if p.anneal_lr:
                    self.algo.set_learning_rate(self.base_lr * max(0.0, 1.0 - self.env_steps / total))
                lr = self.algo.learning_rate
                t0 = time.perf_counter()
                stats = self.collector.collect(self.algo, self.storage)
                t1 = time.perf_counter()
                self.algo.compute_returns(self.storage)
                info = self.algo.update(self.storage)
                t2 = time.perf_counter()
                prev = self.env_steps
                self.env_steps += stats.steps
                self.iteration += 1
                self.recent_returns.extend(stats.episode_returns)
                row = {"iteration": self.iteration, "lr": lr, **info,
                       "steps_per_s": stats.steps / (t2 - t0), "rollout_s": t1 - t0, "env_s": stats.env_s,
                       "update_s": t2 - t1}
                if stats.episode_returns:
                    row["train_return"] = float(np.mean(stats.episode_returns))
                    row["train_length"] = float(np.mean(stats.episode_lengths))
                    row["episodes"] = len(stats.episode_returns)
                if stats.successes:
                    row["train_success"] = float(np.mean(stats.successes))
                if cfg.eval_every > 0 and self.env_steps // cfg.eval_every > prev // cfg.eval_every:
                    t3 = time.perf_counter()
                    last_eval, last_eval_step = self.evaluate(), self.env_steps
                    row.update(_eval_metrics(last_eval), eval_s=time.perf_counter() - t3)
                row["time_s"] = time.perf_counter() - t_start
                final = self.env_steps >= total
                if final and last_eval_step != self.env_steps:
                    t3 = time.perf_counter()
                    last_eval, last_eval_step = self.evaluate(video=cfg.video), self.env_steps
                    row.update(_eval_metrics(last_eval), eval_s=time.perf_counter() - t3)
                self.run.log(self.env_steps, **row)
                if final or (cfg.checkpoint_every > 0 and self.env_steps // cfg.checkpoint_every
                             > prev // cfg.checkpoint_every):
                    self.save_checkpoint()
                    if not final:  # a checkpoint is an episode boundary (see the module docstring)
                        self.collector.reset(seed=cfg.seed + self.env_steps)
                recent = f"{np.mean(self.recent_returns):.1f}" if self.recent_returns else "-"
                bar.set_postfix_str(f"{row['steps_per_s']:.0f} steps/s  return {recent}", refresh=False)
                bar.update(min(self.env_steps, total) - min(prev, total))
        finally:
            bar.close()
            self.envs.close()
        if last_eval is not None and cfg.video:
            self._write_video(last_eval)
        try:
            self.run.plot_learning_curve(title=f"{cfg.algo} {cfg.env.task} (seed {cfg.seed})")
        except Exception as e:  # a plot must never lose a finished run
            warnings.warn(f"learning curve not written: {e}", stacklevel=2)
        self.run.close()
        return self.run.path

    def _write_video(self, result: dict) -> None:
        frames = result.get("frames") or []
        if not frames:
            # render failed (warned) or the video was taken by an earlier eval: render one episode now
            from stack.evaluate import evaluate

            result = evaluate(self.trained_policy(), self.cfg.env.task, 1, seed=EVAL_SEED_OFFSET + 1000 * self.cfg.seed,
                              video=True, task_kwargs=task_kwargs_of(self.cfg))
            frames = result["frames"]
        if frames:
            try:
                self.run.save_video(frames, fps=result.get("fps", 30))
            except Exception as e:
                warnings.warn(f"video not written ({type(e).__name__}: {e})", stacklevel=2)


def _eval_metrics(result: dict) -> dict:
    out = {"eval_return": result["return_mean"], "eval_return_std": result["return_std"],
           "eval_length": result["length_mean"]}
    if result["has_success"]:
        out["eval_success"] = result["success_rate"]
    return out


def _truncate_metrics(path: Path, env_steps: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    import csv

    if not path.exists():
        return
    with open(path) as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if float(r["env_steps"]) <= env_steps]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


# ---- SAC: the off-policy loop with the same run directory ----------------------------------------------------------
def train_sac(cfg: TrainConfig) -> Path:
    """SAC (``stack.algos.sac``) with this module's run directory, evaluation and checkpoint layout (the checkpoint
    holds the actor, the twin Q net, and ``normalization.json`` with observation normalisation off), so
    ``load_trained_policy`` and ``r2s eval`` work on SAC runs too. No resume (the replay buffer is not saved)."""
    from policies import GaussianPolicy, QNet, save_policy
    from tqdm import tqdm

    from stack.algos.sac import SAC, ReplayBuffer, run_sac

    if cfg.resume:
        raise NotImplementedError("resume: SAC runs cannot be resumed (the replay buffer is not checkpointed)")
    torch.set_num_threads(cfg.torch_threads)
    device = resolve_device(cfg.device)
    path = Path(cfg.runs_dir) / (cfg.name or default_run_name(cfg.algo, cfg.env.task))
    if (path / "metrics.csv").exists():
        raise FileExistsError(f"run directory {path} already holds a run; pick another name")
    run = RunDir(path, config=cfg)
    torch.manual_seed(cfg.seed)
    envs = make_envs(cfg)
    obs_dim = int(np.prod(envs.single_observation_space.shape))
    act_dim = int(envs.single_action_space.shape[0])
    s = cfg.sac
    actor = GaussianPolicy(obs_dim, act_dim, hidden=s.hidden, activation="relu", log_std_init=0.0,
                           state_dependent_std=True, squash="tanh")
    qnet = QNet(obs_dim, act_dim, hidden=s.hidden, activation="relu")
    sac = SAC(actor, qnet, s, device, seed=cfg.seed)
    buffer = ReplayBuffer(min(s.buffer_size, cfg.total_env_steps + cfg.env.num_envs), obs_dim, act_dim, seed=cfg.seed)
    scaler = ActionScaler.for_space(envs.single_action_space)
    identity = ObsNormalizer(obs_dim, enabled=False)
    policy_fn = TrainedPolicy(actor, identity, scaler, device)
    eval_seed = EVAL_SEED_OFFSET + 1000 * cfg.seed
    bar = tqdm(total=cfg.total_env_steps, unit="step", disable=not cfg.progress, dynamic_ncols=True,
               mininterval=1.0, desc=f"sac {cfg.env.task}")
    state = {"prev": 0, "eval": None, "eval_step": -1}

    def on_log(env_steps: int, row: dict) -> None:
        from stack.evaluate import evaluate

        if cfg.eval_every > 0 and env_steps // cfg.eval_every > state["prev"] // cfg.eval_every \
                or env_steps >= cfg.total_env_steps:
            result = evaluate(policy_fn, cfg.env.task, cfg.eval_episodes, seed=eval_seed,
                              video=cfg.video and env_steps >= cfg.total_env_steps, task_kwargs=task_kwargs_of(cfg))
            state["eval"], state["eval_step"] = result, env_steps
            row = {**row, **_eval_metrics(result)}
        run.log(env_steps, **row)
        bar.set_postfix_str(f"{row['steps_per_s']:.0f} steps/s  return {row.get('train_return', math.nan):.1f}",
                            refresh=False)
        bar.update(min(env_steps, cfg.total_env_steps) - state["prev"])
        state["prev"] = min(env_steps, cfg.total_env_steps)

    try:
        run_sac(envs, sac, buffer, cfg.total_env_steps, scaler, seed=cfg.seed, log_every=s.log_every, on_log=on_log)
    finally:
        bar.close()
        envs.close()
    ckpt = run.path / "checkpoints" / CHECKPOINT
    shutil.rmtree(ckpt, ignore_errors=True)
    save_policy(actor, ckpt / "policy")
    save_policy(qnet, ckpt / "critic")
    (ckpt / "normalization.json").write_text(json.dumps({"obs": identity.state_dict(), "action": scaler.state_dict()},
                                                        indent=1))
    torch.save({"algo": sac.state_dict(), "env_steps": state["prev"]}, ckpt / "trainer.pt")
    (ckpt / "meta.json").write_text(json.dumps({"env_steps": state["prev"], "algo": "sac", "policy": "gaussian",
                                                "task": cfg.env.task, "obs_dim": obs_dim, "act_dim": act_dim,
                                                "seed": cfg.seed}, indent=1))
    frames = (state["eval"] or {}).get("frames") or []
    if cfg.video and frames:
        try:
            run.save_video(frames, fps=state["eval"].get("fps", 30))
        except Exception as e:
            warnings.warn(f"video not written ({type(e).__name__}: {e})", stacklevel=2)
    try:
        run.plot_learning_curve(title=f"sac {cfg.env.task} (seed {cfg.seed})")
    except Exception as e:
        warnings.warn(f"learning curve not written: {e}", stacklevel=2)
    run.close()
    return run.path


# ---- entry point ----------------------------------------------------------------------------------------------------
def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says and return the run directory (``runs/<name>``)."""
    if cfg.algo in ON_POLICY:
        return OnPolicyRunner(cfg).learn()
    if cfg.algo == "sac":
        return train_sac(cfg)
    raise NotImplementedError(f"algo={cfg.algo!r}: stack.train runs {ON_POLICY} and 'sac' (BC: stack.algos.bc)")


__all__ = ["AlgoPolicy", "OnPolicyRunner", "TrainedPolicy", "load_normalization",
           "load_pretrained", "load_trained_policy", "make_algo", "resolve_device", "train", "train_sac"]
