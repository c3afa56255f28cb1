"""``r2s bench dppo``: fine-tune a BC-pretrained diffusion policy with DPPO (and, in full mode or with ``--fpo``, a flow
policy with FPO++ beside it).

Pipeline (DPPO's Gym setting, scaled to this machine; D4RL cannot be downloaded here, so the "medium" demos come from a
partially trained PPO expert, as in ``r2s bench bc``, whose caches in ``runs/`` are reused):

1. demonstrator and demos: ``stack.bench.bc.ensure_expert`` / ``ensure_demos`` (``runs/bench-expert-<task>`` and
   ``…-demos<N>``);
2. BC pretraining on the same demos with the same gradient-step budget (cached in ``runs/bench-dppo-bc-cw-…``, trained
   on complete chunk windows only): diffusion — DPPO's DiffusionMLP (residual 512×3, DDPM K = 20, chunk 4); flow —
   ``FlowPolicy`` with 5 Euler steps;
3. fine-tuning with the shared runner (``stack.train``, ``init_from`` the BC run): DPPO with the paper's Gym settings
   (K′ = 10, clip 0.01, γ_denoising 0.99, min std 0.1, actor 1e-4 / critic 1e-3, 5 epochs of 5,000-pair minibatches,
   act_steps 4, no action clamp before the log-prob, rewards scaled per rollout) on fewer envs and decisions per
   iteration, with the number of minibatches scaled to the data (see ``FULL``/``QUICK``) and a critic warmed on the
   pretrained policy's rollouts before the first actor step; FPO++ (per-sample ratios, ASPO, clamps, zero-sampling)
   with actor 1e-4 / critic 1e-3, 5 epochs × 4 minibatches, gradient clip 1, the same chunk execution;
4. paired evaluation of the BC checkpoint and the final one on the same ``eval_episodes`` env seeds with the same
   noise (``paired_returns``), the standard error from the per-episode differences. Headline sampler: DPPO's
   training chain (``AS_TRAINED``: std floor 0.1, draws clipped ±3) for both policies — the stochastic policy DPPO
   optimises. Beside it (``schedule_sampler``) the checkpoint's evaluation sampler (DDPM with the schedule's stds:
   the last step noiseless, as the reference's deterministic evaluation), under which, measured on Hopper after 160k
   steps, the fine-tuned policy falls early (return ≈ 265) in 16–30 % of the episodes, for particular noise
   sequences, and does not beat BC; and ``as_trained_vs_bc_schedule`` (fine-tuned as trained against BC under the
   schedule sampler, its better one). Learning curves (the runner's
   evaluations, return against env steps and training wall-clock) into ``runs/bench-dppo-<task>[-quick]/s<seed>/``
   (``curves.csv``, ``curves.png``, ``bench.json``).

Result (one training seed; the CLI aggregates several with ``stack.bench.over_seeds``, full mode seeds 1 2 3, the
``improvement_se`` then across seeds): ``return_before`` / ``return_after`` (means over the paired episodes),
``improvement`` = (after − before)/|before|, ``improvement_se`` (paired), ``gain`` ± ``gain_se`` (absolute),
``improvement_per_1k_env_steps`` and ``improvement_per_train_s`` (train_s = rollout + update time, evaluations
excluded), the same under ``fpo`` when run, and ``flow_matches_or_beats_dppo``. Anchor: DPPO's own configs give Hopper
1439 → 3246 over 72M env steps (~100 s per iteration on a GPU); the budgets here are a few thousandths of that.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Budget:
    expert_steps: int
    """PPO env steps of the demonstrator."""
    demo_episodes: int
    """Demonstration episodes."""
    bc_grad_steps: int
    """BC gradient steps (both policy families)."""
    finetune_steps: int
    """Env steps of each fine-tuning run (critic warm-up iterations included)."""
    num_envs: int
    """Parallel envs of the fine-tuning runs."""
    rollout_steps: int
    """Decisions per env per iteration (each executes 4 env steps)."""
    dppo_batch: int
    """DPPO minibatch in (env step × denoising step) pairs."""
    critic_warmup_itr: int
    """Critic-only iterations before the first actor update (rollouts of the pretrained policy)."""
    critic_warmup_epochs: int
    """Epochs of value regression over the decisions of each critic-only iteration."""
    eval_every: int
    """Evaluate every this many env steps during fine-tuning (the learning curve)."""
    curve_episodes: int
    """Episodes of each evaluation on the curve (the runner's; its seeds are the same at every point)."""
    eval_episodes: int
    """Episodes of the paired before/after evaluation (same env seeds and the same noise for both policies)."""


# Update-to-data ratio. The reference (cfg/gym/finetune/hopper-v2/ft_ppo_diffusion_mlp.yaml) collects 40 envs × 500
# decisions = 20,000 decisions (80k env steps) per iteration and takes 5 epochs × (20,000·K′ / 5,000) = 200 minibatch
# steps of 5,000 pairs: 0.01 actor steps per decision, each pair seen 5 times, at lr 1e-4 / clip 0.01. Scaled down
# here by keeping the *minibatch size* (5,000 pairs) and the epochs, so the number of minibatches shrinks with the data
# (quick: 2,000 decisions → 4 minibatches × 5 epochs = 20 steps per iteration): the same steps per decision and the same
# gradient noise per step as the reference, at its learning rate and clip. (The earlier bench kept 4 minibatches of
# 2,500 on 1,000 decisions: twice the reference's steps per decision, each on half its evidence.)
FULL = Budget(expert_steps=400_000, demo_episodes=100, bc_grad_steps=20_000, finetune_steps=1_000_000, num_envs=16,
              rollout_steps=250, dppo_batch=5_000, critic_warmup_itr=2, critic_warmup_epochs=20, eval_every=100_000,
              curve_episodes=20, eval_episodes=100)
QUICK = Budget(expert_steps=100_000, demo_episodes=20, bc_grad_steps=2_000, finetune_steps=160_000, num_envs=16,
               rollout_steps=125, dppo_batch=5_000, critic_warmup_itr=1, critic_warmup_epochs=20, eval_every=40_000,
               curve_episodes=10, eval_episodes=50)

HORIZON = ACT_STEPS = 4
FLOW_STEPS = 5


def ensure_bc(kind: str, dataset: Path, grad_steps: int, runs_dir: str, seed: int, device: str,
              progress: bool) -> Path:
    """A BC run of ``kind`` on ``dataset`` (chunk 4, executed 4), reused when its checkpoint matches (and is of this
    checkpoint format: else rebuilt)."""
    from stack import checkpoint
    from stack.config import BCConfig, TrainConfig
    from stack.train import train

    # "cw": trained on complete chunk windows only (stack.runners.offline); older caches padded them and are not reused.
    name = f"bench-dppo-bc-cw-{kind}-{Path(dataset).name}-{grad_steps}-s{seed}"
    path = Path(runs_dir) / name
    if checkpoint.is_current(path):
        meta = checkpoint.read_meta(path)
        if (meta.get("dataset"), meta.get("grad_steps"), meta.get("policy")) == (str(dataset), grad_steps, kind):
            return path
    if path.exists():
        import shutil

        shutil.rmtree(path)
    policy_kwargs = {"euler_steps": FLOW_STEPS} if kind == "flow" else \
        {"hidden": [512, 512, 512], "denoising_steps": 20, "time_emb_dim": 16}
    cfg = TrainConfig(algo="bc", policy=kind, dataset=str(dataset),
                      bc=BCConfig(horizon=HORIZON, act_steps=ACT_STEPS, grad_steps=grad_steps,
                                  policy_kwargs=policy_kwargs),
                      eval_episodes=0, seed=seed, device=device, runs_dir=runs_dir, name=name, progress=progress,
                      tensorboard=False)
    return Path(train(cfg))


def finetune_config(algo: str, task: str, bc_dir: Path, budget: Budget, runs_dir: str, seed: int, device: str,
                    progress: bool):
    from stack.config import DPPOConfig, EnvConfig, FPOConfig, TrainConfig
    from stack.runs import default_run_name

    # Fine-tuning (init_from) scales rewards per rollout (OnPolicyConfig.reward_scaling "auto"), as the reference.
    common = dict(algo=algo, init_from=str(bc_dir), seed=seed, device=device, total_env_steps=budget.finetune_steps,
                  env=EnvConfig(task=task, num_envs=budget.num_envs), eval_every=budget.eval_every,
                  eval_episodes=budget.curve_episodes, checkpoint_every=0, runs_dir=runs_dir, progress=progress,
                  name=default_run_name(f"bench-{algo}", task))
    if algo == "dppo":
        dppo = DPPOConfig(act_steps=ACT_STEPS, rollout_steps=budget.rollout_steps, batch_size=budget.dppo_batch,
                          n_critic_warmup_itr=budget.critic_warmup_itr,
                          critic_warmup_epochs=budget.critic_warmup_epochs)
        return TrainConfig(policy="diffusion", dppo=dppo, **common)
    fpo = FPOConfig(variant="fpo++", act_steps=ACT_STEPS, rollout_steps=budget.rollout_steps, lr=1e-4, critic_lr=1e-3,
                    update_epochs=5, num_minibatches=4, max_grad_norm=1.0)
    return TrainConfig(policy="flow", fpo=fpo, **common)


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]


