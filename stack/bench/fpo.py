"""``r2s bench fpo``: FPO (flow policy, from scratch) against Gaussian PPO at the same env-step budget and seeds,
FPO++ against FPO, zero-noise against random-noise evaluation, and a multimodality check.

Per task and seed (same seeds for every method):

* FPO: ``stack.train`` with the task's ``<task>_fpo`` preset (FPO's defaults where the preset says nothing: 4×32 SiLU
  flow MLP, 10 Euler steps, N_mc 8, clip 0.05), from a fresh policy. ``return_before`` is that initial policy's
  return (zero-sampling, the runner's evaluation seeds), ``return_after`` the final evaluation (zero-sampling, FPO++'s
  deployment mode) and ``return_after_random_noise`` the same checkpoint sampling its ODE from N(0, I) noise.
* PPO: the task's ``<task>_ppo`` preset (CleanRL's settings where there is none), same env steps and seed.
* FPO++: the same run as FPO with ``fpo.variant = fpo++`` (per-sample ratios, ASPO, ℓ_old clamped).

The comparison is made fair by construction (``method_config``): the flows' critic is PPO's (its hidden widths,
tanh), and a fresh flow's source noise is N(0, σ²I) with σ = exp(PPO's ``log_std_init``), so both start at the same
action std. ``start_action_stats`` measures that: the initial policy's per-dimension std of sampled (pre-clip,
normalised) actions at 64 initial states × 32 samples each, and the share of sampled actions at the ±1 limits
(``<method>_start_std``, ``<method>_start_at_limits``).

Figures are means over seeds with their standard error and spread (std, min/max); per method the total wall-clock
(``<method>_wall_s``, evaluations included) and env-steps/s of training (``<method>_steps_per_s``: env steps over the
runner's training time, evaluations excluded), and ``fpo_steps_per_s_ratio`` = FPO's / PPO's. Learning curves
(evaluation return against env steps and against training wall-clock, every method and seed) go to
``<runs_dir>/bench-fpo-<quick|full>/curves.csv`` and ``curves_<task>.png``.

Multimodality: ``TwoGoalPointMass`` (below) — a point mass starting at the origin with two equally good goals at
(±0.8, 0). FPO, FPO++ and PPO train on it at the same budget; then each samples ``episodes`` stochastic episodes
from the same start (flows: random-noise ODE; PPO: its Gaussian) and the bench counts where they end
(``share_left`` / ``share_right``, ``mode_coverage`` = the smaller), and draws 1000 first actions at the exact start:
shares committed left / right / in between (a Gaussian centred between the goals fills the middle, a policy
covering both goals both sides). ``covers_both``: ≥ 5 % of episodes at each goal and ≥ 20 % of first actions to
each side.

Multimodality from demonstrations (``multimodality_bc``, the diffusion-policy demonstration): PD demos that go left in
half the episodes and right in the other half from the same near-origin start → BC of a flow, a diffusion and a
Gaussian policy → from exactly the origin, stochastic episodes and first actions (flow: random-noise ODE; diffusion:
DDPM; Gaussian: its mean and N(μ, σ) sampled) → shares at left / right / neither goal; then FPO fine-tunes the BC
flow (``init_from``) and the same is measured again. ``covers_both`` here: ≥ 20 % of episodes at each goal and
≥ 20 % of first actions to each side.

``--quick``: one task (reach, where the methods learn within the budget), 3 seeds (a reach run is ~20 s), 51k env
steps, FPO, FPO++ and PPO, 20 evaluation episodes; ~5 minutes on a 2-core CPU. Full mode: halfcheetah (1M env
steps) and reach (300k), 3 seeds (hours on a CPU).
The last stdout line is the JSON result.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sim.tasks.point_mass import PointMassTask

TWO_GOAL_TASK = "stack.bench.fpo:TwoGoalPointMass"


class TwoGoalPointMass(PointMassTask):
    """The point mass with two equally good goals at (±goal_x, 0, …) and a start at the origin (± start_noise).

    Reward ``1 − distance to the nearer goal``; ``info["success"]``: within ``success_radius`` of either. Symmetric
    under x → −x, so from the start both goals are optimal and an optimal stochastic policy may go to either.
    """

    def __init__(self, goal_x: float = 0.8, start_noise: float = 0.02, max_episode_steps: int = 30, **kw):
        super().__init__(max_episode_steps=max_episode_steps, **kw)
        self.goals = np.zeros((2, self.dim))
        self.goals[:, 0] = (goal_x, -goal_x)
        self.start_noise = float(start_noise)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._p = self.np_random.uniform(-self.start_noise, self.start_noise, size=self.dim)
        return self._obs(), {}

    def step(self, action):
        obs, _, terminated, truncated, _ = super().step(action)
        dist = float(np.min(np.linalg.norm(self.goals - self._p, axis=1)))
        return obs, 1.0 - dist, terminated, truncated, {"success": dist < self.success_radius}


@dataclass(frozen=True)
class Budget:
    tasks: tuple[str, ...]
    """Tasks when ``task`` is not given."""
    seeds: tuple[int, ...]
    env_steps: dict
    """Env steps per task (every method gets the same)."""
    variants: tuple[str, ...]
    """FPO variants run ('fpo' always)."""
    eval_episodes: int
    multimodal_steps: int
    multimodal_episodes: int
    bc_finetune_steps: int = 8192
    """FPO env steps fine-tuning the BC flow policy in ``multimodality_bc``."""


FULL = Budget(tasks=("halfcheetah", "reach"), seeds=(1, 2, 3), env_steps={"halfcheetah": 1_000_000, "reach": 300_000},
              variants=("fpo", "fpo++"), eval_episodes=10, multimodal_steps=49_152, multimodal_episodes=200,
              bc_finetune_steps=24_576)
QUICK = Budget(tasks=("reach",), seeds=(1, 2, 3), env_steps={"halfcheetah": 51_200, "reach": 51_200},
               variants=("fpo", "fpo++"), eval_episodes=20, multimodal_steps=24_576, multimodal_episodes=100)


# ---- configs --------------------------------------------------------------------------------------------------------
def _preset(name: str):
    from stack.config import PRESET_DIR, TrainConfig, from_dict, load_preset

    return from_dict(TrainConfig, load_preset(name)) if (PRESET_DIR / f"{name}.yaml").exists() else None


def method_config(method: str, task: str, steps: int, seed: int, runs_dir: str, device: str, eval_episodes: int):
    """TrainConfig of one run: 'ppo', 'fpo' or 'fpo++' on ``task`` (its preset, else the defaults); a flow gets
    PPO's critic and starting action std (``fair_to_ppo``)."""
    from stack.config import EnvConfig, TrainConfig, from_dict
    from stack.runs import default_run_name

    algo = "ppo" if method == "ppo" else "fpo"
    base = _preset(f"{task}_{algo}") or TrainConfig(algo=algo, env=EnvConfig(task=task))
    cfg = from_dict(TrainConfig, {
        "algo": algo, "total_env_steps": int(steps), "seed": int(seed), "eval_every": max(int(steps) // 5, 1),
        "eval_episodes": eval_episodes, "checkpoint_every": 0, "device": device, "torch_threads": 1,
        "name": default_run_name("bench-fpo", method.replace("+", "p"), task.split(":")[-1], f"s{seed}"),
        "runs_dir": runs_dir, "progress": False,
    }, base)
    if method == "fpo++":
        cfg = dataclasses.replace(cfg, fpo=dataclasses.replace(cfg.fpo, variant="fpo++"))
    if algo == "fpo":
        cfg = dataclasses.replace(cfg, fpo=fair_to_ppo(cfg.fpo, task))
    return cfg


def fair_to_ppo(fpo_cfg, task: str):
    """The FPO section with PPO's critic (hidden widths, tanh: ``PPO.make_algo``'s ValueNet) and a source noise
    σ = exp(PPO's ``log_std_init``), so a fresh flow starts at PPO's action std (the flow's output ×0.25 keeps a
    fresh flow's samples near its noise). reach: 2×64, σ = 0.37 (its preset already says so)."""
    from stack.config import PPOConfig

    base = _preset(f"{task}_ppo")
    ppo = base.ppo if base is not None else PPOConfig()
    return dataclasses.replace(fpo_cfg, critic_hidden=tuple(ppo.hidden), critic_activation="tanh",
                               noise_scale=round(math.exp(ppo.log_std_init), 4))


# ---- evaluation -----------------------------------------------------------------------------------------------------
def initial_return(cfg, episodes: int) -> dict:
    """Return of the policy a run starts from (the runner's seeding and evaluation seeds; obs normaliser fresh)."""
    import torch

    from sim.pool import resolve_task
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.normalize import ObsNormalizer
    from stack.rollout import ActionScaler
    from stack.runners import eval_seed, task_kwargs_of
    from stack.runners.on_policy import make_algo

    env = resolve_task(cfg.env.task)(**task_kwargs_of(cfg))
    obs_dim, space = int(np.prod(env.observation_space.shape)), env.action_space
    env.close()
    torch.manual_seed(cfg.seed)  # as OnPolicyRunner: the same initial weights
    algo = make_algo(cfg, obs_dim, int(space.shape[0]), torch.device(cfg.device))
    policy = PolicyController(algo.policy, ObsNormalizer(obs_dim), ActionScaler.for_space(space),
                              algo.eval_sampling(), algo.act_steps, seed=eval_seed(cfg.seed))
    return evaluate(policy, cfg.env.task, episodes, eval_seed(cfg.seed), task_kwargs=task_kwargs_of(cfg))


def start_action_stats(cfg, states: int = 64, samples: int = 32) -> dict:
    """The initial policy's action spread (the runner's seeding, so the weights it starts from): at ``states``
    initial observations (env resets, the eval seeds; normalised by their own mean/std as the runner's running
    normaliser soon does), ``samples`` sampled actions each, pre-clip, in the normalised action space [-1, 1] →
    ``start_std`` (per-dimension std over the samples of one state, averaged over states and dimensions) and
    ``start_at_limits`` (the share of sampled action components at or beyond ±1, i.e. clipped)."""
    import torch

    from sim.pool import resolve_task
    from stack.runners import eval_seed, task_kwargs_of
    from stack.runners.on_policy import make_algo

    env = resolve_task(cfg.env.task)(**task_kwargs_of(cfg))
    obs = np.stack([env.reset(seed=eval_seed(cfg.seed) + i)[0] for i in range(states)]).reshape(states, -1)
    act_dim = int(env.action_space.shape[0])
    env.close()
    obs = (obs - obs.mean(0)) / (obs.std(0) + 1e-8)
    torch.manual_seed(cfg.seed)
    algo = make_algo(cfg, obs.shape[1], act_dim, torch.device(cfg.device))
    x = torch.as_tensor(np.repeat(obs, samples, axis=0), dtype=torch.float32, device=algo.device)
    actions = algo.act(x)[0][:, 0].reshape(states, samples, act_dim).double()
    return {"start_std": round(float(actions.std(1).mean()), 4),
            "start_at_limits": round(float((actions.abs() >= 1.0).double().mean()), 4)}


def random_noise_return(run_dir: Path, cfg, episodes: int) -> float:
    """The final FPO checkpoint with its ODE started from N(0, I) noise (seeded) instead of zeros."""
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.runners import eval_seed, task_kwargs_of

    policy = PolicyController.from_checkpoint(run_dir, zero_noise=False)
    return evaluate(policy, cfg.env.task, episodes, eval_seed(cfg.seed),
                    task_kwargs=task_kwargs_of(cfg))["return_mean"]


def stochastic_controller(run_dir: Path, seed: int = 0):
    """A checkpoint sampling as a stochastic policy: Gaussian N(μ, σ), flow ODE from N(0, I), diffusion's chain."""
    from stack.controller import PolicyController

    return PolicyController.from_checkpoint(run_dir, seed=seed, deterministic=False, zero_noise=False)


def final_positions(policy, episodes: int, seed: int, start_noise: float = 0.02) -> np.ndarray:
    """Run ``episodes`` TwoGoalPointMass episodes side by side (env i seeded seed + i) → final positions [E, 2].
    ``start_noise`` 0: every episode starts at exactly the origin, at rest."""
    envs = [TwoGoalPointMass(start_noise=start_noise) for _ in range(episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)])
    final = np.zeros((episodes, envs[0].dim))
    running = list(range(episodes))
    policy.reset()
    while running:
        actions = policy.act_batch(obs[running], running)
        still = []
        for k, i in enumerate(running):
            o, _, term, trunc, _ = envs[i].step(actions[k])
            obs[i] = o
            if term or trunc:
                final[i] = envs[i]._p
            else:
                still.append(i)
        running = still
    return final


