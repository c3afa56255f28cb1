"""``r2s bench bc``: how much of a demonstrator's return behaviour cloning recovers, per policy family.

Pipeline (DPPO's pretraining setting, with our own "medium" data since D4RL cannot be downloaded here):

1. demonstrator: a partially trained PPO expert on the task (``stack.train``, the task's ``<task>_ppo`` preset with a
   reduced budget), cached in ``runs/bench-expert-<task>`` (``-quick`` for the quick budget) so reruns reuse it;
2. demos: ``episodes`` deterministic episodes of the expert (``stack.demos.record_demos``, seeds 0 …), cached beside it;
3. BC: ``stack.train`` with ``algo="bc"`` (the offline runner) for the policy family (DPPO's pretraining: chunks of
   ``horizon`` = 4 actions, ε-MSE / flow matching, AdamW 1e-3 → 1e-4, batch 128, EMA 0.995), its final evaluation
   on ``eval_episodes`` held-out seeds;
4. ``bc_ratio = bc_return / demo_return``. Target of the full run: ≥ 0.9 for diffusion and flow.

Execution: ``act_steps`` = 1 by default (predict 4, execute the first, re-plan: receding horizon). The demonstrator
is a per-step reactive Gaussian policy, and executing whole chunks open loop (DPPO's act_steps = 4) costs about a
tenth of the return on Hopper (measured: diffusion 0.82 of the demonstrator with 4, 0.97 with 1, same weights), so
the result also reports ``bc_return_open_loop`` — the same checkpoint executing all ``horizon`` actions of a chunk.

``--quick`` shrinks every budget to a few minutes on a laptop CPU and accepts a lower ratio.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Budget:
    expert_steps: int
    """PPO env steps of the demonstrator."""
    demo_episodes: int
    """Demonstration episodes recorded."""
    grad_steps: dict
    """BC gradient steps per policy family."""
    eval_episodes: int
    """Evaluation episodes of the BC policy (and of the expert, on the same seeds)."""


FULL = Budget(expert_steps=400_000, demo_episodes=100,
              grad_steps={"gaussian": 10_000, "diffusion": 20_000, "flow": 20_000}, eval_episodes=10)
QUICK = Budget(expert_steps=100_000, demo_episodes=20,
               grad_steps={"gaussian": 2_000, "diffusion": 2_000, "flow": 2_000}, eval_episodes=5)


def _expert_steps_done(path: Path) -> int:
    """Env steps of the cached expert's checkpoint; −1 when there is none of this checkpoint format (rebuilt)."""
    from stack import checkpoint

    return int(checkpoint.read_meta(path)["env_steps"]) if checkpoint.is_current(path) else -1