# ---- paired evaluation ----------------------------------------------------------------------------------------------
AS_TRAINED = {"min_std": 0.1, "randn_clip": 3.0}
"""DPPO's training chain (``DPPOConfig.min_sampling_denoising_std`` / ``randn_clip_value``): every step's std floored at
0.1 (on Hopper's cosine schedule this changes only the last two steps: t = 0 from 0 to 0.1, t = 1 from 0.076) and the
draws clipped to ±3 — the stochastic policy DPPO optimises."""


def paired_controller(path: Path, seed: int, sampling: dict | None = None):
    """A ``PolicyController`` of the checkpoint at ``path`` whose noise is drawn per env slot, from a generator seeded
    with ``seed + slot``: env i's j-th chunk gets the same noise whichever policy acts and however the other episodes
    run (the shared generator of ``PolicyController`` hands noise to whichever slots plan together, so two policies
    whose episodes end at different times would see different noise). ``sampling``: extra options of the diffusion
    chain (``AS_TRAINED``); none: the checkpoint's evaluation sampler (DDPM with the schedule's stds)."""
    ctrl = per_slot_noise_controller().from_checkpoint(path, act_steps=ACT_STEPS, seed=seed)
    if sampling and ctrl.kind == "diffusion":
        ctrl.sampling = {**ctrl.sampling, **sampling}  # plan() passes them on to sample_chain
    ctrl.reset()
    return ctrl


