"""``r2s bench variance``: policy-gradient variance with a state-only vs an action-dependent factorized baseline.

Wu et al. (ICLR 2018) claim a per-dimension baseline b_i(s, a_{−i}) cuts the gradient's variance most on
high-dimensional actions; Tucker et al. (ICML 2018, "The Mirage of Action-Dependent Baselines") found the cut
negligible on MuJoCo once the implementations were matched. This bench measures the ratio on r2s's tasks with one
fixed protocol (the estimators and the baseline network are ``stack.algos.action_baseline``'s):

1. **A fixed checkpoint**: a Gaussian PPO policy trained for ``Budget.checkpoint_steps`` env steps (reach: the
   ``reach_ppo_delta`` preset, 6-D delta joint targets; hopper: ``hopper_ppo``; halfcheetah: PPOConfig's CleanRL
   defaults), with its observation statistics frozen; 0 steps: the fixed-seed initial policy of ``make_algo`` (no
   observation normalisation). The JSON's ``checkpoint`` says which.
2. **Q̂**: a batch is ``envs`` envs × ``horizon`` steps from a fresh reset, each on its own env seeds (batches are
   independent); Q̂_t is the discounted return-to-go inside its episode, cut at the rollout's end (γ the checkpoint's;
   no bootstrap, so Q̂ depends on no fitted critic). Raw env rewards (no reward scaling).
3. **Both baselines fitted with the same budget** (``fit_baseline``: the same Adam steps, minibatch of samples, rate
   and hidden widths) on ``fit_batches`` further batches, apart from the measured ones, onto standardised Q̂; both
   see the same state input [normalised obs, episode step / time limit, rollout step / horizon] (functions of the
   state and time, so neither breaks unbiasedness), the action-dependent one also a_{−i} and one-hot(i). Fixed
   during the measurement: the estimators' only difference is the baseline term.
4. **Gradient variance**: on each of ``batches`` batches, the flat gradient over every policy parameter with each
   baseline (and with none, for scale); ``grad_var_*`` is the total per-parameter variance across batches,
   Σ_k Var(g_k) (the trace of the estimator's covariance), ``variance_ratio`` = action-dependent / state-only.
5. **unbiased**: ``action_baseline.agreement`` on the paired per-batch difference d = g_action − g_state (same data,
   two baselines): ‖mean d‖ ≤ 3 √(Σ_k SE_k²) (SE_k the standard error of coordinate k's mean difference; under equal
   means E‖mean d‖² = Σ_k SE_k²) and at most 1 % of the coordinates beyond 3 SE (0.27 % expected). Pairing removes
   the common Q̂ noise, so this is a far stricter test than comparing the two means' own SEs; its figures are under
   ``agreement``.

``--quick``: the arm (reach), seed 1, a 30,720-step checkpoint, 100 batches of 1,000 samples (10 episodes), the
baselines fitted on 20,000 more (1,000 Adam steps of 256). Measured (seed 1, 5 min 9 s wall on the loaded 2-core box:
checkpoint 91 s, 120k env steps 180 s): state-only 0.284, action-dependent 0.268, **variance_ratio 0.943**, unbiased
(‖mean d‖ 0.82 of its noise level, 0.1 % of coordinates beyond 3 SE); no baseline 4.66; the baselines explain 73.6 %
and 75.9 % of Q̂'s variance. A 6 % cut: Tucker et al.'s picture (the Q̂ noise, not the other dimensions' actions,
dominates), not Wu et al.'s large one.

Learning curves (``--curves 153600``: the ``reach_ppo_delta`` preset with and without ``ppo.action_baseline``, seeds
1 2 3 paired, 20 evaluation episodes at 6 points; 10 min on the loaded box): final success PPO 35/30/50 % (38 ± 6 %)
vs action baseline 60/35/55 % (50 ± 8 %), paired +12 ± 7 points; return 0.17 ± 0.66 vs 0.70 ± 1.13, paired +0.53 ±
0.73. Within two SE of no difference — again no clear gain, as Tucker et al.

Full: hopper, halfcheetah and the arm, seeds 1 2 3, 200 batches each of 8,000 (locomotion, 8 ×
1,000 steps) or 2,000 (arm) samples from longer-trained checkpoints — CPU hours. The top-level figures are the arm's
(the acceptance keys); with several seeds, ``grad_var_*`` are means over seeds, ``variance_ratio`` their ratio and
``unbiased`` holds if it holds for every seed; ``per_task`` holds every task's figures and ``per_seed`` runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from stack.algos.action_baseline import (FitBudget, GradientStats, MaskedActionBaseline, action_baseline_gradient,
                                         agreement, fit_baseline, state_baseline_gradient)

ARM_TASK = "reach"
PRESETS = {"reach": "reach_ppo_delta", "hopper": "hopper_ppo", "halfcheetah": None}
"""The PPO preset each task's checkpoint is trained with (None: PPOConfig's defaults, CleanRL's)."""
TASK_KWARGS = {"reach": {"action_mode": "delta"}}
SEED_STRIDE = 1_000_000
"""Env seeds of batch j of seed s start at s · SEED_STRIDE + j · envs (fitting batches after the measured ones)."""


