"""Seeds as a first-class axis: one config trained once per seed, then aggregated (mean ± standard error).

``r2s train ... --seeds 1 2 3`` (``TrainConfig.seeds``) writes::

    runs/<name>/seed-<s>/        one ordinary run per seed (config.yaml, metrics.csv, checkpoints, …)
    runs/<name>/seeds.csv        per seed: the final eval_return (and eval_success), env steps, wall-clock
    runs/<name>/summary.json     mean, standard error (std / √n, ddof 1) and n of every final figure, per-seed values
    runs/<name>/learning_curve.png   eval_return against the step axis: the mean across seeds ± one standard error

Seeds run in parallel processes when the machine has a core per process to spare (``parallel``), else one after the
other; every seed's run is the same as ``r2s train --seed s`` would give (tested). Every learning claim of r2s is a
mean over ≥ 3 seeds with its standard error: benchmarks' full modes call ``aggregate`` on their runs.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path

from stack.config import TrainConfig
from stack.runs import default_run_name


def mean_se(values: list[float]) -> tuple[float, float]:
    """(mean, standard error of the mean) — SE = sample std (ddof 1) / √n; NaN for fewer than two values."""
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not vals:
        return math.nan, math.nan
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, math.nan
    var = sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)
    return mean, math.sqrt(var / len(vals))


def seed_config(cfg: TrainConfig, group: Path, seed: int) -> TrainConfig:
    """The config of one seed's run inside ``group``."""
    return dataclasses.replace(cfg, seed=int(seed), seeds=(), runs_dir=str(group), name=f"seed-{seed}",
                               resume=None)


def _train_one(cfg: TrainConfig) -> str:
    from stack.runners import runner_for

    return str(runner_for(cfg).learn())


def train_seeds(cfg: TrainConfig, parallel: bool | None = None) -> Path:
    """Train ``cfg`` once per seed of ``cfg.seeds`` into ``runs/<name>/seed-<s>/`` and aggregate; returns the group's
    folder. ``parallel`` (default: when the cores allow one process per seed beside the sim workers): spawn a
    process per seed."""
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ValueError(f"seeds={cfg.seeds}: each seed once")
    group = Path(cfg.runs_dir) / (cfg.name or default_run_name(cfg.algo, cfg.env.task, "seeds"))
    group.mkdir(parents=True, exist_ok=True)
    configs = [seed_config(cfg, group, s) for s in cfg.seeds]
    if parallel is None:
        workers = (cfg.env.num_workers or 1) if cfg.env.backend == "pool" else 0
        parallel = len(configs) > 1 and (os.cpu_count() or 1) >= len(configs) * (1 + workers)
    if parallel:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(len(configs)) as pool:
            runs = [Path(r) for r in pool.map(_train_one, [dataclasses.replace(c, progress=False) for c in configs])]
    else:
        runs = [Path(_train_one(c)) for c in configs]
    aggregate(runs, group)
    return group


def _rows(run: Path) -> list[dict]:
    with open(run / "metrics.csv") as f:
        return [{k: float(v) for k, v in r.items() if v not in (None, "")} for r in csv.DictReader(f)]


def final_figures(run: Path) -> dict:
    """The final eval_return / eval_success of a run (its last evaluated row), its steps and wall-clock."""
    rows = _rows(run)
    step_key = next(iter(rows[0])) if rows else "env_steps"
    evals = [r for r in rows if "eval_return" in r]
    last = evals[-1] if evals else {}
    return {"eval_return": last.get("eval_return"), "eval_success": last.get("eval_success"),
            "steps": rows[-1][step_key] if rows else None, "time_s": rows[-1].get("time_s") if rows else None}


def aggregate(runs: list[Path], out: Path, label: str = "") -> dict:
    """seeds.csv, summary.json and the mean ± SE learning curve of ``runs`` (one per seed) in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    per_seed = []
    for run in runs:
        seed = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text()).get("seed") \
            if (run / "checkpoints" / "latest" / "meta.json").exists() else None
        per_seed.append({"run": str(run), "seed": seed, **final_figures(run)})
    with open(out / "seeds.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(per_seed[0]))
        writer.writeheader()
        writer.writerows(per_seed)
    summary: dict = {"n": len(runs), "seeds": [r["seed"] for r in per_seed], "label": label}
    for key in ("eval_return", "eval_success", "steps", "time_s"):
        vals = [r[key] for r in per_seed if r[key] is not None]
        if vals:
            mean, se = mean_se(vals)
            summary[key] = {"mean": mean, "se": se, "values": vals}
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    try:
        plot_seed_curves(runs, out / "learning_curve.png", label or out.name)
    except Exception as e:  # a plot never loses the figures
        import warnings

        warnings.warn(f"seed curve not written: {e}", stacklevel=2)
    return summary


def seed_curve(runs: list[Path], key: str = "eval_return") -> tuple[list[float], list[float], list[float]]:
    """(steps, mean, SE) of ``key`` at the steps every run logged it."""
    curves = [{r[next(iter(r))]: r[key] for r in _rows(run) if key in r} for run in runs]
    steps = sorted(set.intersection(*(set(c) for c in curves))) if curves else []
    stats = [mean_se([c[s] for c in curves]) for s in steps]
    return steps, [m for m, _ in stats], [se for _, se in stats]


def plot_seed_curves(runs: list[Path], path: Path, title: str, key: str = "eval_return") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for run in runs:
        pts = [(r[next(iter(r))], r[key]) for r in _rows(run) if key in r]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, ys, color="0.7", lw=0.8)
    steps, mean, se = seed_curve(runs, key)
    if steps:
        band = [0.0 if math.isnan(s) else s for s in se]
        ax.plot(steps, mean, marker="o", ms=3, label=f"mean of {len(runs)} seeds")
        ax.fill_between(steps, [m - b for m, b in zip(mean, band)], [m + b for m, b in zip(mean, band)], alpha=0.3,
                        label="± standard error")
    ax.set_xlabel("steps")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["aggregate", "final_figures", "mean_se", "seed_config", "seed_curve", "train_seeds"]
