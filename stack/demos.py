"""Record demonstrations into an episode dataset (``stack.data.episodes``): ``r2s demos``.

An expert is the task's hand-written baseline controller (``"baseline"``), a trained run (its latest checkpoint, as a
``stack.controller.PolicyController``: normalise → the policy as it samples at evaluation → scale), one checkpoint
folder of a run, or any callable ``obs -> action``. Episode i starts from ``reset(seed=seed + i)``, so a dataset is
reproducible and its episodes are the ones ``stack.evaluate`` runs on the same seeds.

Action noise (``noise_std``) is Gaussian, drawn in the normalised action space ``[−1, 1]`` of the task's bounds, i.e.
a fraction of each joint's half range (in raw units where the action space is unbounded). The noisy action, clipped to
the bounds, is what executes and is recorded as ``action``; the expert's noise-free action is recorded as
``action.proposal`` (what the demonstrator proposed). Cloning ``action`` learns the noisy demonstrator; cloning
``action.proposal`` (``BCConfig.action_key``) is DART (Laskey et al. 2017): states off the expert's path, labelled
with the expert's correction.

**"medium" demonstrations.** DPPO pretrains on D4RL's ``*-medium-v2`` datasets, recorded by a partially trained SAC
agent whose return is roughly a third to a half of the expert's. D4RL cannot be downloaded here, so r2s records its
own: ``quality`` is metadata only (stored in ``meta/info.json`` and every episode line); "medium" means a checkpoint
whose return is about 1/3–1/2 of a fully trained expert's. ``select_checkpoint`` picks, from a run that saved
checkpoints at several steps (``keep_checkpoints``: ``checkpoints/step_<N>/``), the one whose evaluated return is
closest to a target.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np

from stack.data.episodes import EpisodeDataset, EpisodeWriter

Expert = str | Path | Callable[[np.ndarray], np.ndarray]


# ---- experts ------------------------------------------------------------------------------------------------------
def load_checkpoint_policy(path: str | Path, device: str = "cpu"):
    """A run directory (its latest checkpoint) or one checkpoint folder as a ``stack.controller.PolicyController``
    (normalise → the policy as its meta.json samples → clip and scale; chunk policies execute ``act_steps`` of each
    chunk, then re-plan). Drive it with ``act_batch(obs, slots)`` after ``reset()``, or call it on one obs."""
    from stack.controller import PolicyController

    return PolicyController.from_checkpoint(path, device=device)


def _resolve_expert(expert: Expert, env) -> tuple[Callable[[np.ndarray], np.ndarray], str, str]:
    """(obs -> env action, authority, policy_version) for an expert spec."""
    from stack import checkpoint

    if callable(expert):
        return expert, "policy", getattr(expert, "__name__", type(expert).__name__)
    if str(expert) == "baseline":
        if not getattr(env, "has_baseline", False):
            raise ValueError(f"expert 'baseline': task {type(env).__name__} has no baseline controller")
        return env.baseline, "baseline", "baseline"
    path = Path(expert)
    if not path.exists():
        raise FileNotFoundError(f"expert {str(expert)!r}: neither 'baseline' nor a run directory / checkpoint folder")
    meta = checkpoint.read_meta(path)
    return load_checkpoint_policy(path), "policy", f"{path.name}@{meta['env_steps']}"


class _NoisyExpert:
    """Adds N(0, noise_std²) in the normalised action space of ``space`` and clips to its bounds."""

    def __init__(self, act: Callable, space, noise_std: float, rng: np.random.Generator):
        self.act, self.noise_std, self.rng = act, float(noise_std), rng
        self.low, self.high = space.low.astype(np.float64), space.high.astype(np.float64)
        self.bounded = bool(np.all(np.isfinite(self.low)) and np.all(np.isfinite(self.high)))
        self.half = (self.high - self.low) / 2.0 if self.bounded else np.ones_like(self.low)

    def __call__(self, obs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(executed action, noise-free proposal), both clipped to the bounds."""
        clean = np.asarray(self.act(obs), np.float64)
        noisy = clean + self.noise_std * self.half * self.rng.standard_normal(clean.shape) if self.noise_std > 0 \
            else clean
        if self.bounded:
            return np.clip(noisy, self.low, self.high), np.clip(clean, self.low, self.high)
        return noisy, clean


# ---- recording ----------------------------------------------------------------------------------------------------
def record_demos(task: str, expert: Expert, episodes: int, seed: int, out_dir: str | Path, quality: str | None = None,
                 noise_std: float = 0.0, progress: bool = True, task_kwargs: dict | None = None,
                 extra_info: dict | None = None) -> Path:
    """Run ``expert`` for ``episodes`` episodes of ``task`` and write them to ``out_dir``; returns the dataset path.

    ``task_kwargs`` go to the task's constructor; ``extra_info`` is added to ``meta/info.json``. The dataset's stats
    are written at the end; the dataset is re-opened (validated) before returning.
    """
    from tqdm import tqdm

    from sim.pool import resolve_task

    env = resolve_task(task)(**(task_kwargs or {}))
    act, authority, version = _resolve_expert(expert, env)
    reset_policy = getattr(act, "reset", None)
    rng = np.random.default_rng(seed + 7_919)
    noisy = _NoisyExpert(act, env.action_space, noise_std, rng)
    info = {"expert": str(expert) if not callable(expert) else version, "quality": quality,
            "noise_std": float(noise_std), "seed": int(seed), "task_kwargs": task_kwargs or {}, **(extra_info or {})}
    writer = EpisodeWriter.for_task(out_dir, task, env, extra_info=info)
    returns, successes = [], []
    bar = tqdm(range(episodes), desc=f"demos {task}", unit="ep", disable=not progress, dynamic_ncols=True)
    try:
        for i in bar:
            obs, _ = env.reset(seed=seed + i)
            if reset_policy is not None:
                reset_policy()
            done = False
            while not done:
                action, proposal = noisy(obs)
                next_obs, reward, terminated, truncated, step_info = env.step(action)
                executed = env.check_action(action) if hasattr(env, "check_action") else action
                writer.add_step(obs, executed, reward, terminated=terminated, truncated=truncated,
                                success=bool(step_info.get("success", False)), authority=authority,
                                proposal=proposal)
                obs, done = next_obs, terminated or truncated
            meta = writer.end_episode(policy_version=version, seed=seed + i, quality=quality)
            returns.append(meta["return"])
            successes.append(meta["outcome"] == "success")
            bar.set_postfix_str(f"return {np.mean(returns):.1f}  success {np.mean(successes):.0%}", refresh=False)
        path = writer.close()
    finally:
        bar.close()
        env.close()
    EpisodeDataset(path)  # validate what was written
    return path


