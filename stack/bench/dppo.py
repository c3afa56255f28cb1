"""``r2s bench dppo``: fine-tune a BC-pretrained diffusion policy with DPPO, and a flow policy with FPO++ beside it.

Pipeline (DPPO's Gym setting, scaled to this machine; D4RL cannot be downloaded here, so the "medium" demos come from a
partially trained PPO expert, as in ``r2s bench bc``, whose caches in ``runs/`` are reused):

1. demonstrator and demos: ``stack.bench.bc.ensure_expert`` / ``ensure_demos`` (``runs/bench-expert-<task>`` and
   ``…-demos<N>``);
2. BC pretraining on the same demos with the same gradient-step budget (cached in ``runs/bench-dppo-bc-…``):
   diffusion — DPPO's DiffusionMLP (residual 512×3, DDPM K = 20, chunk 4); flow — ``FlowPolicy`` with 5 Euler steps;
3. fine-tuning with the shared runner (``stack.train``, ``init_from`` the BC run) at the same env-step budget:
   DPPO with the paper's Gym settings (K′ = 10, clip 0.01, γ_denoising 0.99, min std 0.1, actor 1e-4 / critic 1e-3,
   5 epochs, act_steps 4) except the batch sizes (num_envs, rollout_steps, batch_size scaled down); FPO++ (per-sample
   ratios, ASPO, clamps, zero-sampling) with the same optimiser budget (actor 1e-4 / critic 1e-3, 5 epochs × 4
   minibatches, gradient clip 1) and the same chunk execution;
4. evaluation before (the BC checkpoint) and after (the runner's final evaluation) on the same ``eval_episodes`` env
   seeds (the runner's), executing 4 actions per chunk; learning curves (evaluation return against env steps and
   training wall-clock) from the runs' metrics.

Result: ``task``, ``env_steps``, ``return_before`` / ``return_after`` (DPPO's pretrained and fine-tuned diffusion
policy), ``improvement_per_1k_env_steps`` and ``improvement_per_train_s`` (train_s = rollout + update time, evaluations
excluded), the same under ``fpo``, and ``flow_matches_or_beats_dppo`` (FPO++'s fine-tuned return ≥ DPPO's, with 5
denoising steps against DPPO's 20). Anchor: DPPO's own configs give Hopper 1439 → 3246 over 72M env steps (~100 s
per iteration on a GPU); the budgets here are a few thousandths of that.
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
    """Env steps of each fine-tuning run."""
    num_envs: int
    """Parallel envs of the fine-tuning runs."""
    rollout_steps: int
    """Decisions per env per iteration (each executes 4 env steps)."""
    dppo_batch: int
    """DPPO minibatch in (env step × denoising step) pairs: rollout_steps·num_envs·K′/4 gives 4 minibatches."""
    eval_every: int
    """Evaluate every this many env steps during fine-tuning (the curve)."""
    eval_episodes: int
    """Episodes of each before/after evaluation (same seeds for every policy)."""


FULL = Budget(expert_steps=400_000, demo_episodes=100, bc_grad_steps=20_000, finetune_steps=1_000_000, num_envs=8,
              rollout_steps=250, dppo_batch=5_000, eval_every=100_000, eval_episodes=20)
QUICK = Budget(expert_steps=100_000, demo_episodes=20, bc_grad_steps=2_000, finetune_steps=64_000, num_envs=8,
               rollout_steps=125, dppo_batch=2_500, eval_every=16_000, eval_episodes=20)

HORIZON = ACT_STEPS = 4
FLOW_STEPS = 5


def ensure_bc(kind: str, dataset: Path, grad_steps: int, runs_dir: str, seed: int, device: str,
              progress: bool) -> Path:
    """A BC run of ``kind`` on ``dataset`` (chunk 4, executed 4), reused when its checkpoint matches (and is of this
    checkpoint format: else rebuilt)."""
    from stack import checkpoint
    from stack.config import BCConfig, TrainConfig
    from stack.train import train

    name = f"bench-dppo-bc-{kind}-{Path(dataset).name}-{grad_steps}-s{seed}"
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

    common = dict(algo=algo, init_from=str(bc_dir), seed=seed, device=device, total_env_steps=budget.finetune_steps,
                  env=EnvConfig(task=task, num_envs=budget.num_envs), eval_every=budget.eval_every,
                  eval_episodes=budget.eval_episodes, checkpoint_every=0, runs_dir=runs_dir, progress=progress,
                  name=default_run_name(f"bench-{algo}", task))
    if algo == "dppo":
        return TrainConfig(policy="diffusion", dppo=DPPOConfig(act_steps=ACT_STEPS, rollout_steps=budget.rollout_steps,
                                                               batch_size=budget.dppo_batch), **common)
    fpo = FPOConfig(variant="fpo++", act_steps=ACT_STEPS, rollout_steps=budget.rollout_steps, lr=1e-4, critic_lr=1e-3,
                    update_epochs=5, num_minibatches=4, max_grad_norm=1.0)
    return TrainConfig(policy="flow", fpo=fpo, **common)


def _rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]


def finetune(algo: str, task: str, bc_dir: Path, budget: Budget, runs_dir: str, seed: int, device: str,
             progress: bool) -> dict:
    """Evaluate the BC policy on the seeds the runner evaluates on, fine-tune with the shared runner (its final
    evaluation is the "after"), and read the curve from metrics.csv."""
    from stack.controller import PolicyController
    from stack.evaluate import evaluate
    from stack.runners import eval_seed
    from stack.train import train

    before = evaluate(PolicyController.from_checkpoint(bc_dir, act_steps=ACT_STEPS, seed=eval_seed(seed)), task,
                      budget.eval_episodes, eval_seed(seed))
    t0 = time.perf_counter()
    run_dir = Path(train(finetune_config(algo, task, bc_dir, budget, runs_dir, seed, device, progress)))
    wall = time.perf_counter() - t0
    rows = _rows(run_dir)
    train_s, curve = 0.0, [{"env_steps": 0, "train_s": 0.0, "eval_return": before["return_mean"]}]
    for r in rows:
        train_s += r.get("rollout_s", 0.0) + r.get("update_s", 0.0)
        if "eval_return" in r:
            curve.append({"env_steps": int(r["env_steps"]), "train_s": round(train_s, 1),
                          "eval_return": r["eval_return"]})
    # Returns of the training episodes (exploration noise on): many more episodes than an evaluation, so a steadier
    # trend; first and last three iterations.
    train_returns = [r["train_return"] for r in rows if "train_return" in r]
    final = rows[-1]
    env_steps = int(final["env_steps"])
    gain = final["eval_return"] - before["return_mean"]
    return {"return_before": before["return_mean"], "return_before_std": before["return_std"],
            "return_after": final["eval_return"], "return_after_std": final["eval_return_std"], "improvement": gain,
            "env_steps": env_steps, "improvement_per_1k_env_steps": 1000 * gain / env_steps,
            "improvement_per_train_s": gain / train_s if train_s else float("nan"), "train_s": round(train_s, 1),
            "wall_s": round(wall, 1), "steps_per_train_s": env_steps / train_s if train_s else float("nan"),
            "train_return_start": sum(train_returns[:3]) / max(1, len(train_returns[:3])),
            "train_return_end": sum(train_returns[-3:]) / max(1, len(train_returns[-3:])),
            "curve": curve, "run_dir": str(run_dir), "bc_run_dir": str(bc_dir)}


def run(task: str = "hopper", quick: bool = False, device: str = "cpu", runs_dir: str = "runs", seed: int = 1,
        progress: bool = True, fpo: bool = True) -> dict:
    """The benchmark (see the module docstring); returns the dict the CLI prints as JSON."""
    from stack.bench.bc import _expert_steps_done, ensure_demos, ensure_expert

    budget = QUICK if quick else FULL
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
    out = {"task": task, "quick": quick, "device": device, "env_steps": dppo["env_steps"],
           "return_before": dppo["return_before"], "return_after": dppo["return_after"],
           "improvement_per_1k_env_steps": dppo["improvement_per_1k_env_steps"],
           "improvement_per_train_s": dppo["improvement_per_train_s"],
           "dppo": {**dppo, "denoising_steps": 20, "ft_denoising_steps": 10, "bc_s": round(t2 - t1, 1)},
           "budget": dataclasses.asdict(budget), "demos": str(demos), "expert_s": round(t1 - t0, 1)}
    if fpo:
        t3 = time.perf_counter()
        flow_bc = ensure_bc("flow", demos, budget.bc_grad_steps, runs_dir, seed, device, progress)
        t4 = time.perf_counter()
        out["fpo"] = {**finetune("fpo", task, flow_bc, budget, runs_dir, seed, device, progress),
                      "variant": "fpo++", "denoising_steps": FLOW_STEPS, "bc_s": round(t4 - t3, 1)}
        out["flow_matches_or_beats_dppo"] = out["fpo"]["return_after"] >= dppo["return_after"]
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    (Path(dppo["run_dir"]) / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="r2s bench dppo", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-fpo", action="store_true", help="DPPO only")
    args = p.parse_args(argv)
    print(json.dumps(run(args.task, args.quick, args.device, args.runs_dir, args.seed, fpo=not args.no_fpo)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
