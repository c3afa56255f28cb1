"""``r2s demo``: the whole loop that exists, on the embedded default (the SO-101 arm reaching in MuJoCo).

Stages so far: train a Gaussian policy with PPO in the worker pool (progress bar) → evaluate it beside the task's
hand-written baseline controller on the same seeds → learning-curve plot and a rollout video in the run directory →
export it to one ONNX file (parity-checked) → run that file through the torch-free robot runtime in MuJoCo.
Each later stage of the stack (export, ROS 2 loop, log, replay) adds itself here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.runs import default_run_name

DEMO_TASK = "reach"


def demo_config(quick: bool, runs_dir: str, name: str | None) -> TrainConfig:
    steps = 16_384 if quick else 204_800
    return TrainConfig(
        algo="ppo",
        policy="gaussian",
        env=EnvConfig(task=DEMO_TASK, num_envs=8),
        # A 100-step goal-reaching task: shorter horizon (γ 0.95), a calmer initial policy (σ ≈ 0.37 of the joint
        # half-range) and fewer, larger minibatches than the locomotion defaults — measured to learn faster here.
        ppo=PPOConfig(rollout_steps=128, hidden=(64, 64), gamma=0.95, log_std_init=-1.0, update_epochs=5,
                      num_minibatches=8),
        total_env_steps=steps,
        eval_every=steps // 4,
        eval_episodes=5 if quick else 20,
        checkpoint_every=steps,
        video=True,
        name=name or default_run_name("demo", DEMO_TASK),
        runs_dir=runs_dir,
    )


def run_demo(quick: bool = False, runs_dir: str = "runs", name: str | None = None) -> dict:
    from stack.evaluate import evaluate_baseline, evaluate_run
    from stack.train import train

    t0 = time.perf_counter()
    cfg = demo_config(quick, runs_dir, name)
    _stage(1, f"train PPO on '{DEMO_TASK}' for {cfg.total_env_steps:,} env steps ({cfg.env.num_envs} envs)")
    run_dir = Path(train(cfg))

    episodes = 10 if quick else 50
    _stage(2, f"evaluate the trained policy and the baseline controller on the same {episodes} seeds")
    policy = evaluate_run(run_dir, episodes=episodes, seed=10_000)
    baseline = evaluate_baseline(DEMO_TASK, episodes=episodes, seed=10_000)
    for who, r in (("policy", policy), ("baseline", baseline)):
        print(f"    {who:<9} success {r['success_rate']:.0%}  return {r['return_mean']:8.2f}"
              f"  steps to success {r.get('success_step_mean', float('nan')):.1f}")

    _stage(3, "export the policy to ONNX (normalisation inside, metadata for the robot, parity check)")
    from stack.export import export_run

    exported = export_run(run_dir)
    print(f"    {exported['path']}: parity max |onnx − torch| = {exported['parity_max_abs_err']:.2e}")
    _stage(4, "run the ONNX file through the torch-free runtime (stack.runtime) in MuJoCo, same seeds")
    onnx_eval = evaluate_onnx(exported["path"], DEMO_TASK, episodes=episodes, seed=10_000)
    print(f"    runtime   success {onnx_eval['success_rate']:.0%}  return {onnx_eval['return_mean']:8.2f}")

    summary = {
        "run_dir": str(run_dir),
        "task": DEMO_TASK,
        "env_steps": cfg.total_env_steps,
        "policy_success_rate": policy["success_rate"],
        "policy_return": policy["return_mean"],
        "baseline_success_rate": baseline["success_rate"],
        "baseline_return": baseline["return_mean"],
        "onnx": exported["path"],
        "onnx_parity_max_abs_err": exported["parity_max_abs_err"],
        "onnx_success_rate": onnx_eval["success_rate"],
        "onnx_return": onnx_eval["return_mean"],
        "learning_curve": str(run_dir / "learning_curve.png"),
        "video": str(run_dir / "rollout.mp4") if (run_dir / "rollout.mp4").exists() else None,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    _stage(5, f"outputs in {run_dir}: learning_curve.png, rollout.mp4, policy.onnx, metrics.csv, checkpoints/")
    return summary


def _stage(i: int, text: str) -> None:
    print(f"[demo {i}] {text}", flush=True)


def evaluate_onnx(path: str, task: str, episodes: int, seed: int) -> dict:
    """Evaluate an exported policy as the robot runs it: one ``OnnxPolicy`` (history, chunk queue) per env."""
    import numpy as np

    from sim.registry import make_task
    from stack.evaluate import run_episodes
    from stack.runtime import OnnxPolicy

    envs = [make_task(task) for _ in range(episodes)]
    runners = [OnnxPolicy.load(path, envs[0].robot, envs[0].obs_layout) for _ in range(episodes)]
    try:
        out = run_episodes(envs, lambda obs, idx: np.stack([runners[i].step(o) for o, i in zip(obs, idx)]), seed)
    finally:
        for env in envs:
            env.close()
    out.pop("frames")
    return out
