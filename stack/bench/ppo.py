"""``r2s bench ppo``: PPO on a MuJoCo task — final return, wall-clock and env-steps/s.

``run(task, steps, seed, cleanrl=None)`` trains with the task's ``<task>_ppo`` preset (CleanRL's hyperparameters;
for hopper 8 envs in the worker pool × 256 rollout steps), evaluating every 100k env steps and at the end, and
returns a dict (the CLI prints it as JSON):

* ``final_return``: mean of 5 deterministic evaluation episodes at the end (``final_return_std`` beside it);
* ``return_at_300k``: the periodic evaluation at the first iteration past 300k env steps (when ``steps`` ≥ 300k);
* ``env_steps``, ``wall_s`` (the whole ``train`` call: start-up, evaluations and checkpoints included),
  ``steps_per_s`` = env_steps / wall_s;
* where one iteration's time goes (means over iterations, seconds): ``iter_rollout_s`` (of which ``iter_env_s`` inside
  the pool's ``step``, the rest inference/normalisation/storage), ``iter_update_s`` (GAE + epochs of minibatches),
  and ``train_steps_per_s`` (rollout + update only).

``cleanrl``: path to an unmodified CleanRL ``ppo_continuous_action.py`` to run right after on the same machine,
single-threaded, for a side-by-side figure: ``cleanrl_wall_s``, ``cleanrl_steps_per_s`` and its training-episode
returns (mean of the last 20 episodes, and around 300k steps) parsed from its stdout; ours beside them as
``train_return_final`` / ``train_return_at_300k`` (training episodes too, same definition). Its code is run, never
copied: a temporary copy gets the two gymnasium-1.x adaptations (``TransformObservation`` now takes the observation
space; episode statistics arrive as ``infos["episode"]`` with an ``_episode`` mask instead of ``final_info``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

GYM_IDS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}


def bench_config(task: str, steps: int, seed: int, runs_dir: str = "runs"):
    from stack.config import PRESET_DIR, EnvConfig, TrainConfig, from_dict, load_preset
    from stack.runs import default_run_name

    preset = f"{task}_ppo"
    base = from_dict(TrainConfig, load_preset(preset)) if (PRESET_DIR / f"{preset}.yaml").exists() else \
        TrainConfig(env=EnvConfig(task=task))
    return from_dict(TrainConfig, {
        "total_env_steps": int(steps), "seed": int(seed), "eval_every": 100_000, "eval_episodes": 5,
        "checkpoint_every": 0, "name": default_run_name("bench-ppo", task, f"s{seed}"), "runs_dir": runs_dir,
        "device": "cpu", "torch_threads": 1,
    }, base)


def run(task: str = "hopper", steps: int = 1_000_000, seed: int = 1, cleanrl: str | None = None,
        runs_dir: str = "runs") -> dict:
    import csv

    import torch

    from stack.train import train

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    cfg = bench_config(task, steps, seed, runs_dir)
    t0 = time.perf_counter()
    run_dir = train(cfg)
    wall = time.perf_counter() - t0
    with open(run_dir / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(f)]
    env_steps = int(rows[-1]["env_steps"])
    evals = [r for r in rows if "eval_return" in r]
    out: dict = {
        "task": task, "seed": seed, "run_dir": str(run_dir),
        "final_return": round(evals[-1]["eval_return"], 2),
        "final_return_std": round(evals[-1]["eval_return_std"], 2),
        "env_steps": env_steps,
        "wall_s": round(wall, 1),
        "steps_per_s": round(env_steps / wall, 1),
        "train_steps_per_s": round(env_steps / sum(r["rollout_s"] + r["update_s"] for r in rows), 1),
        "iter_rollout_s": round(float(np.mean([r["rollout_s"] for r in rows])), 4),
        "iter_env_s": round(float(np.mean([r["env_s"] for r in rows])), 4),
        "iter_update_s": round(float(np.mean([r["update_s"] for r in rows])), 4),
        "eval_s_total": round(sum(r.get("eval_s", 0.0) for r in rows), 1),
        "iterations": len(rows),
        "batch": cfg.env.num_envs * cfg.ppo.rollout_steps,
        "num_envs": cfg.env.num_envs,
        "eval_curve": [[int(r["env_steps"]), round(r["eval_return"], 1)] for r in evals],
    }
    if env_steps >= 300_000:
        at = next(r for r in evals if r["env_steps"] >= 300_000)
        out["return_at_300k"] = round(at["eval_return"], 2)
        out["return_at_300k_env_steps"] = int(at["env_steps"])
    train_pts = [(r["env_steps"], r["train_return"]) for r in rows if "train_return" in r]
    if train_pts:
        out["train_return_final"] = round(float(np.mean([r for _, r in train_pts[-3:]])), 2)
        near = [r for s, r in train_pts if 280_000 <= s <= 320_000]
        if near:
            out["train_return_at_300k"] = round(float(np.mean(near)), 2)
    if cleanrl:
        out.update(run_cleanrl(cleanrl, task, steps, seed))
        if "cleanrl_wall_s" in out:
            out["wall_ratio_to_cleanrl"] = round(out["wall_s"] / out["cleanrl_wall_s"], 3)
    return out


CLEANRL_GYMNASIUM_1X = [
    ("gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10))",
     "gym.wrappers.TransformObservation(env, lambda obs: np.clip(obs, -10, 10), env.observation_space)"),
    ('            if "final_info" in infos:',
     '            if "episode" in infos:  # gymnasium 1.x vector envs\n'
     '                for i in np.flatnonzero(infos["_episode"]):\n'
     '                    print(f"global_step={global_step}, episodic_return={infos[\'episode\'][\'r\'][i]}")\n'
     '            if "final_info" in infos:'),
]
"""(original, replacement) snippets applied to a temporary copy of CleanRL's script."""