# ---- choosing a "medium" checkpoint ---------------------------------------------------------------------------------
def run_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(env_steps, folder) of every checkpoint of a run: ``checkpoints/step_<N>/`` (``keep_checkpoints``) and
    ``checkpoints/latest/``."""
    from stack import checkpoint

    return checkpoint.list_checkpoints(run_dir)


def _logged_eval_returns(run_dir: Path) -> dict[int, float]:
    path = run_dir / "metrics.csv"
    if not path.exists():
        return {}
    out = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row.get("eval_return") not in (None, ""):
                out[int(float(row["env_steps"]))] = float(row["eval_return"])
    return out


def select_checkpoint(run_dir: str | Path, target_return: float, evaluate_missing: bool = True,
                      episodes: int = 5, seed: int = 20_000) -> tuple[Path, float]:
    """The checkpoint of ``run_dir`` whose return is closest to ``target_return``: (folder, its return).

    A checkpoint's return is the ``eval_return`` logged in ``metrics.csv`` at its step; where none was logged (and
    ``evaluate_missing``), it is evaluated for ``episodes`` episodes. E.g. "medium" for DPPO-style pretraining:
    ``select_checkpoint(run, target_return=0.4 * expert_return)``.
    """
    run_dir = Path(run_dir)
    ckpts = run_checkpoints(run_dir)
    if not ckpts:
        raise FileNotFoundError(f"select_checkpoint: {run_dir}/checkpoints holds no checkpoint")
    logged = _logged_eval_returns(run_dir)
    scored: list[tuple[float, int, Path]] = []
    for steps, folder in ckpts:
        ret = logged.get(steps)
        if ret is None and evaluate_missing:
            from stack import checkpoint
            from stack.evaluate import evaluate

            meta = checkpoint.read_meta(folder)
            ret = evaluate(load_checkpoint_policy(folder), meta["task"], episodes, seed,
                           task_kwargs=meta.get("task_kwargs"))["return_mean"]
        if ret is not None:
            scored.append((float(ret), steps, folder))
    if not scored:
        raise ValueError(f"select_checkpoint: no return known for any checkpoint of {run_dir}")
    ret, _, folder = min(scored, key=lambda s: (abs(s[0] - target_return), s[1]))
    return folder, ret


# ---- CLI ------------------------------------------------------------------------------------------------------------
def cmd_demos(argv: list[str]) -> int:
    """``r2s demos --task reach --expert baseline --episodes 50 --out data/reach_baseline``."""
    p = argparse.ArgumentParser(prog="r2s demos", description="record demonstrations into an episode dataset")
    p.add_argument("--task", required=True, help="task name (r2s tasks)")
    p.add_argument("--expert", default="baseline",
                   help="'baseline' (the task's controller), a run directory (its latest checkpoint) or a checkpoint "
                        "folder")
    p.add_argument("--episodes", type=int, default=50)
    p.add_argument("--seed", type=int, default=0, help="episode i is reset with seed + i")
    p.add_argument("--out", required=True, help="output folder (must not hold a dataset)")
    p.add_argument("--quality", default=None, help="metadata only, e.g. 'expert' or 'medium' (see stack.demos)")
    p.add_argument("--noise-std", type=float, default=0.0, help="Gaussian action noise, fraction of the half range")
    p.add_argument("--target-return", type=float, default=None,
                   help="with a run directory: use its checkpoint whose return is closest to this")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    expert = args.expert
    if args.target_return is not None:
        if expert == "baseline":
            p.error("--target-return needs --expert <run directory>")
        folder, ret = select_checkpoint(expert, args.target_return)
        print(f"checkpoint {folder} (return {ret:.1f}, target {args.target_return:.1f})")
        expert = str(folder)
    path = record_demos(args.task, expert, args.episodes, args.seed, args.out, quality=args.quality,
                        noise_std=args.noise_std, progress=not args.no_progress)
    ds = EpisodeDataset(path)
    print(json.dumps({"dataset": str(path), "episodes": ds.num_episodes, "frames": len(ds),
                      "return_mean": ds.mean_return(), "success_rate": ds.success_rate(),
                      "return_std": float(np.std([m["return"] for m in ds.episodes])) if ds.episodes else math.nan}))
    return 0


__all__ = ["cmd_demos", "load_checkpoint_policy", "record_demos", "run_checkpoints", "select_checkpoint"]