def ensure_expert(task: str, steps: int, runs_dir: str | Path = "runs", name: str | None = None, seed: int = 1,
                  progress: bool = True) -> Path:
    """A PPO run on ``task`` trained for at least ``steps`` env steps: reused if cached, resumed if cut short,
    trained otherwise (from the ``<task>_ppo`` preset where one exists)."""
    from stack.config import EnvConfig, TrainConfig, from_dict, list_presets, load_preset
    from stack.train import train

    path = Path(runs_dir) / (name or f"bench-expert-{task}")
    done = _expert_steps_done(path)
    if done >= steps:
        return path
    if done < 0 and path.exists():  # died before its first checkpoint, or another checkpoint format: rebuild
        import shutil

        shutil.rmtree(path)
    preset = f"{task}_ppo"
    base = from_dict(TrainConfig, load_preset(preset)) if preset in list_presets() else \
        TrainConfig(env=EnvConfig(task=task))
    cfg = dataclasses.replace(base, algo="ppo", total_env_steps=steps, seed=seed, name=path.name,
                              runs_dir=str(path.parent), eval_every=max(steps // 10, 1),
                              checkpoint_every=max(steps // 5, 1), progress=progress,
                              resume=str(path) if done >= 0 else None)
    return Path(train(cfg))


def ensure_demos(task: str, expert: Path, episodes: int, out: Path, seed: int = 0, progress: bool = True) -> Path:
    """Demonstrations of ``expert``, reused when ``out`` already holds the same recording."""
    from stack.data import EpisodeDataset
    from stack.demos import record_demos

    if (out / "meta" / "info.json").exists():
        try:
            info = EpisodeDataset(out).info
            if (info.get("expert"), info["total_episodes"], info.get("seed"), info["task"]) == \
                    (str(expert), episodes, seed, task) and info.get("expert_steps") == _expert_steps_done(expert):
                return out
        except ValueError:
            pass
        import shutil

        shutil.rmtree(out)
    return record_demos(task, expert, episodes, seed, out, quality="medium", progress=progress,
                        extra_info={"expert_steps": _expert_steps_done(expert)})


def run(task: str = "hopper", policy: str = "diffusion", quick: bool = False, runs_dir: str = "runs", seed: int = 1,
        progress: bool = True, grad_steps: int | None = None, horizon: int = 4, act_steps: int = 1) -> dict:
    """The benchmark; returns demo_return, bc_return, bc_ratio and the budgets, timings and paths behind them."""
    from stack.config import BCConfig, TrainConfig
    from stack.controller import PolicyController
    from stack.data import EpisodeDataset
    from stack.evaluate import evaluate
    from stack.runners import eval_seed
    from stack.runs import default_run_name
    from stack.train import train

    budget = QUICK if quick else FULL
    t0 = time.perf_counter()
    expert_name = f"bench-expert-{task}"
    if quick and _expert_steps_done(Path(runs_dir) / expert_name) < budget.expert_steps:
        expert_name += "-quick"  # the full expert is reused by --quick when it exists
    expert = ensure_expert(task, budget.expert_steps, runs_dir, expert_name, seed=seed, progress=progress)
    t1 = time.perf_counter()
    demos_dir = Path(runs_dir) / f"{expert_name}-demos{budget.demo_episodes}"
    demos = ensure_demos(task, expert, budget.demo_episodes, demos_dir, progress=progress)
    ds = EpisodeDataset(demos)
    t2 = time.perf_counter()
    steps = grad_steps or budget.grad_steps[policy]
    cfg = TrainConfig(algo="bc", policy=policy, dataset=str(demos),
                      bc=BCConfig(grad_steps=steps, horizon=horizon, act_steps=act_steps),
                      eval_episodes=budget.eval_episodes, eval_every=0 if quick else max(steps // 5, 1), seed=seed,
                      runs_dir=runs_dir, name=default_run_name("bench-bc", policy, task), progress=progress)
    run_dir = train(cfg)
    seed0 = eval_seed(seed)
    t3 = time.perf_counter()
    final = [r for r in _rows(run_dir) if "eval_return" in r][-1]
    open_loop = None
    if policy != "gaussian" and act_steps < horizon:
        open_loop = evaluate(PolicyController.from_checkpoint(run_dir, act_steps=horizon), task,
                             budget.eval_episodes, seed0)["return_mean"]
    # The demonstrator on the BC evaluation's seeds: the same start states, so the two returns compare directly.
    expert_eval = evaluate(PolicyController.from_checkpoint(expert), task, budget.eval_episodes, seed=seed0)
    demo_return = ds.mean_return()
    out = {
        "task": task,
        "policy": policy,
        "quick": quick,
        "demo_return": demo_return,
        "bc_return": final["eval_return"],
        "bc_ratio": final["eval_return"] / demo_return if demo_return else float("nan"),
        "bc_return_std": final.get("eval_return_std"),
        "bc_return_open_loop": open_loop,
        "horizon": 1 if policy == "gaussian" else horizon,
        "act_steps": 1 if policy == "gaussian" else act_steps,
        "expert_eval_return": expert_eval["return_mean"],
        "demo_episodes": ds.num_episodes,
        "demo_frames": len(ds),
        "demo_return_std": float(np.std([m["return"] for m in ds.episodes])),
        "expert_env_steps": _expert_steps_done(expert),
        "bc_grad_steps": steps,
        "bc_final_loss": final.get("bc_loss"),
        "eval_episodes": budget.eval_episodes,
        "expert_s": round(t1 - t0, 1),
        "demos_s": round(t2 - t1, 1),
        "bc_s": round(t3 - t2, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
        "expert_dir": str(expert),
        "dataset": str(demos),
        "bc_run_dir": str(run_dir),
    }
    (Path(run_dir) / "bench.json").write_text(json.dumps(out, indent=2) + "\n")
    return out


def _rows(run_dir: str | Path) -> list[dict]:
    import csv

    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="r2s bench bc", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper")
    p.add_argument("--policy", default="diffusion", choices=["gaussian", "diffusion", "flow"])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--grad-steps", type=int, default=None)
    p.add_argument("--horizon", type=int, default=4)
    p.add_argument("--act-steps", type=int, default=1)
    args = p.parse_args(argv)
    print(json.dumps(run(args.task, args.policy, args.quick, args.runs_dir, args.seed, grad_steps=args.grad_steps,
                         horizon=args.horizon, act_steps=args.act_steps)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
