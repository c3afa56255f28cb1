"""``r2s bench entropy``: entropy-regularised PPO with SAC's automatic temperature vs plain PPO at equal env steps.

The soft-Q ⇔ policy-gradient equivalence (Schulman, Chen & Abbeel 2017; ``stack.algos.soft_q``,
docs/soft_q_equivalence.md) says soft Q-learning's update is an entropy-regularised policy gradient. This bench puts
that regulariser into PPO the way SAC tunes it and asks whether it helps:

* ``ppo``: the task's PPO preset (``PRESETS``: reach with delta targets, Hopper CleanRL's), no entropy term
  (CleanRL's ``ent_coef = 0``);
* ``ppo_soft``: the same with ``ppo.auto_entropy`` (α from ``ENT_START``, one Adam step per minibatch on
  α·(H − H̄), H̄ = −act_dim as SAC) and ``ppo.entropy_in_returns`` (GAE on r − α·log π_old(a|s)).

Both runs of a seed share the seed (network init, env seeds, evaluation goals): the figures are paired
(``stack.bench.curves``). Per task and variant: the final evaluation return (and success on the arm) as mean ± SE over
seeds, the paired difference, α at the end. ``--quick`` (< 10 min): reach only at ``QUICK_STEPS``; full: reach at its
preset's 307k and Hopper at 1M (``--task hopper --steps 307200`` was run instead). Measured
(docs/soft_q_equivalence.md): reach 307k paired +0.17 ± 0.22 return, same success; Hopper 307k 2339 ± 552 →
2819 ± 238, paired +480 ± 446.
"""

from __future__ import annotations

from stack.bench.curves import main, run_tasks

ENT_START = 0.01
"""α's start (``ppo.ent_coef``): CleanRL's usual entropy coefficient on advantages normalised per minibatch."""
VARIANTS = {"ppo": {}, "ppo_soft": {"ppo": {"auto_entropy": True, "entropy_in_returns": True, "ent_coef": ENT_START}}}
PRESETS = {"reach": "reach_ppo_delta", "hopper": "hopper_ppo"}
QUICK_STEPS = {"reach": 102_400}
FULL_STEPS = {"reach": 307_200, "hopper": 1_000_000}


def run(quick: bool = False, seeds: list[int] | None = None, runs_dir: str = "runs",
        steps: dict[str, int] | None = None) -> dict:
    out = run_tasks(PRESETS, VARIANTS, "bench-entropy", steps or (QUICK_STEPS if quick else FULL_STEPS), seeds,
                    runs_dir)
    return {"quick": quick, "ent_start": ENT_START, "target_entropy": "-act_dim", **out}


if __name__ == "__main__":
    main(__doc__, run, FULL_STEPS)