def per_slot_noise_controller():
    """The ``PolicyController`` subclass of ``paired_controller`` (built on first use: torch is imported lazily)."""
    import torch

    from stack.controller import PolicyController

    class PerSlotNoise(PolicyController):
        def reset(self) -> None:
            super().reset()
            self._gens: dict[int, torch.Generator] = {}
            self._planning: list[int] = []

        def act_batch(self, obs, slots):
            slots = list(slots)
            self._planning = [s for s in slots if not self._queue.get(s)]  # the slots the parent will plan
            return super().act_batch(obs, slots)

        def _noise(self, b: int):
            parts = []
            for s in self._planning:
                if s not in self._gens:
                    self._gens[s] = torch.Generator().manual_seed(self.seed + s)
                self.generator = self._gens[s]
                parts.append(super()._noise(1))
            return None if parts[0] is None else torch.cat(parts)

    return PerSlotNoise


def paired_returns(path: Path, task: str, episodes: int, seed: int, sampling: dict | None = None) -> list[float]:
    """Per-episode returns of the checkpoint at ``path`` on env seeds ``seed … seed + episodes − 1``, slot i's noise
    from generator ``seed + i`` (``paired_controller``)."""
    from stack.evaluate import evaluate

    return evaluate(paired_controller(path, seed, sampling), task, episodes, seed)["returns"]


def paired_improvement(before: list[float], after: list[float]) -> dict:
    """Relative improvement (after − before)/|before| of the means and its standard error from the paired per-episode
    differences (std(d, ddof=1)/√n, divided by |mean before|)."""
    import numpy as np

    b, a = np.asarray(before), np.asarray(after)
    d = a - b
    scale = abs(b.mean())
    se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
    return {"improvement": float(d.mean() / scale), "improvement_paired_se": se / scale,
            "gain": float(d.mean()), "gain_se": se,
            "return_before_se": float(b.std(ddof=1) / np.sqrt(len(b))) if len(b) > 1 else float("nan"),
            "return_after_se": float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else float("nan")}