@dataclass(frozen=True)
class Budget:
    tasks: tuple[str, ...]
    checkpoint_steps: dict
    """PPO env steps of each task's checkpoint (0: the fixed-seed initial policy)."""
    batches: int
    """Independent measured batches."""
    envs: dict
    """Envs per batch, per task."""
    horizon: dict
    """Steps per env per batch (batch_size = envs × horizon), per task."""
    fit_batches: int
    """Further batches of the same size the baselines are fitted on."""
    fit: FitBudget = FitBudget(steps=1000, batch_size=256, lr=1e-3)
    """The regression budget of each baseline (the same for both)."""
    hidden: tuple[int, ...] = (64, 64)
    """Hidden widths of both baselines."""
    seeds: tuple[int, ...] = field(default=(1,))
    curve_steps: dict = field(default_factory=dict)
    """Env steps of the learning curves (PPO vs PPO + ``ppo.action_baseline``, the checkpoint's preset) per task;
    empty: no curves."""

    def batch_size(self, task: str) -> int:
        return int(self.envs[task] * self.horizon[task])


QUICK = Budget(tasks=(ARM_TASK,), checkpoint_steps={ARM_TASK: 30_720}, batches=100, envs={ARM_TASK: 10},
               horizon={ARM_TASK: 100}, fit_batches=20)
FULL = Budget(tasks=("hopper", "halfcheetah", ARM_TASK),
              checkpoint_steps={"hopper": 300_000, "halfcheetah": 300_000, ARM_TASK: 102_400}, batches=200,
              envs={"hopper": 8, "halfcheetah": 8, ARM_TASK: 20}, horizon={"hopper": 1000, "halfcheetah": 1000,
                                                                        ARM_TASK: 100},
              fit_batches=20, fit=FitBudget(steps=3000, batch_size=256, lr=1e-3), seeds=(1, 2, 3),
              curve_steps={"hopper": 1_000_000, "halfcheetah": 1_000_000, ARM_TASK: 307_200})


# ---- the fixed checkpoint -------------------------------------------------------------------------------------------
@dataclass
class Frozen:
    """What the batches are drawn with: the policy, its (frozen) observation statistics and action scaling."""

    policy: torch.nn.Module
    obs_normalizer: object
    action_scaler: object
    gamma: float
    task_kwargs: dict
    description: str


def train_config(task: str, steps: int, seed: int, runs_dir: str):
    from stack.config import EnvConfig, TrainConfig, from_dict, load_preset
    from stack.runs import default_run_name

    preset = PRESETS[task]
    base = from_dict(TrainConfig, load_preset(preset)) if preset else \
        TrainConfig(env=EnvConfig(task=task, num_envs=8, task_kwargs=dict(TASK_KWARGS.get(task, {}))))
    return from_dict(TrainConfig, {
        "total_env_steps": int(steps), "seed": int(seed), "eval_every": 0, "eval_episodes": 0,
        "checkpoint_every": int(steps), "name": default_run_name("bench-variance", task, f"s{seed}"),
        "runs_dir": runs_dir, "device": "cpu", "torch_threads": 1, "tensorboard": False}, base)


