"""``r2s bench arm``: which methods solve the SO-101 arm tasks, and how well.

Methods (every one on the tasks' delta joint targets, ``sim.tasks.arm``; the exported policies send absolute ones):

* ``baseline``: the task's hand-written IK controller (``robots.baselines``), no learning;
* ``ppo``: Gaussian PPO from scratch, the demo's settings (``stack.demo``);
* ``fpo++``: a flow policy from scratch with FPO++ (the reach FPO preset's schedule, variant fpo++);
* ``bc``: a diffusion policy cloned from DART-style demos of the baseline (noisy execution, clean proposal);
* ``dppo``: that BC policy fine-tuned with DPPO;
* ``bc_gauss``: a Gaussian MLP cloned from the same kind of DART demos (one action per step, no chunk);
* ``bc_flow``: a flow policy (one action a decision, 10 Euler steps) cloned from the same kind of DART demos;
* ``fpo++_bc``: that flow policy fine-tuned with FPO++ (actor lr ``FPO_BC_LR``, critic 3e-4, clip 0.03, two
  critic-only iterations first, annealed rates). Measured on reach (300k env steps, 50 episodes, seeds 1/2/3): BC
  100/98/98 % → fpo++_bc 96/98/98 % (98.7 ± 0.7 → 97.3 ± 0.7 %; 6–7 min a seed on the loaded box): it keeps a
  saturated start rather than improving it; from a weak start (48 %, one seed) it ended at 40 %; at lr 3e-5, clip
  0.05 and no warm-up it collapsed to 0 % after 100k;
* ``ppo_bc``: that Gaussian policy fine-tuned with PPO, DPPO's way (``stack.algos.ppo``): ``PPO_BC_WARMUP_ITR``
  critic-only iterations fit the fresh critic to the BC policy's returns before the actor moves; actor lr
  ``PPO_BC_LR``, critic 10×; σ reset to e^−2.3 ≈ 0.1; γ 0.99 and ``PPO_BC_TASK_KWARGS`` (pre-push shaping); the BC's
  observation statistics frozen — the push method. Measured on push (1M env steps, 50 episodes): PPO from scratch 8 %
  (seed 1; 12 % with ``shaping="pre_push"`` and a success bonus of 1); BC Gaussian 90 % → ppo_bc 100 % on seed 1,
  90 % → 98 % on seed 2, 88 % → 100 % on seed 3 (three seeds: BC 89.3 ± 0.7 % → ppo_bc 99.3 ± 0.7 %; training
  success 0.93 → 0.80 at 200k, then 0.98 (seed 1); 1,000,448 env steps in 28, 18 and 25 min on the loaded box).
  What did not work (seed 1, evaluations of 10
  episodes during training): without the warm-up PPO fell below its BC start (66 % at lr 1e-4, 34 % at 3e-5); with the
  warm-up alone (γ 0.95, the default shaping, σ 0.22, lr 1e-4) too (training success 0.77 → 0.42, evaluations 90/70/40
  % at 167k/334k/501k, stopped at 522k); with σ 0.1 and lr 3e-5 as well (training success 0.92 → 0.46 by 320k,
  evaluation 60 % at 167k, stopped). The run that held changed γ 0.95 → 0.99 and the shaping together (not separated):
  the drift was not the cold critic alone, likely the short-horizon return of the default shaping (the fingertip
  pulled onto the puck from any side).
  ``--quick`` measured (seed 1, every method, 2026-12-03, the box at load 4–6 from other jobs): 1411 s wall;
  success on reach baseline 100, ppo 98, fpo++ 2, bc 16 → dppo 60, bc_gauss 96 → ppo_bc 98, bc_flow 98 → fpo++_bc
  100 %; on push bc_gauss 58 → ppo_bc 62 % (100 demos, 500k). Wall per run: ppo 166 s, fpo++ 146, bc 49, dppo 285,
  ppo_bc 144 (reach) / 388 (push), fpo++_bc 166, the rest ≤ 43. ``QUICK_LEAVES_OUT`` then dropped bc_flow and
  fpo++_bc (178 s): ~1233 s at that load; at the quiet box's PPO rate (65 s for those 300k, 2.6× faster) ≈ 8 min,
  an estimate, not re-measured.

Success is counted as the tasks define it (at the episode's end; reach 2 cm, push 3 cm in the table plane), over
``EVAL_EPISODES`` episodes on the evaluation seeds ``10_000 …`` — the same seeds for every method. Budgets: the
issue's (RL: 300k env steps on reach, 1M on push; the demos and BC the fine-tunes start from are extra). ``--quick``
runs one seed of every method on reach (FPO++ and DPPO on half the budget) and ``PUSH_METHOD`` (``ppo_bc``, with the
BC it starts from) on push (500k); the full mode 3 seeds of everything on both (hours on 2 cores).

Result: ``per_method`` {method: {task: success}}; ``method``: ``PUSH_METHOD`` (quick) or the best on push (full), and
``reach_success`` / ``push_success`` are that one method's; ``best_reach`` the best on reach; wall-clock per run
under ``wall_s``. With several seeds the figures are means across seeds with
their standard errors (``…_se``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

METHODS = ("baseline", "ppo", "fpo++", "bc", "dppo", "bc_gauss", "ppo_bc", "bc_flow", "fpo++_bc")
QUICK_LEAVES_OUT = ("bc_flow", "fpo++_bc")
"""Methods ``--quick`` does not run (the issue's list — PPO, FPO++, DPPO from BC, BC, the baseline — and the push
method with its BC stay): they cost ~3 of its minutes, and their full-mode figures are in this docstring."""
PUSH_METHOD = "ppo_bc"
"""The method ``--quick`` takes to push (the only RL method measured ≥ 60 % there within 1M env steps)."""
PPO_BC_LR = 3e-5
PPO_BC_TASK_KWARGS = {"push": {"shaping": "pre_push"}}
"""ppo_bc's reward on push: the fingertip pulled to the pre-push point (``sim.tasks.push``); success is unchanged."""
FPO_BC_LR = 1e-5
"""fpo++_bc's actor learning rate (its critic's: 30×)."""
PPO_BC_WARMUP_ITR = 10
"""Critic-only iterations (1,024 env steps each) before ppo_bc's actor moves."""
TASK_KWARGS = {"action_mode": "delta"}
EVAL_EPISODES = 50
EVAL_SEED = 10_000