# ---- fine-tuning ----------------------------------------------------------------------------------------------------
def finetune(algo: str, task: str, bc_dir: Path, budget: Budget, runs_dir: str, seed: int, device: str,
             progress: bool) -> dict:
    """Fine-tune with the shared runner from the BC run, evaluate the BC and the final checkpoint paired
    (``paired_returns``, env seeds from ``eval_seed(seed) + 50_000``: none of the runner's curve evaluations), and read
    the learning curve from metrics.csv."""
    from stack.config import eval_seed
    from stack.train import train

    seed_eval = eval_seed(seed) + 50_000
    samplers = {"as_trained": AS_TRAINED, "schedule": None} if algo == "dppo" else {"default": None}
    t0 = time.perf_counter()
    before = {k: paired_returns(bc_dir, task, budget.eval_episodes, seed_eval, v) for k, v in samplers.items()}
    t1 = time.perf_counter()
    run_dir = Path(train(finetune_config(algo, task, bc_dir, budget, runs_dir, seed, device, progress)))
    t2 = time.perf_counter()
    after = {k: paired_returns(run_dir, task, budget.eval_episodes, seed_eval, v) for k, v in samplers.items()}
    t3 = time.perf_counter()
    rows = _rows(run_dir)
    train_s = 0.0
    curve = []
    # The curve: the runner's evaluations (the checkpoint's evaluation sampler: for DPPO the schedule's stds), starting
    # at the pretrained policy under the same sampler (the paired evaluation's, more episodes).
    last = list(samplers)[-1]
    curve.append({"seed": seed, "env_steps": 0, "train_s": 0.0, "wall_s": 0.0,
                  "eval_return": sum(before[last]) / len(before[last]), "eval_episodes": budget.eval_episodes})
    for r in rows:
        train_s += r.get("rollout_s", 0.0) + r.get("update_s", 0.0)
        if "eval_return" in r:
            curve.append({"seed": seed, "env_steps": int(r["env_steps"]), "train_s": round(train_s, 1),
                          "wall_s": round(r.get("time_s", float("nan")), 1), "eval_return": r["eval_return"],
                          "eval_episodes": budget.curve_episodes})
    train_returns = [r["train_return"] for r in rows if "train_return" in r]
    env_steps = int(rows[-1]["env_steps"])
    per_sampler = {}
    for k in samplers:
        b, a = before[k], after[k]
        per_sampler[k] = {"return_before": sum(b) / len(b), "return_after": sum(a) / len(a),
                          **paired_improvement(b, a), "early_falls_before": sum(x < 400 for x in b),
                          "early_falls_after": sum(x < 400 for x in a), "returns_before": b, "returns_after": a}
    head = per_sampler[list(samplers)[0]]
    if "schedule" in per_sampler:  # the fine-tuned chain as trained against BC under its own (better) sampler
        cross = paired_improvement(before["schedule"], after["as_trained"])
        per_sampler["as_trained_vs_bc_schedule"] = {"return_before": per_sampler["schedule"]["return_before"],
                                                    "return_after": head["return_after"], **cross}
    return {**{k: v for k, v in head.items() if not k.startswith("returns_")}, "eval_sampler": list(samplers)[0],
            "samplers": per_sampler, "env_steps": env_steps,
            "improvement_per_1k_env_steps": 1000 * head["gain"] / env_steps,
            "improvement_per_train_s": head["gain"] / train_s if train_s else float("nan"),
            "train_s": round(train_s, 1), "finetune_wall_s": round(t2 - t1, 1), "eval_s": round(t1 - t0 + t3 - t2, 1),
            "steps_per_train_s": env_steps / train_s if train_s else float("nan"),
            "train_return_start": sum(train_returns[:3]) / max(1, len(train_returns[:3])),
            "train_return_end": sum(train_returns[-3:]) / max(1, len(train_returns[-3:])),
            "eval_seed": seed_eval, "curve": curve, "run_dir": str(run_dir), "bc_run_dir": str(bc_dir)}


