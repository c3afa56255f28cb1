"""Deterministic evaluation of a policy in its own envs (never the training pool), with an optional video.

``evaluate(policy_fn, task, episodes, seed)`` runs ``episodes`` envs side by side, env ``i`` reset with ``seed + i``
(the seeds the training pool would give, but a separate range is used by the runner), each for exactly one episode;
``policy_fn`` maps a batch of raw observations ``[B, obs_dim]`` to env actions ``[B, act_dim]``; a stateful controller
(``stack.controller.PolicyController``: observation history and chunk queue per env) is reset and driven through its
``act_batch(obs, env_indices)``. With ``video=True`` episode 0 is
rendered (``render_mode="rgb_array"``, MuJoCo offscreen; ``MUJOCO_GL=egl`` by default); if rendering fails a warning
is issued and the result carries no frames.

Success of an episode = the task's ``info["success"]`` on its **last** step (the state it ended in);
``success_step_mean`` is the mean first step (1-based) at which a successful episode reported success.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

PolicyFn = Callable[[np.ndarray], np.ndarray]


def _make_env(task, task_kwargs: dict | None, render: bool):
    from sim.pool import resolve_task

    kwargs = dict(task_kwargs or {})
    if render:
        kwargs["render_mode"] = "rgb_array"
    return resolve_task(task)(**kwargs)


def run_episodes(envs: list, act: Callable[[np.ndarray, list[int]], np.ndarray], seed: int,
                 render_first: bool = False) -> dict:
    """One episode in each env, stepped in lockstep. ``act(obs [B, obs_dim], env_indices) -> actions [B, act_dim]``
    for the envs still running."""
    n = len(envs)
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    returns, lengths = np.zeros(n), np.zeros(n, np.int64)
    success = [False] * n
    has_success = False
    first_success: list[int | None] = [None] * n
    running = list(range(n))
    frames: list[np.ndarray] = []

    def grab() -> None:
        nonlocal render_first
        try:
            frame = envs[0].render()
        except Exception as e:  # no GL context, missing libraries, …: evaluate anyway
            warnings.warn(f"evaluate: rendering failed ({type(e).__name__}: {e}); continuing without a video",
                          stacklevel=3)
            render_first = False
            frames.clear()
            return
        if frame is None:
            warnings.warn("evaluate: the task rendered no frame; continuing without a video", stacklevel=3)
            render_first = False
        else:
            frames.append(np.asarray(frame))

    if render_first:
        grab()
    while running:
        actions = np.asarray(act(np.stack([obs[i] for i in running]), running))
        still = []
        for k, i in enumerate(running):
            o, r, terminated, truncated, info = envs[i].step(actions[k])
            obs[i] = o
            returns[i] += r
            lengths[i] += 1
            if "success" in info:
                has_success = True
            s = bool(info.get("success", False))
            success[i] = s
            if s and first_success[i] is None:
                first_success[i] = int(lengths[i])
            if i == 0 and render_first:
                grab()
            if not (terminated or truncated):
                still.append(i)
        running = still
    steps = [first_success[i] for i in range(n) if success[i] and first_success[i] is not None]
    return {
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "length_mean": float(lengths.mean()),
        "success_rate": float(np.mean(success)),
        "has_success": has_success,
        "success_step_mean": float(np.mean(steps)) if steps else math.nan,
        "returns": returns.tolist(),
        "frames": frames,
    }


def evaluate(policy_fn: PolicyFn, task, episodes: int = 5, seed: int = 10_000, video: bool = False,
             task_kwargs: dict | None = None) -> dict:
    """``dict(return_mean, return_std, success_rate, frames, length_mean, success_step_mean, returns, fps,
    has_success)``; ``has_success``: whether the task reported ``info["success"]`` at all."""
    envs = [_make_env(task, task_kwargs, render=video and i == 0) for i in range(episodes)]
    # A stateful policy (observation history, action-chunk queue per env) is told which envs are still running.
    act_batch = getattr(policy_fn, "act_batch", None)
    if act_batch is not None and hasattr(policy_fn, "reset"):
        policy_fn.reset()
    act = act_batch if act_batch is not None else (lambda obs, _idx: policy_fn(obs))
    try:
        out = run_episodes(envs, act, seed, render_first=video)
        out["fps"] = int(envs[0].metadata.get("render_fps") or 30)
    finally:
        for env in envs:
            env.close()
    return out


def evaluate_baseline(task, episodes: int = 10, seed: int = 10_000, task_kwargs: dict | None = None) -> dict:
    """The task's hand-written controller (``env.baseline(obs)``) on the same seeds as ``evaluate``."""
    envs = [_make_env(task, task_kwargs, render=False) for _ in range(episodes)]
    try:
        out = run_episodes(envs, lambda obs, idx: np.stack([envs[i].baseline(o) for o, i in zip(obs, idx)]), seed)
    finally:
        for env in envs:
            env.close()
    out.pop("frames")
    return out


def evaluate_run(run_dir: str | Path, episodes: int | None = None, seed: int | None = None, video: bool = False,
                 device: str = "cpu") -> dict:
    """``r2s eval``: a run's latest checkpoint on the task it was trained (or evaluated) on.

    Defaults reproduce the runner's evaluation: ``episodes`` = the run's ``eval_episodes``, ``seed`` = its evaluation
    seed (``stack.config.eval_seed``), so the result's ``return_mean`` equals the last ``eval_return`` of
    ``metrics.csv`` for the final checkpoint (returned as ``metrics_csv_return``). ``video``: write eval.mp4."""
    import csv

    import warnings

    from stack import checkpoint, run_overlay
    from stack.controller import PolicyController
    from stack.config import eval_seed
    from stack.runs import RunDir

    ckpt = checkpoint.load(run_dir)
    run = RunDir(run_dir, tensorboard=False)
    if episodes is None:
        episodes = int(run.load_config().get("eval_episodes") or 10)
    seed = eval_seed(ckpt.seed) if seed is None else int(seed)
    policy = PolicyController.from_checkpoint(ckpt, device=device, seed=seed)
    overlay_note = run_overlay.eval_mismatch(ckpt.meta, run_overlay.run_overlay(ckpt.task, ckpt.task_kwargs), run_dir)
    if overlay_note:
        warnings.warn(overlay_note, stacklevel=2)
    out = evaluate(policy, ckpt.task, episodes, seed, video=video, task_kwargs=ckpt.task_kwargs)
    frames = out.pop("frames")
    if video and frames:
        out["video"] = str(run.save_video(frames, fps=out["fps"], name="eval.mp4"))
    run.close()
    logged = None
    if run.metrics_path.exists():
        with open(run.metrics_path) as f:
            rows = [r for r in csv.DictReader(f) if r.get("eval_return")]
        logged = float(rows[-1]["eval_return"]) if rows else None
    out.update(episodes=episodes, seed=seed, checkpoint_steps=ckpt.env_steps, metrics_csv_return=logged)
    return out