def checkpoint(task: str, steps: int, seed: int, runs_dir: str) -> Frozen:
    """Train PPO for ``steps`` env steps and load its policy (0: the initial policy of ``make_algo`` at ``seed``)."""
    from stack import checkpoint as ckpt_io
    from stack.normalize import ObsNormalizer
    from stack.rollout import ActionScaler
    from stack.train import train

    cfg = train_config(task, max(steps, 1), seed, runs_dir)
    if steps <= 0:
        from sim.pool import make_pool
        from stack.algos.ppo import make_algo

        probe = make_pool(task, 1, backend="sync", task_kwargs=cfg.env.task_kwargs)
        obs_dim, act_dim = probe.single_observation_space.shape[0], probe.single_action_space.shape[0]
        scaler = ActionScaler.for_space(probe.single_action_space)
        probe.close()
        torch.manual_seed(seed)
        policy = make_algo(cfg, obs_dim, act_dim).policy
        return Frozen(policy, ObsNormalizer(obs_dim, enabled=False), scaler, cfg.ppo.gamma,
                      dict(cfg.env.task_kwargs), f"initial PPO policy of {task}, seed {seed} (no training)")
    run_dir = train(cfg)
    ck = ckpt_io.load(run_dir)
    return Frozen(ck.module("policy").eval(), ck.obs_normalizer(), ck.action_scaler(), cfg.ppo.gamma,
                  ck.task_kwargs, f"PPO ({PRESETS[task] or 'PPOConfig defaults'}) on {task}, seed {seed}, "
                                  f"{ck.env_steps} env steps: {run_dir}")


# ---- batches --------------------------------------------------------------------------------------------------------
@dataclass
class Batch:
    obs: torch.Tensor
    """[B, obs_dim] normalised observations (the policy's input)."""
    state: torch.Tensor
    """[B, obs_dim + 2] the baselines' input: obs, episode step / time limit, rollout step / horizon."""
    actions: torch.Tensor
    """[B, act_dim] raw Gaussian samples."""
    q_hat: torch.Tensor
    """[B] discounted return-to-go inside the episode, cut at the rollout's end."""


def returns_to_go(rewards: np.ndarray, ends: np.ndarray, gamma: float) -> np.ndarray:
    """[T, N] Σ_{k ≥ t} γ^{k−t} r_k up to the end of t's episode (``ends[t]``: the episode ended at step t) or of
    the rollout."""
    out = np.zeros_like(rewards)
    running = np.zeros(rewards.shape[1])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = rewards[t] + gamma * running * (1.0 - ends[t])
        out[t] = running
    return out


@torch.no_grad()
def collect(envs, frozen: Frozen, horizon: int, env_seed: int, generator: torch.Generator) -> Batch:
    """One batch: ``envs.num_envs`` envs reset on seeds ``env_seed + i`` and stepped ``horizon`` times."""
    n = envs.num_envs
    raw_obs, _ = envs.reset(seed=env_seed)
    limit = float(envs.envs[0].max_episode_steps)  # the task's time limit (sim.core.MujocoTask)
    ep_step = np.zeros(n)
    obs_l, state_l, act_l, rew_l, end_l = [], [], [], [], []
    for t in range(horizon):
        obs = torch.as_tensor(frozen.obs_normalizer(raw_obs), dtype=torch.float32)
        noise = torch.randn(n, frozen.policy.act_dim, generator=generator)
        actions = frozen.policy.sample(obs, noise)[0][:, 0]
        times = torch.as_tensor(np.stack([ep_step / limit, np.full(n, t / horizon)], 1), dtype=torch.float32)
        raw_obs, reward, terminated, truncated, _ = envs.step(frozen.action_scaler.to_env(actions.numpy()))
        end = np.logical_or(terminated, truncated)
        ep_step = np.where(end, 0.0, ep_step + 1.0)
        obs_l.append(obs)
        state_l.append(torch.cat([obs, times], 1))
        act_l.append(actions)
        rew_l.append(np.asarray(reward, np.float64))
        end_l.append(end.astype(np.float64))
    q_hat = returns_to_go(np.stack(rew_l), np.stack(end_l), frozen.gamma)
    return Batch(torch.cat(obs_l), torch.cat(state_l), torch.cat(act_l),
                 torch.as_tensor(q_hat.reshape(-1), dtype=torch.float32))