def adapted_cleanrl(script: str, out_dir: Path) -> Path:
    text = Path(script).read_text()
    for old, new in CLEANRL_GYMNASIUM_1X:
        if old not in text:
            raise ValueError(f"{script}: expected CleanRL's line {old.strip()!r} (another version of the script?)")
        text = text.replace(old, new, 1)
    path = out_dir / Path(script).name
    path.write_text(text)
    return path


def run_cleanrl(script: str, task: str, steps: int, seed: int) -> dict:
    """Run CleanRL's script as a subprocess (one torch thread) and parse its ``global_step=…, episodic_return=…``
    lines."""
    if task not in GYM_IDS:
        raise ValueError(f"cleanrl comparison: no Gymnasium id for task {task!r}; known: {sorted(GYM_IDS)}")
    import tempfile

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    work = Path(tempfile.mkdtemp(prefix="cleanrl-"))
    script = str(adapted_cleanrl(script, work))
    cmd = [sys.executable, str(Path(script).resolve()), "--env-id", GYM_IDS[task], "--total-timesteps", str(steps),
           "--seed", str(seed), "--no-capture-video", "--no-track"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=Path(script).resolve().parent)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"cleanrl_error": proc.stderr[-2000:]}
    pts = [(int(m.group(1)), float(m.group(2)))
           for m in re.finditer(r"global_step=(\d+), episodic_return=\[?([-+\d.eE]+)", proc.stdout)]
    out = {"cleanrl_wall_s": round(wall, 1), "cleanrl_steps_per_s": round(steps / wall, 1)}
    if pts:
        out["cleanrl_train_return_final"] = round(float(np.mean([r for _, r in pts[-20:]])), 2)
        near = [r for s, r in pts if 280_000 <= s <= 320_000]
        if near:
            out["cleanrl_train_return_at_300k"] = round(float(np.mean(near)), 2)
    return out


if __name__ == "__main__":
    import argparse
    import json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="hopper")
    p.add_argument("--steps", type=int, default=1_000_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--cleanrl", default=None, help="path to CleanRL's ppo_continuous_action.py")
    args = p.parse_args()
    print(json.dumps(run(args.task, args.steps, args.seed, args.cleanrl)))