def mode_shares(final: np.ndarray, goal_x: float = 0.8, radius: float = 0.3) -> dict:
    """Where the episodes ended: share within ``radius`` of each goal, and mode_coverage = min of the two."""
    left = float(np.mean(np.linalg.norm(final - [-goal_x, 0.0], axis=1) < radius))
    right = float(np.mean(np.linalg.norm(final - [goal_x, 0.0], axis=1) < radius))
    return {"share_left": round(left, 3), "share_right": round(right, 3), "mode_coverage": round(min(left, right), 3)}


# ---- the benchmark --------------------------------------------------------------------------------------------------
def _train(cfg) -> tuple[Path, float, list[dict]]:
    import csv

    from stack.train import train

    t0 = time.perf_counter()
    run_dir = train(cfg)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    return Path(run_dir), wall, rows


def _summary(values: list[float]) -> dict:
    """Mean ± standard error across seeds (``stack.seeds.mean_se``), with the spread."""
    from stack.seeds import mean_se

    v = np.asarray(values, float)
    mean, se = mean_se(list(v))
    return {"mean": round(mean, 2), "se": round(se, 2), "std": round(float(v.std()), 2),
            "min": round(float(v.min()), 2), "max": round(float(v.max()), 2), "n": len(v)}


def run_task(task: str, budget: Budget, seeds, steps: int, runs_dir: str, device: str) -> dict:
    """Every method on ``task`` for every seed → per-seed results and their summaries."""
    per_seed = []
    for seed in seeds:
        rec: dict = {"seed": seed}
        fpo_cfg = method_config("fpo", task, steps, seed, runs_dir, device, budget.eval_episodes)
        before = initial_return(fpo_cfg, budget.eval_episodes)
        rec["return_before"] = before["return_mean"]
        for method in ("fpo", *[v for v in budget.variants if v != "fpo"], "ppo"):
            cfg = fpo_cfg if method == "fpo" else method_config(method, task, steps, seed, runs_dir, device,
                                                                budget.eval_episodes)
            key = METHOD_KEYS[method]
            rec.update({f"{key}_{k}": v for k, v in start_action_stats(cfg).items()})
            run_dir, wall, rows = _train(cfg)
            final = [r for r in rows if "eval_return" in r][-1]
            env_steps = int(rows[-1]["env_steps"])
            train_s = float(rows[-1]["time_s"])
            rec[f"{key}_return_after"] = final["eval_return"]
            rec[f"{key}_env_steps"] = env_steps
            rec[f"{key}_wall_s"] = round(wall, 1)
            rec[f"{key}_train_s"] = round(train_s, 1)
            rec[f"{key}_steps_per_s"] = round(env_steps / train_s, 1)
            if method == "ppo":
                rec["ppo_return_before"] = initial_return(cfg, budget.eval_episodes)["return_mean"]
            # [env steps, training wall-clock s, eval return]: the initial policy, then every evaluation
            start = rec["ppo_return_before" if method == "ppo" else "return_before"]
            rec[f"{key}_curve"] = [[0, 0.0, round(start, 2)]] + [
                [int(r["env_steps"]), round(r["time_s"], 2), round(r["eval_return"], 2)] for r in rows
                if "eval_return" in r]
            rec[f"{key}_run_dir"] = str(run_dir)
            if method != "ppo":
                rec[f"{key}_return_after_random_noise"] = random_noise_return(run_dir, cfg, budget.eval_episodes)
        # paired by seed (same env seeds, the same evaluation episodes' seeds): the SE across seeds of the difference
        rec["fpo_minus_ppo"] = rec["fpo_return_after"] - rec["ppo_return_after"]
        if "fpo_pp_return_after" in rec:
            rec["fpo_pp_minus_ppo"] = rec["fpo_pp_return_after"] - rec["ppo_return_after"]
        rec["fpo_steps_per_s_ratio"] = round(rec["fpo_steps_per_s"] / rec["ppo_steps_per_s"], 3)
        if "fpo_pp_steps_per_s" in rec:
            rec["fpo_pp_steps_per_s_ratio"] = round(rec["fpo_pp_steps_per_s"] / rec["ppo_steps_per_s"], 3)
        per_seed.append(rec)
    keys = [k for k in per_seed[0] if isinstance(per_seed[0][k], float | int) and k != "seed"]
    summary = {k: _summary([r[k] for r in per_seed]) for k in keys}
    out = {"task": task, "env_steps": per_seed[0]["fpo_env_steps"], "seeds": list(seeds),
           "return_before": summary["return_before"]["mean"], "return_after": summary["fpo_return_after"]["mean"],
           "ppo_return_after": summary["ppo_return_after"]["mean"],
           "return_after_random_noise": summary["fpo_return_after_random_noise"]["mean"],
           "ppo_return_before": summary["ppo_return_before"]["mean"],
           "fpo_steps_per_s_ratio": summary["fpo_steps_per_s_ratio"]["mean"],
           "fpo_minus_ppo": summary["fpo_minus_ppo"]["mean"], "fpo_minus_ppo_se": summary["fpo_minus_ppo"]["se"],
           **{f"{m}_{k}": summary[f"{m}_{k}"]["mean"] for m in ("fpo", "ppo")
              for k in ("start_std", "start_at_limits", "wall_s", "steps_per_s")}}
    if "fpo_pp_return_after" in summary:
        out["fpo_pp_return_after"] = summary["fpo_pp_return_after"]["mean"]
        out["fpo_pp_return_after_random_noise"] = summary["fpo_pp_return_after_random_noise"]["mean"]
        out.update({f"fpo_pp_{k}": summary[f"fpo_pp_{k}"]["mean"]
                    for k in ("start_std", "start_at_limits", "wall_s", "steps_per_s", "steps_per_s_ratio")})
        out.update(fpo_pp_minus_ppo=summary["fpo_pp_minus_ppo"]["mean"],
                   fpo_pp_minus_ppo_se=summary["fpo_pp_minus_ppo"]["se"])
    out.update(summary=summary, per_seed=per_seed)
    return out


