"""Behaviour cloning of an episode dataset into a Gaussian, diffusion or flow policy (DPPO's pretraining stage).

Reads like DPPO's pretraining (Ren et al. 2024, §5 and appendix; irom-princeton/dppo ``agent/pretrain``):

* data: every frame of the dataset is one sample — ``obs`` the last ``obs_steps`` observations (the episode's first
  repeated before its start), ``actions`` the next ``horizon`` executed actions (the last repeated after its end),
  ``stack.data.episodes.window_indices``;
* observations normalised with the dataset's mean/std (``meta/stats.json``; std floored at ``obs_std_floor`` so a
  dimension that never moved in the demos does not blow up at evaluation), clipped to ±``obs_clip``;
* actions scaled to [−1, 1] by min–max bounds — the task's action space, or the dataset's min/max where the task has
  none — because the generative policies work in [−1, 1] (DDPM clamps x̂0 to ±1, flow clips its sample);
* loss: the policy's own ``bc_loss`` (ε-MSE for diffusion, conditional flow matching for flow, −log π or MSE of the
  mean for Gaussian), minibatches of ``batch_size`` drawn uniformly, AdamW, learning rate ``lr`` → ``lr_final``
  (cosine or linear) over the run, EMA of the weights (decay 0.995, updated every step: DPPO's fix of its
  too-infrequent EMA; warmed up, ``ema_decay_at``) for the generative policies;
* evaluation in simulation: each env executes ``act_steps`` of every predicted chunk, then re-plans; flow starts from
  zero noise (FPO++'s zero-sampling) by default, diffusion samples its DDPM (or DDIM) chain from seeded noise.

Checkpoint (``runs/<name>/checkpoints/latest/``, the PPO runner's layout, so ``stack.train.load_trained_policy`` and
the exporter find what they expect)::

    policy/             policies.save_policy of the evaluated weights (the EMA copy where EMA is on)
    normalization.json  {"obs": ObsNormalizer state (mean, var = std², count, clip, epsilon),
                         "action": ActionScaler state (mode, low, high)}
    meta.json           algo "bc", policy kind, task, dims, horizon/act_steps/obs_steps, evaluation sampling options
    trainer.pt          the raw (non-EMA) weights, the optimiser and the step, to continue training
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import shutil
import time
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from stack.data.episodes import EpisodeDataset, window_indices
from stack.normalize import ObsNormalizer
from stack.rollout import ActionScaler
from stack.runs import RunDir, default_run_name

CHECKPOINT = "latest"
EVAL_SEED = 1_000_000
"""Evaluation episodes are seeded ``EVAL_SEED + i`` (far from the seeds demos are usually recorded with)."""


@dataclass
class BCConfig:
    """Behaviour cloning from an episode dataset (``r2s train --algo bc --dataset PATH``)."""

    algo: Literal["bc"] = "bc"
    """Always 'bc' (lets a preset say which trainer it is for)."""
    dataset: str = ""
    """Episode dataset folder (``stack.data.episodes``; e.g. written by ``r2s demos``)."""
    policy: Literal["gaussian", "diffusion", "flow"] = "diffusion"
    """Policy family (``policies.make_policy``)."""
    task: str | None = None
    """Task to evaluate in (default: the dataset's task)."""
    task_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for the evaluation task (default: what the demos were recorded with)."""
    horizon: int = 4
    """Action chunk predicted per call (diffusion/flow; Gaussian: 1)."""
    act_steps: int = 4
    """Actions of each chunk executed before re-planning (≤ horizon)."""
    obs_steps: int = 1
    """Observations the policy is conditioned on (the last obs_steps)."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra constructor arguments of the policy (hidden, denoising_steps, euler_steps, activation, …)."""
    batch_size: int = 128
    """Minibatch size (DPPO: 128)."""
    epochs: int = 100
    """Passes over the dataset's frames (used when grad_steps is None)."""
    grad_steps: int | None = None
    """Gradient-step budget; overrides epochs."""
    lr: float = 1e-3
    """Initial AdamW learning rate (DPPO: 1e-3)."""
    lr_final: float = 1e-4
    """Learning rate at the end of the schedule (DPPO: 1e-4)."""
    lr_schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Decay from lr to lr_final over the run."""
    warmup_steps: int = 0
    """Linear learning-rate warm-up from 0 over this many steps."""
    weight_decay: float = 1e-6
    """AdamW weight decay (DPPO: 1e-6)."""
    max_grad_norm: float | None = None
    """Clip the global gradient norm (None = off, as DPPO's pretraining)."""
    ema: bool | None = None
    """Keep an EMA of the weights and evaluate/save it (None: on for diffusion and flow, off for Gaussian)."""
    ema_decay: float = 0.995
    """EMA decay per gradient step (DPPO: 0.995)."""
    gaussian_objective: Literal["nll", "mse"] = "mse"
    """Gaussian BC loss: 'mse' of the mean (the std keeps its init) or 'nll' (the std is learned too)."""
    obs_clip: float = 10.0
    """Clip normalised observations to ±obs_clip."""
    obs_std_floor: float = 1e-2
    """Lower bound on the per-dimension observation std used for normalisation."""
    action_key: Literal["action", "action.proposal"] = "action"
    """Column to clone: the executed action, or the demonstrator's proposal (DART demos recorded with noise)."""
    action_bounds: Literal["task", "dataset"] = "task"
    """Min–max bounds of the action scaling: the task's action space (falls back to the dataset where the task's
    bounds are infinite or the task is unknown) or the dataset's min/max."""
    eval_every: int = 0
    """Evaluate in simulation every this many gradient steps (0 = only at the end)."""
    eval_episodes: int = 10
    """Evaluation episodes (run side by side, seeds EVAL_SEED + i)."""
    eval_sampler: Literal["ddpm", "ddim"] = "ddpm"
    """Diffusion: sampler used in evaluation."""
    eval_ddim_steps: int | None = None
    """Diffusion with eval_sampler='ddim': number of DDIM steps (η = 0)."""
    eval_zero_noise: bool = True
    """Flow: start the ODE from ε = 0 in evaluation (else from seeded N(0, I))."""
    eval_flow_steps: int | None = None
    """Flow: Euler steps in evaluation (None = the policy's euler_steps)."""
    log_every: int = 200
    """Log the mean bc_loss every this many gradient steps."""
    seed: int = 1
    """Seed of the networks, the minibatches and the evaluation noise."""
    device: str = "cpu"
    """'cpu', 'cuda' or 'auto'."""
    torch_threads: int = 1
    """torch intra-op threads."""
    name: str | None = None
    """Run name (default: bc-<policy>-<task>-timestamp)."""
    runs_dir: str = "runs"
    """Parent folder of run directories."""
    progress: bool = True
    """Show a progress bar."""
    tensorboard: bool = True
    """Also write TensorBoard events (when tensorboard is installed)."""


# ---- normalisation from the dataset ---------------------------------------------------------------------------------
def obs_normalizer_from_stats(stats: dict, count: int, clip: float, std_floor: float) -> ObsNormalizer:
    """An ``ObsNormalizer`` whose mean/var are the dataset's (var = max(std, std_floor)²)."""
    mean = np.asarray(stats["mean"], np.float64)
    std = np.maximum(np.asarray(stats["std"], np.float64), std_floor)
    norm = ObsNormalizer(len(mean), clip=clip)
    norm.load_state_dict({"enabled": True, "clip": clip, "epsilon": norm.epsilon, "mean": mean.tolist(),
                          "var": (std**2).tolist(), "count": float(count)})
    return norm


def action_scaler_for(dataset: EpisodeDataset, env, source: str) -> ActionScaler:
    """Min–max action scaling: the task's bounds where finite (source 'task'), else the dataset's min/max."""
    if source not in ("task", "dataset"):
        raise ValueError(f"action_bounds: expected 'task' or 'dataset', got {source!r}")
    if source == "task":
        for low, high in ((getattr(getattr(env, "action_space", None), "low", None),
                           getattr(getattr(env, "action_space", None), "high", None)),
                          (dataset.info.get("action_low"), dataset.info.get("action_high"))):
            if low is not None and np.all(np.isfinite(low)) and np.all(np.isfinite(high)):
                return ActionScaler(low, high, "minmax")
    low, high = dataset.stats["action"]["min"].copy(), dataset.stats["action"]["max"].copy()
    flat = high - low < 1e-6  # a dimension that never moved: give it a unit range around its value
    low[flat] -= 0.5
    high[flat] += 0.5
    return ActionScaler(low, high, "minmax")


def to_policy_space(scaler: ActionScaler, actions: np.ndarray) -> np.ndarray:
    """Env actions → [−1, 1] (the inverse of ``ActionScaler.to_env``, clipped)."""
    a = np.asarray(actions, np.float64)
    if scaler.mode == "raw":
        return a
    center, half = (scaler.high + scaler.low) / 2.0, (scaler.high - scaler.low) / 2.0
    return np.clip((a - center) / np.where(half > 0, half, 1.0), -1.0, 1.0)


# ---- acting in the environment --------------------------------------------------------------------------------------
def sampling_options(cfg: BCConfig) -> dict:
    """How the policy samples in evaluation (saved in meta.json)."""
    if cfg.policy == "diffusion":
        opts = {"sampler": cfg.eval_sampler}
        if cfg.eval_sampler == "ddim":
            opts.update(ddim_steps=cfg.eval_ddim_steps, eta=0.0)
        return opts
    if cfg.policy == "flow":
        return {"zero_noise": cfg.eval_zero_noise, "steps": cfg.eval_flow_steps}
    return {"deterministic": True}


class ChunkedPolicy:
    """A trained chunk policy as a numpy controller for one or many envs: ``obs -> env action``.

    Per env slot it keeps the last ``obs_steps`` observations (the first repeated at an episode's start) and a queue
    of actions; when a slot's queue is empty the policy predicts a chunk for all empty slots at once (normalise →
    ``act`` → first ``act_steps`` actions → scale to the env's bounds). Noise comes from its own seeded generator
    (zeros for flow with ``zero_noise``), so an evaluation is reproducible. ``reset()`` starts new episodes.
    """

    def __init__(self, policy: torch.nn.Module, obs_normalizer: ObsNormalizer, action_scaler: ActionScaler,
                 sampling: dict | None = None, act_steps: int | None = None, device: str | torch.device = "cpu",
                 seed: int = 0):
        self.policy = policy  # no layer of these policies behaves differently in train() and eval() mode
        self.obs_normalizer = obs_normalizer
        self.action_scaler = action_scaler
        self.sampling = dict(sampling or {})
        self.act_steps = int(act_steps or policy.act_steps)
        if not 1 <= self.act_steps <= policy.horizon:
            raise ValueError(f"act_steps={self.act_steps}; expected 1 ≤ act_steps ≤ horizon={policy.horizon}")
        self.device = torch.device(device)
        self.generator = torch.Generator().manual_seed(seed)
        self._history: dict[int, deque] = {}
        self._queue: dict[int, deque] = {}

    def reset(self) -> None:
        """Forget every slot's history and queue: the next observation of each slot starts an episode."""
        self._history.clear()
        self._queue.clear()

    def _noise(self, b: int) -> torch.Tensor | None:
        kind, opts = self.policy.kind, self.sampling
        if kind == "gaussian":
            return None
        if kind == "flow":
            shape = self.policy.noise_shape(b)
            return torch.zeros(shape) if opts.get("zero_noise", True) else torch.randn(shape, generator=self.generator)
        shape = self.policy.noise_shape(b, sampler=opts.get("sampler"), ddim_steps=opts.get("ddim_steps"),
                                        eta=opts.get("eta"))
        return torch.randn(shape, generator=self.generator)

    @torch.no_grad()
    def plan(self, obs_hist: np.ndarray) -> np.ndarray:
        """Observation histories [B, obs_steps, obs_dim] (env units) → env-action chunks [B, act_steps, act_dim]."""
        b = obs_hist.shape[0]
        x = torch.from_numpy(self.obs_normalizer(obs_hist)).to(self.device)
        noise = self._noise(b)
        noise = noise.to(self.device) if noise is not None else None
        kind, opts = self.policy.kind, self.sampling
        if kind == "gaussian":
            chunk = self.policy.act(x, deterministic=True)
        elif kind == "flow":
            chunk = self.policy.act(x, noise=noise, steps=opts.get("steps"))
        else:
            chunk = self.policy.act(x, noise=noise, **{k: v for k, v in opts.items() if v is not None})
        return self.action_scaler.to_env(chunk[:, : self.act_steps].cpu().numpy())

    def act_batch(self, obs: np.ndarray, slots) -> np.ndarray:
        """One step of the envs ``slots`` (their observations ``obs [B, obs_dim]``) → actions [B, act_dim]."""
        obs = np.asarray(obs, np.float64)
        steps = self.policy.obs_steps
        for o, s in zip(obs, slots):
            if s not in self._history:
                self._history[s] = deque([o] * steps, maxlen=steps)
                self._queue[s] = deque()
            else:
                self._history[s].append(o)
        empty = [k for k, s in enumerate(slots) if not self._queue[slots[k]]]
        if empty:
            hist = np.stack([np.stack(self._history[slots[k]]) for k in empty])
            for k, chunk in zip(empty, self.plan(hist)):
                self._queue[slots[k]].extend(chunk)
        return np.stack([self._queue[s].popleft() for s in slots])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Single env (``obs [obs_dim]`` → ``[act_dim]``) or a batch of envs in lockstep (``[B, obs_dim]``)."""
        obs = np.asarray(obs)
        if obs.ndim == 1:
            return self.act_batch(obs[None], [0])[0]
        return self.act_batch(obs, list(range(len(obs))))


def evaluate_policy(policy: ChunkedPolicy, task: str, episodes: int, seed: int = EVAL_SEED,
                    task_kwargs: dict | None = None) -> dict:
    """``episodes`` envs side by side (env i reset with seed + i) → return_mean/std, success_rate, … (the keys of
    ``stack.evaluate.run_episodes``), through ``stack.evaluate.evaluate`` (which resets the policy and drives its
    ``act_batch``)."""
    from stack.evaluate import evaluate

    out = evaluate(policy, task, episodes, seed, task_kwargs=task_kwargs)
    out.pop("frames", None)
    return out


def load_bc_policy(path: str | Path, device: str = "cpu", seed: int = 0, act_steps: int | None = None,
                   **sampling) -> ChunkedPolicy:
    """A BC run directory (its latest checkpoint) or checkpoint folder as a ``ChunkedPolicy``; ``act_steps`` and
    ``sampling`` override the saved options (e.g. ``zero_noise=False``, ``sampler="ddim", ddim_steps=5, eta=0``)."""
    from policies import load_policy

    path = Path(path)
    ckpt = path / "checkpoints" / CHECKPOINT if (path / "checkpoints").is_dir() else path
    if not (ckpt / "meta.json").exists():
        raise FileNotFoundError(f"load_bc_policy: no checkpoint at {ckpt}")
    meta = json.loads((ckpt / "meta.json").read_text())
    norm = json.loads((ckpt / "normalization.json").read_text())
    policy = load_policy(ckpt / "policy", device=device)
    obs_normalizer = ObsNormalizer(policy.obs_dim)
    obs_normalizer.load_state_dict(norm["obs"])
    return ChunkedPolicy(policy, obs_normalizer, ActionScaler.from_state_dict(norm["action"]),
                         {**meta.get("sampling", {}), **sampling}, act_steps or meta.get("act_steps"), device, seed)


def evaluate_bc_run(run_dir: str | Path, episodes: int = 10, seed: int = EVAL_SEED, **sampling) -> dict:
    """``r2s eval`` for a BC run: its checkpoint as a ``ChunkedPolicy`` on the task it was trained for."""
    ckpt = Path(run_dir) / "checkpoints" / CHECKPOINT
    meta = json.loads((ckpt / "meta.json").read_text())
    return evaluate_policy(load_bc_policy(ckpt, **sampling), meta["task"], episodes, seed, meta.get("task_kwargs"))


# ---- the trainer ----------------------------------------------------------------------------------------------------
def build_policy(cfg: BCConfig, obs_dim: int, act_dim: int) -> torch.nn.Module:
    from policies import make_policy

    if cfg.policy == "gaussian":
        if cfg.obs_steps != 1:  # horizon and act_steps do not apply: one action per step
            raise ValueError(f"policy 'gaussian' acts on one observation; got obs_steps={cfg.obs_steps}")
        return make_policy("gaussian", obs_dim, act_dim, **cfg.policy_kwargs)
    return make_policy(cfg.policy, obs_dim, act_dim, horizon=cfg.horizon, act_steps=cfg.act_steps,
                       obs_steps=cfg.obs_steps, **cfg.policy_kwargs)


def lr_at(cfg: BCConfig, step: int, total: int) -> float:
    """Learning rate of gradient step ``step`` (0-based) of ``total``: warm-up, then lr → lr_final."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, total - cfg.warmup_steps - 1)
    frac = min(1.0, (step - cfg.warmup_steps) / span)
    if cfg.lr_schedule == "cosine":
        return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1.0 + math.cos(math.pi * frac))
    if cfg.lr_schedule == "linear":
        return cfg.lr + (cfg.lr_final - cfg.lr) * frac
    return cfg.lr


def ema_decay_at(decay: float, step: int) -> float:
    """min(decay, (1 + step)/(10 + step)): the EMA forgets the random initialisation within its first steps instead
    of carrying it for ~1/(1 − decay) steps (the num_updates warm-up of TensorFlow's ExponentialMovingAverage; DPPO
    copies the weights until its EMA starts, to the same end)."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """θ_ema ← decay·θ_ema + (1 − decay)·θ (parameters; buffers are copied)."""
    for pe, p in zip(ema.parameters(), model.parameters()):
        pe.lerp_(p, 1.0 - decay)
    for be, b in zip(ema.buffers(), model.buffers()):
        be.copy_(b)


class BCTrainer:
    """Owns the data tensors, the policy (+ EMA copy), the optimiser; ``train()`` runs the loop of ``train_bc``."""

    def __init__(self, cfg: BCConfig):
        from stack.train import resolve_device

        if not cfg.dataset:
            raise ValueError("bc: no dataset given (dataset=PATH, e.g. written by `r2s demos`)")
        self.cfg = cfg
        torch.set_num_threads(cfg.torch_threads)
        torch.manual_seed(cfg.seed)
        self.device = resolve_device(cfg.device)
        self.dataset = ds = EpisodeDataset(cfg.dataset)
        self.task = cfg.task or ds.info["task"]
        self.task_kwargs = dict(cfg.task_kwargs or ds.info.get("task_kwargs") or {})
        env = self._probe_env()
        self.obs_normalizer = obs_normalizer_from_stats(ds.stats["observation.state"], len(ds), cfg.obs_clip,
                                                        cfg.obs_std_floor)
        self.action_scaler = action_scaler_for(ds, env, cfg.action_bounds)
        self.has_task = env is not None
        if env is not None:
            env.close()
        self.policy = build_policy(cfg, ds.obs_dim, ds.act_dim).to(self.device).train()
        self.use_ema = cfg.ema if cfg.ema is not None else cfg.policy != "gaussian"
        self.ema = copy.deepcopy(self.policy).eval() if self.use_ema else None
        # All frames on the device once; a minibatch gathers its windows by index.
        cols = ds.frames(["observation.state", cfg.action_key])
        self.obs = torch.from_numpy(self.obs_normalizer(cols["observation.state"])).to(self.device)
        actions = to_policy_space(self.action_scaler, cols[cfg.action_key]).astype(np.float32)
        self.actions = torch.from_numpy(actions).to(self.device)
        p = self.policy
        obs_idx, act_idx = window_indices(ds.episode_lengths, p.obs_steps, p.horizon)
        self.obs_idx = torch.from_numpy(obs_idx).to(self.device)
        self.act_idx = torch.from_numpy(act_idx).to(self.device)
        self.total_steps = cfg.grad_steps if cfg.grad_steps is not None else \
            max(1, cfg.epochs * math.ceil(len(ds) / cfg.batch_size))
        self.optimizer = torch.optim.AdamW(self.policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.step = 0

    def _probe_env(self):
        from sim.pool import resolve_task

        try:
            return resolve_task(self.task)(**self.task_kwargs)
        except KeyError:  # a dataset from a robot with no simulated task: no bounds from a task, no evaluation
            return None

    def batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(obs [B, obs_steps, obs_dim], actions [B, horizon, act_dim]) of the windows of frames ``idx``."""
        return self.obs[self.obs_idx[idx]], self.actions[self.act_idx[idx]]

    def loss(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.cfg.policy == "gaussian":
            return self.policy.bc_loss(obs, actions, objective=self.cfg.gaussian_objective).mean()
        return self.policy.bc_loss(obs, actions).mean()

    def train_step(self) -> float:
        lr = lr_at(self.cfg, self.step, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        idx = torch.randint(0, len(self.obs_idx), (self.cfg.batch_size,), generator=self.generator,
                            device=self.device)
        loss = self.loss(*self.batch(idx))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            ema_update(self.ema, self.policy, ema_decay_at(self.cfg.ema_decay, self.step))
        self.step += 1
        return float(loss.detach())

    @property
    def eval_policy(self) -> torch.nn.Module:
        """The weights that are evaluated and saved: the EMA copy where EMA is on."""
        return self.ema if self.ema is not None else self.policy

    def chunked_policy(self, seed: int | None = None) -> ChunkedPolicy:
        return ChunkedPolicy(self.eval_policy, self.obs_normalizer, self.action_scaler, sampling_options(self.cfg),
                             device=self.device, seed=self.cfg.seed if seed is None else seed)

    def evaluate(self, episodes: int | None = None) -> dict:
        return evaluate_policy(self.chunked_policy(), self.task, episodes or self.cfg.eval_episodes, EVAL_SEED,
                               self.task_kwargs)

    def save_checkpoint(self, run_path: Path) -> Path:
        from policies import save_policy

        root = run_path / "checkpoints"
        tmp, final = root / ".latest.tmp", root / CHECKPOINT
        shutil.rmtree(tmp, ignore_errors=True)
        save_policy(self.eval_policy, tmp / "policy")
        norm = {"obs": self.obs_normalizer.state_dict(), "action": self.action_scaler.state_dict()}
        (tmp / "normalization.json").write_text(json.dumps(norm, indent=1))
        p = self.policy
        meta = {"algo": "bc", "policy": self.cfg.policy, "task": self.task, "task_kwargs": self.task_kwargs,
                "dataset": str(self.cfg.dataset), "obs_dim": p.obs_dim, "act_dim": p.act_dim, "horizon": p.horizon,
                "act_steps": p.act_steps, "obs_steps": p.obs_steps, "sampling": sampling_options(self.cfg),
                "ema": self.use_ema, "grad_steps": self.step, "env_steps": 0, "seed": self.cfg.seed}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        torch.save({"policy": self.policy.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step},
                   tmp / "trainer.pt")
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        return final

    def train(self, run: RunDir) -> Path:
        from tqdm import tqdm

        cfg, total = self.cfg, self.total_steps
        evaluate = cfg.eval_episodes > 0 and self.has_task
        bar = tqdm(total=total, unit="step", disable=not cfg.progress, dynamic_ncols=True, mininterval=1.0,
                   desc=f"bc {cfg.policy} {self.task}")
        losses: list[float] = []
        t0 = time.perf_counter()
        try:
            while self.step < total:
                losses.append(self.train_step())
                bar.update(1)
                last = self.step == total
                do_eval = evaluate and (last or (cfg.eval_every > 0 and self.step % cfg.eval_every == 0))
                if self.step % cfg.log_every == 0 or last or do_eval:
                    row = {"grad_step": self.step, "bc_loss": float(np.mean(losses)),
                           "lr": lr_at(cfg, self.step - 1, total), "time_s": time.perf_counter() - t0}
                    losses = []
                    if do_eval:
                        t1 = time.perf_counter()
                        result = self.evaluate()
                        row.update(eval_return=result["return_mean"], eval_return_std=result["return_std"],
                                   eval_length=result["length_mean"], eval_s=time.perf_counter() - t1)
                        if result.get("has_success", True):
                            row["eval_success"] = result["success_rate"]
                    run.log(self.step, **row)
                    post = f"loss {row['bc_loss']:.4f}"
                    if "eval_return" in row:
                        post += f"  eval {row['eval_return']:.1f}"
                    bar.set_postfix_str(post, refresh=False)
        finally:
            bar.close()
        self.save_checkpoint(run.path)
        return run.path


def plot_bc_curve(run: RunDir, title: str) -> Path:
    """learning_curve.png: bc_loss (log scale) and, where evaluated, return and success against gradient steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run.rows
    panels = [("bc_loss", "bc loss")] + [(k, label) for k, label in (("eval_return", "eval return"),
                                                                       ("eval_success", "eval success rate"))
                                         if any(k in r for r in rows)]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        pts = [(r["grad_step"], r[key]) for r in rows if key in r and math.isfinite(r[key])]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, ms=3)
        if key == "bc_loss" and pts and min(ys) > 0:
            ax.set_yscale("log")
        ax.set_xlabel("gradient steps")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    out = run.path / "learning_curve.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def train_bc(cfg: BCConfig) -> Path:
    """Behaviour-clone ``cfg.dataset`` into a ``cfg.policy`` policy; returns the run directory.

    The run directory holds config.yaml, metrics.csv (column ``env_steps`` = gradient steps for BC, plus grad_step,
    bc_loss, lr, eval_return, eval_success), learning_curve.png and checkpoints/latest/.
    """
    trainer = BCTrainer(cfg)
    name = cfg.name or default_run_name("bc", cfg.policy, trainer.task)
    path = Path(cfg.runs_dir) / name
    if (path / "metrics.csv").exists():
        raise FileExistsError(f"run directory {path} already holds a run; pick another name")
    run = RunDir(path, config=dataclasses.replace(cfg, task=trainer.task, task_kwargs=trainer.task_kwargs),
                 tensorboard=cfg.tensorboard)
    try:
        trainer.train(run)
        try:
            plot_bc_curve(run, f"BC {cfg.policy} on {trainer.task} ({Path(cfg.dataset).name})")
        except Exception as e:  # a plot must never lose a finished run
            warnings.warn(f"learning curve not written: {e}", stacklevel=2)
    finally:
        run.close()
    return path


# ---- CLI glue -------------------------------------------------------------------------------------------------------
def parse_bc_config(argv: list[str], prog: str = "r2s train --algo bc") -> BCConfig:
    """``[--preset NAME] [flags]``: a preset's values (YAML keys = BCConfig fields), then the flags on top."""
    import tyro

    from stack.config import from_dict, split_preset

    preset, rest = split_preset(argv)
    base = from_dict(BCConfig, preset) if preset is not None else BCConfig()
    return tyro.cli(BCConfig, args=rest, default=base, prog=prog,
                    description="Behaviour cloning from an episode dataset (presets: *_bc*.yaml).")


def cmd_train_bc(argv: list[str]) -> int:
    """``r2s train --algo bc --dataset PATH [--policy diffusion] [--preset hopper_bc_diffusion] …``."""
    run_dir = train_bc(parse_bc_config(argv))
    print(f"run directory: {run_dir}")
    return 0


__all__ = ["BCConfig", "BCTrainer", "ChunkedPolicy", "cmd_train_bc", "evaluate_bc_run", "evaluate_policy",
           "load_bc_policy", "parse_bc_config", "train_bc"]
