"""``r2s bench wpo``: SAC with the Wasserstein policy optimisation actor step vs SAC's own, at equal env steps.

``sac.actor_update: wpo`` (``stack.algos.wpo``; Pfau et al., ICML 2025) moves the policy's samples along
∇_a Q − α ∇_a log π, Fisher-preconditioned, instead of SAC's reparameterised step on E[α log π − Q]; critic, replay,
temperature and everything else are SAC's. Both variants of a seed share it (init, env seeds, evaluation goals): the
final figures are paired (``stack.bench.curves``).

``--quick``: reach (delta targets, the ``reach_sac_delta`` preset) at ``QUICK_STEPS``, seeds 1–3; full: reach at the
preset's 60k and Hopper (SAC's defaults, CleanRL's) at ``FULL_STEPS`` — CPU hours on 2 cores.

Measured ``--quick`` (2026-12-03, 20 evaluation goals a point, 974 s wall at load 2–6; 102–316 s a run): final success
SAC 75/80/80 % (78 ± 2 %), SAC-WPO 75/70/70 % (72 ± 2 %), paired −7 ± 3 points; return 5.51 ± 0.12 vs 4.88 ± 0.33,
paired −0.63 ± 0.44. At 30k WPO trails SAC by about two SE on success; the curves are level up to 20k (10–30 % both).
With the earlier 60k runs (2 seeds: SAC 100/100, WPO 100/95 %) it supports "no gain from WPO here", not a loss at
convergence. Full mode not run.
"""

from __future__ import annotations

from stack.bench.curves import main, run_tasks

VARIANTS = {"sac": {}, "sac_wpo": {"sac": {"actor_update": "wpo"}}}
PRESETS: dict[str, str | dict] = {
    "reach": "reach_sac_delta",
    "hopper": {"algo": "sac", "policy": "gaussian", "eval_episodes": 10, "env": {"task": "hopper", "num_envs": 1}},
}
QUICK_STEPS = {"reach": 30_000}
FULL_STEPS = {"reach": 60_000, "hopper": 300_000}


def run(quick: bool = False, seeds: list[int] | None = None, runs_dir: str = "runs",
        steps: dict[str, int] | None = None) -> dict:
    return {"quick": quick, **run_tasks(PRESETS, VARIANTS, "bench-wpo", steps or (QUICK_STEPS if quick else FULL_STEPS),
                                        seeds, runs_dir)}


if __name__ == "__main__":
    main(__doc__, run, FULL_STEPS)