def write_curves(out_dir: Path, curves: dict[str, list[dict]], title: str) -> tuple[Path, Path]:
    """curves.csv (method, seed, env_steps, train_s, wall_s, eval_return) and curves.png (return against env steps
    and against training wall-clock, one line per method and seed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "curves.csv", out_dir / "curves.png"
    fields = ["method", "seed", "env_steps", "train_s", "wall_s", "eval_return", "eval_episodes"]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        for method, rows in curves.items():
            for r in rows:
                w.writerow({"method": method, **r})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for method, rows in curves.items():
        for seed in sorted({r["seed"] for r in rows}):
            pts = [r for r in rows if r["seed"] == seed]
            label = f"{method} s{seed}"
            axes[0].plot([r["env_steps"] for r in pts], [r["eval_return"] for r in pts], marker="o", label=label)
            axes[1].plot([r["train_s"] for r in pts], [r["eval_return"] for r in pts], marker="o", label=label)
    axes[0].set_xlabel("env steps")
    axes[1].set_xlabel("training wall-clock s (rollouts + updates)")
    axes[0].set_ylabel("evaluation return")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return csv_path, png_path


def run(task: str = "hopper", quick: bool = False, device: str = "cpu", runs_dir: str = "runs", seed: int = 1,
        progress: bool = True, fpo: bool | None = None) -> dict:
    """The benchmark for one training seed (see the module docstring; the CLI runs it per seed through
    ``stack.bench.over_seeds``); returns the dict the CLI prints as JSON. ``fpo``: fine-tune FPO++ beside it
    (default: in full mode only)."""
    from stack.bench.bc import _expert_steps_done, ensure_demos, ensure_expert

    budget = QUICK if quick else FULL
    fpo = not quick if fpo is None else fpo
    t0 = time.perf_counter()
    expert_name = f"bench-expert-{task}"
    if quick and _expert_steps_done(Path(runs_dir) / expert_name) < budget.expert_steps:
        expert_name += "-quick"  # the full expert is reused by --quick when it exists
    expert = ensure_expert(task, budget.expert_steps, runs_dir, expert_name, seed=seed, progress=progress)
    demos = ensure_demos(task, expert, budget.demo_episodes,
                         Path(runs_dir) / f"{expert_name}-demos{budget.demo_episodes}", progress=progress)
    t1 = time.perf_counter()
    diffusion_bc = ensure_bc("diffusion", demos, budget.bc_grad_steps, runs_dir, seed, device, progress)
    t2 = time.perf_counter()
    dppo = finetune("dppo", task, diffusion_bc, budget, runs_dir, seed, device, progress)
    out_dir = Path(runs_dir) / f"bench-dppo-{task}{'-quick' if quick else ''}"
    # improvement_se comes before improvement: over several seeds ``over_seeds`` writes the across-seed standard error
    # of ``improvement`` to ``improvement_se``, after (so over) the mean of the per-seed paired ones.
    out = {"task": task, "quick": quick, "device": device, "env_steps": dppo["env_steps"],
           "return_before": dppo["return_before"], "return_after": dppo["return_after"],
           "improvement_se": dppo["improvement_paired_se"], "improvement": dppo["improvement"],
           "improvement_paired_se": dppo["improvement_paired_se"], "gain": dppo["gain"], "gain_se": dppo["gain_se"],
           "eval_episodes": budget.eval_episodes, "eval_sampler": dppo["eval_sampler"],
           "schedule_sampler": {k: v for k, v in dppo["samplers"].get("schedule", {}).items()
                                if not k.startswith("returns_")},
           "improvement_per_1k_env_steps": dppo["improvement_per_1k_env_steps"],
           "improvement_per_train_s": dppo["improvement_per_train_s"],
           "dppo": {**dppo, "denoising_steps": 20, "ft_denoising_steps": 10, "bc_s": round(t2 - t1, 1)},
           "budget": dataclasses.asdict(budget), "demos": str(demos), "expert_s": round(t1 - t0, 1)}
    curves = {"dppo": dppo["curve"]}
    if fpo:
        t3 = time.perf_counter()
        flow_bc = ensure_bc("flow", demos, budget.bc_grad_steps, runs_dir, seed, device, progress)
        t4 = time.perf_counter()
        out["fpo"] = {**finetune("fpo", task, flow_bc, budget, runs_dir, seed, device, progress),
                      "variant": "fpo++", "denoising_steps": FLOW_STEPS, "bc_s": round(t4 - t3, 1)}
        out["flow_matches_or_beats_dppo"] = out["fpo"]["return_after"] >= dppo["return_after"]
        curves["fpo++"] = out["fpo"]["curve"]
    csv_path, png_path = write_curves(out_dir / f"s{seed}", curves, f"bench dppo {task} (seed {seed})")
    out.update(curves_csv=str(csv_path), curves_png=str(png_path), out_dir=str(out_dir))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    (out_dir / f"s{seed}" / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="r2s bench dppo", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--seed", type=int, default=1)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--fpo", dest="fpo", action="store_true", default=None, help="FPO++ beside DPPO (default: full)")
    g.add_argument("--no-fpo", dest="fpo", action="store_false", help="DPPO only")
    args = p.parse_args(argv)
    print(json.dumps(run(args.task, args.quick, args.device, args.runs_dir, args.seed, fpo=args.fpo)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