@dataclass(frozen=True)
class Budget:
    rl_steps: dict
    """Env steps of each RL run (PPO, FPO++, the DPPO fine-tune) per task."""
    demo_episodes: int
    bc_grad_steps: int
    method_steps: dict = field(default_factory=dict)
    """Overrides of ``rl_steps`` for one method: {method: {task: steps}}."""

    def steps(self, method: str, task: str) -> int:
        return int(self.method_steps.get(method, {}).get(task, self.rl_steps[task]))


FULL = Budget(rl_steps={"reach": 300_000, "push": 1_000_000}, demo_episodes=200, bc_grad_steps=4_000)
# < 10 min on 2 quiet cores: PPO keeps the 300k on reach (~65 s); the slower generative policies get half of it
# (FPO++ ~2.5 min and DPPO ~5 min per 300k measured on the loaded box) and push 500k.
QUICK = Budget(rl_steps={"reach": 300_000, "push": 500_000}, demo_episodes=100, bc_grad_steps=2_000,
               method_steps={"fpo++": {"reach": 150_000}, "dppo": {"reach": 150_000}, "fpo++_bc": {"reach": 150_000}})


def train_config(method: str, task: str, steps: int, seed: int, runs_dir: str, device: str,
                 init_from: str | None = None, dataset: str | None = None, budget: Budget = FULL):
    """The TrainConfig of one learning method on one task."""
    from stack.config import BCConfig, DPPOConfig, EnvConfig, FPOConfig, PPOConfig, TrainConfig

    env = EnvConfig(task=task, num_envs=8, task_kwargs=dict(TASK_KWARGS))
    common = dict(env=env, seed=seed, device=device, runs_dir=runs_dir, eval_every=max(steps // 6, 50_000),
                  eval_episodes=10, checkpoint_every=steps, total_env_steps=steps, tensorboard=False,
                  name=f"bench-arm-{method.replace('+', 'p')}-{task}-s{seed}")
    if method == "ppo":
        ppo = PPOConfig(rollout_steps=128, hidden=(64, 64), gamma=0.95, log_std_init=-1.0, update_epochs=5,
                        num_minibatches=8)
        return TrainConfig(algo="ppo", policy="gaussian", ppo=ppo, **common)
    if method == "fpo++":
        # the reach FPO preset's schedule (few large minibatches, a fresh flow's std ≈ PPO's 0.37), FPO++'s variant
        fpo = FPOConfig(variant="fpo++", rollout_steps=128, lr=3e-4, gamma=0.95, update_epochs=5, num_minibatches=2,
                        clip_coef=0.05, max_grad_norm=1.0, n_mc=8, noise_scale=0.37, critic_hidden=(64, 64),
                        critic_activation="tanh", anneal_lr=True)
        return TrainConfig(algo="fpo", policy="flow", fpo=fpo, **common)
    if method == "bc":
        bc = BCConfig(horizon=4, act_steps=4, grad_steps=budget.bc_grad_steps, action_key="action.proposal",
                      policy_kwargs={"hidden": [256, 256, 256], "denoising_steps": 20, "time_emb_dim": 16})
        return bc_config("diffusion", bc, dataset, common)
    if method == "bc_gauss":
        # lr 1e-2 (the reach_bc preset); σ = e^−1.5 ≈ 0.22 of the delta range: PPO's exploration when it fine-tunes
        bc = BCConfig(grad_steps=3 * budget.bc_grad_steps // 2, lr=1e-2, action_key="action.proposal",
                      policy_kwargs={"hidden": [256, 256], "log_std_init": -1.5})
        return bc_config("gaussian", bc, dataset, common)
    if method == "bc_flow":
        # one action a decision: FPO++ fine-tunes a horizon-1 flow (its ratio per executed action)
        bc = BCConfig(horizon=1, act_steps=1, grad_steps=budget.bc_grad_steps, action_key="action.proposal",
                      policy_kwargs={"hidden": [256, 256, 256], "euler_steps": 10, "time_emb_dim": 16})
        return bc_config("flow", bc, dataset, common)
    if method == "fpo++_bc":
        # small steps on a good start: lr 1e-5 and clip 0.03 (at 3e-5 / 0.05 it collapsed), a warm critic first
        fpo = FPOConfig(variant="fpo++", rollout_steps=128, lr=FPO_BC_LR, critic_lr=30 * FPO_BC_LR, gamma=0.95,
                        update_epochs=5, num_minibatches=2, clip_coef=0.03, max_grad_norm=1.0, n_mc=8,
                        critic_hidden=(64, 64), critic_activation="tanh", anneal_lr=True, n_critic_warmup_itr=2,
                        critic_warmup_epochs=20)
        return TrainConfig(algo="fpo", policy="flow", fpo=fpo, init_from=init_from, **common)
    if method == "ppo_bc":
        # the critic is fresh: PPO_BC_WARMUP_ITR critic-only iterations (20 epochs each) fit it to the BC policy's
        # returns before the actor's first step, at 10× the actor's rate; σ e^−2.3 ≈ 0.1 (the BC's 0.22 costs ~15
        # points of training success); γ 0.99 and the pre-push shaping, whose discounted return agrees with the
        # BC's (the baseline's) way of pushing
        ppo = PPOConfig(rollout_steps=128, gamma=0.99, update_epochs=5, num_minibatches=8, lr=PPO_BC_LR,
                        critic_lr=10 * PPO_BC_LR, n_critic_warmup_itr=PPO_BC_WARMUP_ITR, critic_warmup_epochs=20,
                        finetune_log_std=-2.3)
        env = EnvConfig(task=task, num_envs=8, task_kwargs={**TASK_KWARGS, **PPO_BC_TASK_KWARGS.get(task, {})})
        return TrainConfig(algo="ppo", policy="gaussian", ppo=ppo, init_from=init_from, **{**common, "env": env})
    if method == "dppo":
        # 64 decisions × 8 envs × K′ 10 = 5,120 (x^k, x^{k−1}) pairs an iteration: 4 minibatches of 1,280
        dppo = DPPOConfig(act_steps=4, rollout_steps=64, gamma=0.95, batch_size=1280, n_critic_warmup_itr=1,
                          critic_warmup_epochs=20)
        return TrainConfig(algo="dppo", policy="diffusion", init_from=init_from, dppo=dppo, **common)
    raise ValueError(f"method: expected one of {METHODS}, got {method!r}")


def bc_config(policy: str, bc, dataset: str | None, common: dict):
    """A BC run on ``dataset``: no env steps, evaluated and checkpointed once, at its last gradient step."""
    from stack.config import TrainConfig

    return TrainConfig(algo="bc", policy=policy, dataset=dataset, bc=bc,
                       **{**common, "eval_every": bc.grad_steps, "checkpoint_every": bc.grad_steps,
                          "total_env_steps": 0})


def success(run_dir: Path) -> float:
    from stack.evaluate import evaluate_run

    return float(evaluate_run(run_dir, episodes=EVAL_EPISODES, seed=EVAL_SEED)["success_rate"])


def baseline_success(task: str) -> float:
    from stack.evaluate import evaluate_baseline

    return float(evaluate_baseline(task, episodes=EVAL_EPISODES, seed=EVAL_SEED,
                                   task_kwargs=dict(TASK_KWARGS))["success_rate"])


def run_method(method: str, task: str, seed: int, runs_dir: str, device: str, budget: Budget,
               cache: dict) -> tuple[float, float]:
    """(success, wall seconds) of one method on one task; ``cache`` keeps the BC run DPPO starts from."""
    from stack.train import train

    t0 = time.perf_counter()
    if method == "baseline":
        return baseline_success(task), time.perf_counter() - t0
    steps = budget.steps(method, task)
    bc_method = {"dppo": "bc", "ppo_bc": "bc_gauss", "fpo++_bc": "bc_flow"}.get(method, method)
    if bc_method in ("bc", "bc_gauss", "bc_flow"):
        key = (bc_method, task, seed)
        if key not in cache:
            cache[key] = _bc_run(bc_method, task, seed, runs_dir, device, budget)
        if method == bc_method:
            return success(cache[key]), time.perf_counter() - t0
        cfg = train_config(method, task, steps, seed, runs_dir, device, init_from=str(cache[key]), budget=budget)
    else:
        cfg = train_config(method, task, steps, seed, runs_dir, device, budget=budget)
    run_dir = Path(train(cfg))
    return success(run_dir), time.perf_counter() - t0


def _bc_run(method: str, task: str, seed: int, runs_dir: str, device: str, budget: Budget) -> Path:
    from stack.demos import record_demos
    from stack.train import train

    data = Path(runs_dir) / f"bench-arm-demos-{task}-{budget.demo_episodes}-s{seed}"
    if not (data / "meta" / "info.json").exists():
        record_demos(task, "baseline", budget.demo_episodes, seed=100_000 * seed, out_dir=data, quality="expert",
                     noise_std=0.3, task_kwargs=dict(TASK_KWARGS))
    return Path(train(train_config(method, task, 0, seed, runs_dir, device, dataset=str(data), budget=budget)))


def run_seed(seed: int, quick: bool, runs_dir: str = "runs", device: str = "cpu",
             methods: tuple[str, ...] = METHODS, tasks: tuple[str, ...] = ("reach", "push")) -> dict:
    """One seed: every method on reach (quick: but ``QUICK_LEAVES_OUT``); on push every method (full) or only
    ``PUSH_METHOD`` (quick; its BC too)."""
    budget = QUICK if quick else FULL
    if quick:
        methods = tuple(m for m in methods if m not in QUICK_LEAVES_OUT)
    per_method: dict = {m: {} for m in methods}
    wall: dict = {m: {} for m in methods}
    cache: dict = {}
    for method in methods:
        if "reach" in tasks:
            per_method[method]["reach"], wall[method]["reach"] = run_method(method, "reach", seed, runs_dir, device,
                                                                           budget, cache)
            print(json.dumps({"method": method, "task": "reach", "seed": seed,
                              "success": per_method[method]["reach"], "wall_s": round(wall[method]["reach"], 1)}),
                  flush=True)
    learned = [m for m in methods if m != "baseline" and "reach" in per_method[m]]
    best_reach = max(learned, key=lambda m: per_method[m]["reach"]) if learned else methods[0]
    best = PUSH_METHOD if quick and PUSH_METHOD in methods else best_reach
    on_push = methods if not quick else tuple(m for m in methods if m in (best, _bc_of(best)))
    for method in on_push:
        if "push" in tasks:
            per_method[method]["push"], wall[method]["push"] = run_method(method, "push", seed, runs_dir, device,
                                                                         budget, cache)
            print(json.dumps({"method": method, "task": "push", "seed": seed,
                              "success": per_method[method]["push"], "wall_s": round(wall[method]["push"], 1)}),
                  flush=True)
    if not quick:
        best = _best_on_push(per_method, learned) or best_reach
    return {"method": best, "best_reach": best_reach, "reach_success": per_method[best].get("reach"),
            "push_success": per_method[best].get("push"), "per_method": per_method,
            "wall_s": {m: {t: round(s, 1) for t, s in w.items()} for m, w in wall.items()},
            "budget": {"rl_steps": budget.rl_steps, "method_steps": budget.method_steps,
                       "demo_episodes": budget.demo_episodes, "bc_grad_steps": budget.bc_grad_steps},
            "eval_episodes": EVAL_EPISODES}


def _best_on_push(per_method: dict, learned: list) -> str | None:
    """The learned method best on push (ties: on reach); None where none ran on push."""
    on_push = [m for m in learned if per_method[m].get("push") is not None]
    return max(on_push, key=lambda m: (per_method[m]["push"], per_method[m]["reach"])) if on_push else None


def _bc_of(method: str) -> str | None:
    """The BC method a fine-tuning method starts from (its success comes with the fine-tune's run)."""
    return {"dppo": "bc", "ppo_bc": "bc_gauss", "fpo++_bc": "bc_flow"}.get(method)


def run(quick: bool = False, seeds=None, device: str = "cpu", runs_dir: str = "runs") -> dict:
    """The CLI's entry: one seed (quick default) or several, aggregated per method and task (mean ± SE)."""
    from stack.seeds import mean_se

    seeds = list(seeds or ([1] if quick else [1, 2, 3]))
    t0 = time.perf_counter()
    results = [run_seed(s, quick, runs_dir, device) for s in seeds]
    if len(results) == 1:
        out = results[0]
    else:
        per_method: dict = {}
        for method in results[0]["per_method"]:
            for task in results[0]["per_method"][method]:
                values = [r["per_method"][method].get(task) for r in results]
                if all(v is not None for v in values):
                    mean, se = mean_se(values)
                    per_method.setdefault(method, {})[task] = mean
                    per_method[method][f"{task}_se"] = se
        learned = [m for m in per_method if m != "baseline" and "reach" in per_method[m]]
        best = _best_on_push(per_method, learned) or max(learned, key=lambda m: per_method[m]["reach"])
        out = {"method": best, "reach_success": per_method[best]["reach"],
               "push_success": per_method[best].get("push"), "per_method": per_method, "per_seed": results}
    return {**out, "seeds": seeds, "quick": bool(quick), "task_kwargs": TASK_KWARGS,
            "total_wall_s": round(time.perf_counter() - t0, 1)}


__all__ = ["FULL", "METHODS", "QUICK", "run", "run_seed", "train_config"]
