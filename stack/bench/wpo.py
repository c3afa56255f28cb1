"""``r2s bench wpo``: SAC with the Wasserstein policy optimisation actor step vs SAC's own, at equal env steps.

``sac.actor_update: wpo`` (``stack.algos.wpo``; Pfau et al., ICML 2025) moves the policy's samples along
∇_a Q − α ∇_a log π, Fisher-preconditioned, instead of SAC's reparameterised step on E[α log π − Q]; critic, replay,
temperature and everything else are SAC's. Both variants of a seed share it (init, env seeds, evaluation goals): the
final figures are paired (``stack.bench.curves``).

``--quick``: reach (delta targets, the ``reach_sac_delta`` preset) at ``QUICK_STEPS``, seeds 1–3; full: reach at the
preset's 60k and Hopper (SAC's defaults, CleanRL's) at ``FULL_STEPS`` — CPU hours on 2 cores.
"""

from __future__ import annotations

import json
import time

from stack.bench.curves import compare_variants

VARIANTS = {"sac": {}, "sac_wpo": {"sac": {"actor_update": "wpo"}}}
PRESETS: dict[str, str | dict] = {
    "reach": "reach_sac_delta",
    "hopper": {"algo": "sac", "policy": "gaussian", "eval_episodes": 10, "env": {"task": "hopper", "num_envs": 1}},
}
QUICK_STEPS = {"reach": 30_000}
FULL_STEPS = {"reach": 60_000, "hopper": 300_000}


def run(quick: bool = False, seeds: list[int] | None = None, runs_dir: str = "runs",
        steps: dict[str, int] | None = None) -> dict:
    import os

    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    seeds = [int(s) for s in (seeds or [1, 2, 3])]
    t0 = time.perf_counter()
    per_task = {task: compare_variants(PRESETS[task], task, n, seeds, VARIANTS, "bench-wpo", runs_dir)
                for task, n in (steps or (QUICK_STEPS if quick else FULL_STEPS)).items()}
    return {"quick": quick, "seeds": seeds, "per_task": per_task, "wall_s": round(time.perf_counter() - t0, 1)}


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--task", default=None, help="one task of the full budget only")
    p.add_argument("--steps", type=int, default=None, help="env steps (with --task)")
    p.add_argument("--runs-dir", default="runs")
    args = p.parse_args()
    chosen = {args.task: args.steps or FULL_STEPS[args.task]} if args.task else None
    print(json.dumps(run(quick=args.quick, seeds=args.seeds, runs_dir=args.runs_dir, steps=chosen)))