METHOD_KEYS = {"fpo": "fpo", "fpo++": "fpo_pp", "ppo": "ppo"}


def write_curves(results: list[dict], folder: Path) -> dict:
    """Learning curves of every method and seed: ``curves.csv`` (task, method, seed, env_steps, train_s,
    eval_return) and per task ``curves_<task>.png``: evaluation return against env steps and against training
    wall-clock (thin: each seed; thick: the mean over seeds at each evaluation, wall-clock averaged too)."""
    import csv

    folder.mkdir(parents=True, exist_ok=True)
    rows = [(r["task"], method, rec["seed"], *point) for r in results for rec in r["per_seed"]
            for method, key in METHOD_KEYS.items() if f"{key}_curve" in rec for point in rec[f"{key}_curve"]]
    with open(folder / "curves.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "method", "seed", "env_steps", "train_s", "eval_return"])
        writer.writerows(rows)
    out = {"csv": str(folder / "curves.csv"), "png": []}
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the figures never depend on the plot
        return out
    for r in results:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for i, (method, key) in enumerate(METHOD_KEYS.items()):
            curves = [np.asarray(rec[f"{key}_curve"], float) for rec in r["per_seed"] if f"{key}_curve" in rec]
            if not curves:
                continue
            n = min(len(c) for c in curves)
            mean = np.mean([c[:n] for c in curves], axis=0)
            for ax, col, label in ((axes[0], 0, "env steps"), (axes[1], 1, "training wall-clock (s)")):
                for c in curves:
                    ax.plot(c[:, col], c[:, 2], color=f"C{i}", lw=0.7, alpha=0.35)
                ax.plot(mean[:, col], mean[:, 2], color=f"C{i}", marker="o", ms=3,
                        label=f"{method} (mean of {len(curves)})")
                ax.set_xlabel(label)
        axes[0].set_ylabel("evaluation return")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(f"bench fpo: {r['task']}")
        fig.tight_layout()
        path = folder / f"curves_{r['task'].split(':')[-1]}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        out["png"].append(str(path))
    return out


def first_action_shares(policy, samples: int = 1000) -> dict:
    """The x-component of ``samples`` stochastic first actions at the exact start (origin, at rest), in env units
    (±2): shares committed left (< −1), right (> 1) and in between. A Gaussian centred at 0 fills the middle; a policy
    covering both goals puts mass on both sides."""
    obs = np.zeros((samples, 4))
    policy.reset()
    a = policy.act_batch(obs, list(range(samples)))[:, 0]
    return {"first_left": round(float(np.mean(a < -1.0)), 3), "first_right": round(float(np.mean(a > 1.0)), 3),
            "first_middle": round(float(np.mean(np.abs(a) <= 1.0)), 3)}


def multimodality(budget: Budget, seed: int, runs_dir: str, device: str) -> dict:
    """FPO, FPO++ and PPO on TwoGoalPointMass at the same budget (FPO's learning rate 3e-4 for the flows); where
    their stochastic episodes end from the start, and how their first actions there spread."""
    from stack.config import EnvConfig, FPOConfig, PPOConfig, TrainConfig
    from stack.runs import default_run_name

    out: dict = {"task": "two-goal point mass (goals at (±0.8, 0), start at the origin)",
                 "env_steps": budget.multimodal_steps, "episodes": budget.multimodal_episodes}
    common = dict(env=EnvConfig(task=TWO_GOAL_TASK, num_envs=8, backend="sync"), seed=seed, eval_every=0,
                  total_env_steps=budget.multimodal_steps, eval_episodes=10, checkpoint_every=0, device=device,
                  runs_dir=runs_dir, progress=False)

    def flow(variant: str) -> TrainConfig:
        return TrainConfig(algo="fpo", fpo=FPOConfig(variant=variant, rollout_steps=64, num_minibatches=8,
                                                     update_epochs=10, critic_hidden=(64, 64), lr=3e-4),
                           name=default_run_name("bench-fpo-2goal", variant.replace("+", "p")), **common)

    cfgs = {"fpo": flow("fpo"), "fpo++": flow("fpo++"),
            "ppo": TrainConfig(algo="ppo", ppo=PPOConfig(rollout_steps=64, num_minibatches=8),
                               name=default_run_name("bench-fpo-2goal", "ppo"), **common)}
    for method, cfg in cfgs.items():
        run_dir, wall, rows = _train(cfg)
        stochastic = stochastic_controller(run_dir)
        shares = mode_shares(final_positions(stochastic, budget.multimodal_episodes, seed=2_000_000))
        out[method] = {"eval_return": round(rows[-1]["eval_return"], 2), **shares, **first_action_shares(stochastic),
                       "wall_s": round(wall, 1), "run_dir": str(run_dir)}
        out[method]["covers_both"] = bool(min(shares["share_left"], shares["share_right"]) > 0.05
                                          and min(out[method]["first_left"], out[method]["first_right"]) > 0.2)
    return out


# ---- multimodality from demonstrations (behaviour cloning) ----------------------------------------------------------
def two_goal_demos(root, episodes: int = 40, seed: int = 0, goals: tuple[int, ...] = (-1, 1), kp: float = 6.0,
                   kd: float = 3.0, noise_std: float = 0.2, start_noise: float = 0.1) -> Path:
    """Bimodal demonstrations on TwoGoalPointMass: a PD controller ``a = kp·(g − p) − kd·v`` (+ N(0, noise_std²)
    executed, clipped to ±2; the noise-free action recorded as ``action.proposal``) toward goal ``g = (s·0.8, 0)``,
    ``s = goals[i % len(goals)]`` in episode i: half the episodes go left, half right, from the same near-origin start
    (``goals=(1,)``: a unimodal demonstrator). Starts uniform in ±``start_noise`` around the origin, the goal drawn
    independently of the start, so the demonstrations are bimodal over a patch of start states, not at one point.
    The PD reaches its goal in ~15 of the 30 steps."""
    from stack.data import EpisodeWriter

    env, rng = TwoGoalPointMass(start_noise=start_noise), np.random.default_rng(seed)
    writer = EpisodeWriter.for_task(root, TWO_GOAL_TASK, env, extra_info={
        "expert": "pd-two-goal", "goals": list(goals), "task_kwargs": {"start_noise": start_noise}})
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed + ep)
        goal = np.array([goals[ep % len(goals)] * env.goals[0, 0], 0.0])
        done = False
        while not done:
            clean = np.clip(kp * (goal - obs[:2]) - kd * obs[2:], -2.0, 2.0)
            a = np.clip(clean + rng.normal(0.0, noise_std, 2), -2.0, 2.0)
            nxt, r, term, trunc, info = env.step(a)
            writer.add_step(obs, a, r, terminated=term, truncated=trunc, success=info["success"], proposal=clean)
            obs, done = nxt, term or trunc
        writer.end_episode(seed=seed + ep, goal=goal.tolist())
    return writer.close()