# ---- one measurement ------------------------------------------------------------------------------------------------
class StateBaseline(torch.nn.Module):
    def __init__(self, in_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        from policies.common import mlp

        self.net = mlp(in_dim, hidden, 1, "tanh")

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        return self.net(state).squeeze(-1)


def measure(task: str, seed: int, budget: Budget, runs_dir: str = "runs") -> dict:
    """Variance of the two estimators on ``task`` from one checkpoint (seed ``seed``)."""
    from sim.pool import make_pool

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    frozen = checkpoint(task, budget.checkpoint_steps[task], seed, runs_dir)
    ckpt_s = time.perf_counter() - t0
    for p in frozen.policy.parameters():
        p.requires_grad_(True)
    n_envs, horizon = budget.envs[task], budget.horizon[task]
    envs = make_pool(task, n_envs, backend="sync", seed=seed * SEED_STRIDE, task_kwargs=frozen.task_kwargs)
    gen = torch.Generator().manual_seed(seed)
    try:
        def batch(j: int) -> Batch:
            return collect(envs, frozen, horizon, seed * SEED_STRIDE + j * n_envs, gen)

        measured = [batch(j) for j in range(budget.batches)]
        fitting = [batch(budget.batches + j) for j in range(budget.fit_batches)]
    finally:
        envs.close()
    collect_s = time.perf_counter() - t0 - ckpt_s

    state_dim, act_dim = measured[0].state.shape[1], measured[0].actions.shape[1]
    fit_state = torch.cat([b.state for b in fitting])
    fit_actions = torch.cat([b.actions for b in fitting])
    fit_q = torch.cat([b.q_hat for b in fitting])
    # standardised targets: one fitting budget suits every task's return scale
    mu, sigma = float(fit_q.mean()), float(fit_q.std().clamp_min(1e-8))
    torch.manual_seed(seed + 1)
    v = StateBaseline(state_dim, budget.hidden)
    b = MaskedActionBaseline(state_dim, act_dim, budget.hidden)
    fit_baseline(v, fit_state, fit_actions, (fit_q - mu) / sigma, budget.fit, seed=seed)
    fit_baseline(b, fit_state, fit_actions, (fit_q - mu) / sigma, budget.fit, seed=seed)

    grads: dict[str, list[torch.Tensor]] = {"none": [], "state": [], "action": []}
    resid = {"state": [], "action": [], "total": []}
    for m in measured:
        with torch.no_grad():
            values = mu + sigma * v(m.state)
            baselines = mu + sigma * b(m.state, m.actions)
        grads["none"].append(state_baseline_gradient(frozen.policy, m.obs, m.actions, m.q_hat,
                                                     torch.zeros_like(m.q_hat)))
        grads["state"].append(state_baseline_gradient(frozen.policy, m.obs, m.actions, m.q_hat, values))
        grads["action"].append(action_baseline_gradient(frozen.policy, m.obs, m.actions, m.q_hat, baselines))
        resid["state"].append(float((m.q_hat - values).pow(2).mean()))
        resid["action"].append(float((m.q_hat[:, None] - baselines).pow(2).mean()))
        resid["total"].append(float(m.q_hat.var()))
    g = {k: torch.stack(x) for k, x in grads.items()}
    stats = {k: GradientStats.of(x) for k, x in g.items()}
    var_state, var_action = stats["state"].total_variance, stats["action"].total_variance
    agree = agreement(g["action"], g["state"])
    q_var = float(np.mean(resid["total"]))
    return {
        "task": task, "seed": seed, "act_dim": int(act_dim), "checkpoint": frozen.description,
        "batches": budget.batches, "batch_size": budget.batch_size(task), "gamma": frozen.gamma,
        "params": int(g["state"].shape[1]),
        "grad_var_no_baseline": stats["none"].total_variance,
        "grad_var_state_baseline": var_state, "grad_var_action_baseline": var_action,
        "variance_ratio": var_action / var_state,
        "unbiased": agree["unbiased"], "agreement": {k: v for k, v in agree.items() if k != "unbiased"},
        # how much of Q̂'s variance each baseline explains on the measured batches (1 − residual / Var Q̂)
        "explained_state": 1.0 - float(np.mean(resid["state"])) / q_var,
        "explained_action": 1.0 - float(np.mean(resid["action"])) / q_var,
        "checkpoint_s": round(ckpt_s, 1), "collect_s": round(collect_s, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def summarize(results: list[dict]) -> dict:
    """One task's figures over seeds: mean variances, their ratio, unbiased on every seed."""
    if len(results) == 1:
        return dict(results[0])
    out = {k: results[0][k] for k in ("task", "act_dim", "batches", "batch_size", "gamma", "params")}
    for key in ("grad_var_no_baseline", "grad_var_state_baseline", "grad_var_action_baseline", "explained_state",
                "explained_action"):
        out[key] = float(np.mean([r[key] for r in results]))
    out["variance_ratio"] = out["grad_var_action_baseline"] / out["grad_var_state_baseline"]
    out["variance_ratio_per_seed"] = [r["variance_ratio"] for r in results]
    out["unbiased"] = all(r["unbiased"] for r in results)
    out["seeds"] = [r["seed"] for r in results]
    out["checkpoint"] = [r["checkpoint"] for r in results]
    out["per_seed"] = results
    return out


# ---- learning curves at equal env steps ------------------------------------------------------------------------------
def curve(task: str, steps: int, seed: int, action_baseline: bool, runs_dir: str, eval_episodes: int = 20) -> dict:
    """One PPO run (the task's preset) with or without ``ppo.action_baseline``: its evaluation curve."""
    from stack.bench.curves import CURVE_EVALS, run_curve
    from stack.config import TrainConfig, from_dict
    from stack.runs import default_run_name

    tag = f"bench-variance-{'ppo-ab' if action_baseline else 'ppo'}"
    cfg = from_dict(TrainConfig, {"eval_every": max(steps // CURVE_EVALS, 1), "eval_episodes": eval_episodes,
                                  "ppo": {"action_baseline": action_baseline},
                                  "name": default_run_name(tag, task, f"s{seed}")},
                    train_config(task, steps, seed, runs_dir))
    return run_curve(cfg)


def learning_curves(task: str, steps: int, seeds: list[int], runs_dir: str = "runs") -> dict:
    """PPO vs PPO + action-dependent baseline on ``task`` at the same env steps and seeds; final figures as mean ±
    SE over seeds."""
    from stack.seeds import mean_se

    out: dict = {"task": task, "env_steps": steps, "seeds": list(seeds)}
    for name, flag in (("ppo", False), ("ppo_action_baseline", True)):
        runs = [curve(task, steps, s, flag, runs_dir) for s in seeds]
        summary = {"per_seed": runs}
        for key in ("eval_return", "eval_success"):
            if all(key in r for r in runs):
                mean, se = mean_se([r[key][-1] for r in runs])
                summary[f"final_{key}"], summary[f"final_{key}_se"] = mean, se
        out[name] = summary
    return out


UNBIASED_TEST = ("paired over batches, d = g_action - g_state: ||mean d|| <= 3 sqrt(sum_k SE_k^2) and <= 1 % of "
                 "coordinates beyond 3 SE (stack.algos.action_baseline.agreement)")


def run(quick: bool = False, seeds: list[int] | None = None, budget: Budget | None = None,
        runs_dir: str = "runs") -> dict:
    """The bench: every task of the budget over ``seeds`` (default: the budget's); the arm's figures at the top."""
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    budget = budget or (QUICK if quick else FULL)
    seeds = [int(s) for s in (seeds or budget.seeds)]
    t0 = time.perf_counter()
    per_task = {task: summarize([measure(task, s, budget, runs_dir) for s in seeds]) for task in budget.tasks}
    arm = per_task.get(ARM_TASK) or next(iter(per_task.values()))
    out = {k: arm[k] for k in ("task", "act_dim", "checkpoint", "batches", "batch_size", "grad_var_no_baseline",
                               "grad_var_state_baseline", "grad_var_action_baseline", "variance_ratio",
                               "unbiased")}
    fit = {"steps": budget.fit.steps, "batch_size": budget.fit.batch_size, "lr": budget.fit.lr,
           "fit_samples": budget.fit_batches * budget.batch_size(arm["task"])}
    out.update({"unbiased_test": UNBIASED_TEST, "seeds": seeds, "fit_budget": fit, "quick": quick,
                "per_task": per_task})
    if budget.curve_steps:
        out["curves"] = {task: learning_curves(task, steps, seeds, runs_dir)
                         for task, steps in budget.curve_steps.items()}
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--curves", type=int, default=None, metavar="STEPS",
                   help="only the learning curves on the arm (PPO vs PPO + action baseline) at STEPS env steps")
    p.add_argument("--runs-dir", default="runs")
    args = p.parse_args()
    if args.curves:
        print(json.dumps(learning_curves(ARM_TASK, args.curves, args.seeds or [1, 2, 3], args.runs_dir)))
    else:
        print(json.dumps(run(quick=args.quick, seeds=args.seeds, runs_dir=args.runs_dir)))
