"""Learning curves of config variants at equal env steps on paired seeds — the shared core of ``bench entropy``,
``bench wpo`` and ``bench variance``'s curves.

A variant is a dict of TrainConfig overrides (``{"ppo": {"auto_entropy": True}}``) laid over a base config; every
variant of a seed runs with that seed (network init, env seeds, evaluation goals), so the variants' final figures are
paired and their differences to the first variant are taken seed by seed.
"""

from __future__ import annotations

import csv
import time

CURVE_EVALS = 6
"""Evaluations along each curve (the last at the end)."""


def run_curve(cfg) -> dict:
    """Train ``cfg``; its evaluation curve (env steps, eval return, eval success where the task reports it, the last
    ``alpha`` logged if any), wall time and run directory."""
    from stack.train import train

    t0 = time.perf_counter()
    run_dir = train(cfg)
    with open(run_dir / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    evals = [r for r in rows if "eval_return" in r]
    out = {"env_steps": [int(r["env_steps"]) for r in evals], "eval_return": [r["eval_return"] for r in evals],
           "wall_s": round(time.perf_counter() - t0, 1), "run_dir": str(run_dir)}
    if evals and "eval_success" in evals[0]:
        out["eval_success"] = [r["eval_success"] for r in evals]
    alphas = [r["alpha"] for r in rows if "alpha" in r]
    if alphas:
        out["final_alpha"] = alphas[-1]
    return out


def preset_config(preset: str | dict, steps: int, seed: int, runs_dir: str, name: str, overrides: dict,
                  eval_episodes: int = 20):
    """The preset's TrainConfig (a preset name, or a config dict) at ``steps`` env steps and ``seed``, ``overrides``
    laid over it, evaluated ``CURVE_EVALS`` times."""
    from stack.config import TrainConfig, from_dict, load_preset

    base = from_dict(TrainConfig, load_preset(preset) if isinstance(preset, str) else preset)
    run = {"total_env_steps": int(steps), "seed": int(seed), "eval_every": max(steps // CURVE_EVALS, 1),
           "eval_episodes": eval_episodes, "checkpoint_every": int(steps), "name": name, "runs_dir": runs_dir,
           "device": "cpu", "torch_threads": 1, "tensorboard": False}
    return from_dict(TrainConfig, {**_merge(run, overrides)}, base)


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def compare_variants(preset: str | dict, task: str, steps: int, seeds: list[int], variants: dict[str, dict], tag: str,
                     runs_dir: str = "runs") -> dict:
    """Every variant on every seed; per variant the final eval return (and success) as mean ± SE over seeds, and each
    later variant's paired difference to the first (``<key>_<variant>_minus_<first>``)."""
    from stack.runs import default_run_name
    from stack.seeds import mean_se

    out: dict = {"task": task, "preset": preset if isinstance(preset, str) else "inline", "env_steps": steps,
                 "seeds": list(seeds)}
    for name, overrides in variants.items():
        runs = [run_curve(preset_config(preset, steps, s, runs_dir,
                                        default_run_name(f"{tag}-{name}", task, f"s{s}"), overrides)) for s in seeds]
        summary: dict = {"overrides": overrides, "per_seed": runs}
        for key in ("eval_return", "eval_success"):
            if all(r.get(key) for r in runs):
                summary[f"final_{key}"], summary[f"final_{key}_se"] = mean_se([r[key][-1] for r in runs])
        out[name] = summary
    first, *rest = variants
    for name in rest:
        for key in ("eval_return", "eval_success"):
            pairs = list(zip(out[first]["per_seed"], out[name]["per_seed"]))
            if all(a.get(key) and b.get(key) for a, b in pairs):
                diff, se = mean_se([b[key][-1] - a[key][-1] for a, b in pairs])
                out[f"{key}_{name}_minus_{first}"], out[f"{key}_{name}_minus_{first}_se"] = diff, se
    return out


def run_tasks(presets: dict, variants: dict[str, dict], tag: str, steps: dict[str, int], seeds: list[int] | None,
              runs_dir: str = "runs") -> dict:
    """``compare_variants`` per task of ``steps`` (task → env steps; ``presets``: task → preset), one torch thread,
    seeds 1 2 3 by default: a bench's whole run (``bench entropy``, ``bench wpo``)."""
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    seeds = [int(s) for s in (seeds or [1, 2, 3])]
    t0 = time.perf_counter()
    per_task = {task: compare_variants(presets[task], task, n, seeds, variants, tag, runs_dir)
                for task, n in steps.items()}
    return {"seeds": seeds, "per_task": per_task, "wall_s": round(time.perf_counter() - t0, 1)}


def main(doc: str, run, full_steps: dict[str, int]) -> None:
    """A bench module's ``python -m`` entry: --quick, --seeds, one --task (and its --steps) of the full budget."""
    import argparse
    import json

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--task", default=None, choices=sorted(full_steps), help="one task of the full budget only")
    p.add_argument("--steps", type=int, default=None, help="env steps (with --task)")
    p.add_argument("--runs-dir", default="runs")
    args = p.parse_args()
    chosen = {args.task: args.steps or full_steps[args.task]} if args.task else None
    print(json.dumps(run(quick=args.quick, seeds=args.seeds, runs_dir=args.runs_dir, steps=chosen)))


__all__ = ["CURVE_EVALS", "compare_variants", "main", "preset_config", "run_curve", "run_tasks"]