BC_POLICIES = {
    "flow": {"hidden": (128, 128), "euler_steps": 10},
    "diffusion": {"hidden": (128, 128, 128), "denoising_steps": 10},
    "gaussian": {"hidden": (128, 128)},
}
"""Network sizes of the multimodality BC runs (CI-sized). One action per call (horizon 1): with 4-action chunks and
64-wide networks the flow stayed a blur (x-action std ≈ 0.8 of the ±2 range even where the demos are unimodal)
within a CI budget; horizon 1 at lr 3e-3 is sharp off the start and bimodal at it."""


def covers_both(shares: dict, episodes_min: float = 0.2, first_min: float = 0.2) -> bool:
    """Both goals reached in ≥ ``episodes_min`` of the episodes and ≥ ``first_min`` of first actions to each side."""
    return bool(min(shares["share_left"], shares["share_right"]) >= episodes_min
                and min(shares["first_left"], shares["first_right"]) >= first_min)


def stochastic_shares(policy, episodes: int, seed: int, samples: int = 1000) -> dict:
    """Where ``episodes`` stochastic episodes from exactly the origin end, and how ``samples`` first actions there
    spread (``mode_shares`` + ``first_action_shares``; ``share_neither`` = episodes at neither goal)."""
    shares = mode_shares(final_positions(policy, episodes, seed=seed, start_noise=0.0))
    shares["share_neither"] = round(1.0 - shares["share_left"] - shares["share_right"], 3)
    return {**shares, **first_action_shares(policy, samples)}


FINETUNE_FPO = dict(variant="fpo++", rollout_steps=32, num_minibatches=4, update_epochs=10, critic_hidden=(64, 64),
                    lr=1e-5, critic_lr=1e-4, clip_coef=0.03, max_grad_norm=1.0)
"""FPO fine-tuning settings of the BC flow in ``multimodality_bc``: FPO++'s fine-tuning recipe (actor lr 1e-5, critic
1e-4, clip 0.03). Measured (seed 1, 8192 env steps): modes 35/65 % → 19/81 %, none lost to the middle; FPO's
from-scratch settings (lr 3e-4, clip 0.05) instead collapsed the flow to neither goal (100 % "neither")."""


def multimodality_bc(seed: int = 1, runs_dir: str = "runs", device: str = "cpu", demo_episodes: int = 40,
                     bc_steps: int = 2000, episodes: int = 100, finetune_steps: int = 0,
                     goals: tuple[int, ...] = (-1, 1), policies=("flow", "diffusion", "gaussian"),
                     finetune_fpo: dict | None = None) -> dict:
    """The diffusion-policy multimodality demonstration: bimodal demos (``two_goal_demos``) → BC of a flow, a
    diffusion and a Gaussian policy → from exactly the origin, ``episodes`` stochastic episodes (flow: ODE from
    N(0, I); diffusion: DDPM; Gaussian: its mean μ, and sampled N(μ, σ) with σ learned by NLL) and 1000 first
    actions: shares at left / right / neither goal, first actions left / right / in between, ``covers_both``.
    ``finetune_steps`` > 0: then FPO (``init_from`` the BC flow run) for that many env steps on TwoGoalPointMass,
    and the same measurement of the fine-tuned flow (random-noise ODE) — do both modes survive RL? ``finetune_fpo``:
    FPOConfig fields for that run (default ``FINETUNE_FPO``)."""
    import uuid

    from stack.config import BCConfig, TrainConfig
    from stack.controller import PolicyController
    from stack.runs import default_run_name
    from stack.train import train

    tag = default_run_name("bench-fpo-2goal-bc", f"s{seed}") + "-" + uuid.uuid4().hex[:6]
    root = Path(runs_dir) / tag
    t0 = time.perf_counter()
    demos = two_goal_demos(root / "demos", episodes=demo_episodes, seed=seed, goals=goals)
    out: dict = {"task": "two-goal point mass, bimodal PD demos (half left, half right), BC then sampling from the "
                         "exact origin", "demo_episodes": demo_episodes, "demo_goals": list(goals),
                 "bc_grad_steps": bc_steps, "episodes": episodes}
    eval_seed = 3_000_000 + 1000 * seed
    for kind in policies:
        t1 = time.perf_counter()
        bc = BCConfig(policy_kwargs=BC_POLICIES[kind], horizon=1, act_steps=1, lr=3e-3, lr_final=3e-4,
                      action_key="action.proposal", gaussian_objective="nll", grad_steps=bc_steps, batch_size=128,
                      log_every=max(bc_steps, 1))
        run = train(TrainConfig(algo="bc", policy=kind, dataset=str(demos), bc=bc, eval_episodes=0, progress=False,
                                tensorboard=False, runs_dir=str(root), name=f"bc-{kind}", seed=seed, device=device))
        wall = round(time.perf_counter() - t1, 1)
        if kind == "gaussian":
            mean = PolicyController.from_checkpoint(run, seed=eval_seed)
            out["gaussian_mean"] = {**stochastic_shares(mean, episodes, eval_seed), "wall_s": wall}
            out["gaussian_mean"]["covers_both"] = covers_both(out["gaussian_mean"])
            key = "gaussian_sampled"
        else:
            key = kind
        policy = stochastic_controller(run, seed=eval_seed)
        out[key] = {**stochastic_shares(policy, episodes, eval_seed), "wall_s": wall, "run_dir": str(run)}
        out[key]["covers_both"] = covers_both(out[key])
    if finetune_steps > 0 and "flow" in policies:
        from stack.config import EnvConfig, FPOConfig

        cfg = TrainConfig(algo="fpo", env=EnvConfig(task=TWO_GOAL_TASK, num_envs=8, backend="sync"),
                          fpo=FPOConfig(**{**FINETUNE_FPO, **(finetune_fpo or {})}),
                          init_from=out["flow"]["run_dir"], total_env_steps=finetune_steps, seed=seed, eval_every=0,
                          eval_episodes=10, checkpoint_every=0, device=device, runs_dir=str(root), name="fpo-ft",
                          progress=False, torch_threads=1)
        run_dir, wall, rows = _train(cfg)
        ft = stochastic_controller(run_dir, seed=eval_seed)
        out["flow_fpo_finetuned"] = {**stochastic_shares(ft, episodes, eval_seed), "env_steps": finetune_steps,
                                     "eval_return": round(rows[-1]["eval_return"], 2), "wall_s": round(wall, 1),
                                     "run_dir": str(run_dir)}
        out["flow_fpo_finetuned"]["covers_both"] = covers_both(out["flow_fpo_finetuned"])
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def run(task: str | None = None, quick: bool = False, seeds=None, device: str = "cpu", runs_dir: str = "runs",
        steps: int | None = None, multimodal: bool = True) -> dict:
    """The benchmark → dict (``task``, ``env_steps``, ``return_before``, ``return_after``, ``ppo_return_after``, …).

    ``task``: one task, or None for the budget's (quick: reach; full: halfcheetah then reach — the top-level figures
    are the first task's, every task's under ``tasks``). ``seeds``: default 1, 2, 3. ``steps``: override
    the env-step budget."""
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    budget = QUICK if quick else FULL
    tasks = (task,) if task else budget.tasks
    seeds = tuple(seeds) if seeds else budget.seeds
    t0 = time.perf_counter()
    results = [run_task(t, budget, seeds, steps or budget.env_steps.get(t, budget.env_steps["reach"]), runs_dir,
                        device) for t in tasks]
    out = {k: v for k, v in results[0].items() if k not in ("summary", "per_seed")}
    out.update(quick=quick, device=device, methods=["fpo", *[v for v in budget.variants if v != "fpo"], "ppo"],
               tasks={r["task"]: r for r in results})
    out["curves"] = write_curves(results, Path(runs_dir) / f"bench-fpo-{'quick' if quick else 'full'}")
    if multimodal:
        out["multimodality"] = multimodality(budget, seeds[0], runs_dir, device)
        out["multimodality_bc"] = multimodality_bc(seeds[0], runs_dir, device, episodes=budget.multimodal_episodes,
                                                   finetune_steps=budget.bc_finetune_steps)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    out["fpo_beats_ppo"] = {r["task"]: bool(r["return_after"] > r["ppo_return_after"]) for r in results}
    out["fpo_pp_at_least_ppo"] = {r["task"]: bool(r["fpo_pp_return_after"] >= r["ppo_return_after"])
                                  for r in results if "fpo_pp_return_after" in r}
    path = Path(runs_dir) / f"bench-fpo-{'quick' if quick else 'full'}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1, default=_jsonable) + "\n")
    return out


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="r2s bench fpo", description=__doc__.splitlines()[0])
    p.add_argument("--task", default=None, help="one task (default: quick reach; full halfcheetah and reach)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, nargs="*", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--no-multimodal", action="store_true")
    args = p.parse_args(argv)
    result = run(args.task, args.quick, args.seeds, args.device, args.runs_dir, args.steps, not args.no_multimodal)
    print(json.dumps(result, default=_jsonable))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
