"""The runner base: what every trainer of r2s does the same way, written once.

A runner owns the run directory (``config.yaml``, ``metrics.csv`` + TensorBoard, ``checkpoints/``, the learning-curve
plot and the rollout video), the progress bar, the evaluation cadence with **one** seed rule, the checkpoint cadence,
resume and the final evaluation. Its subclass owns the loop of its family and the algorithm's data flow; the
algorithm (``stack.algos.*``) owns losses and updates and never sees a runner (rsl_rl's seam).

    on-policy   stack.runners.on_policy   PPO, FPO, DPPO    step axis: env steps
    off-policy  stack.runners.off_policy  SAC               step axis: env steps
    offline     stack.runners.offline     BC (HABC rounds)  step axis: gradient steps

**Evaluation seeds** (``eval_seed``): evaluation env ``i`` is reset with ``1_000_000 + 1000·seed + i`` — never a
training seed — and the policy controller's noise is seeded with the same number, so ``r2s eval RUN`` on the final
checkpoint reproduces the last ``eval_return`` of ``metrics.csv`` (same episodes, same seeds, same noise).

**Robot overlay** (``stack.run_overlay``): the ``r2s sysid`` overlay the run's task carries (task_kwargs
``robot_overlay``, else ``R2S_ROBOT_OVERLAY``) is copied into the run directory and recorded in every checkpoint's
meta; a resume whose simulator would carry another one is refused, naming the field.

**Cadences.** ``eval_every`` / ``checkpoint_every`` count steps of the run's axis; an evaluation or checkpoint is due
when the step count crosses a multiple; the last step always evaluates (once) and checkpoints.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import torch

from stack import checkpoint, distributed, run_overlay
from stack.config import EVAL_SEED_OFFSET, TrainConfig, eval_seed
from stack.runs import RunDir, default_run_name

TIMING_KEYS = ("steps_per_s", "rollout_s", "env_s", "update_s", "eval_s", "time_s")
"""Metrics that depend on the machine, not on the computation (left out when comparing runs)."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device={name!r} but torch.cuda.is_available() is False; use 'cpu' or 'auto'")
    return device


def task_kwargs_of(cfg: TrainConfig) -> dict:
    """The task's keyword arguments of a config: ``env.task_kwargs`` plus ``env.randomization``."""
    kwargs = dict(cfg.env.task_kwargs or {})
    if cfg.env.randomization:
        kwargs["randomization"] = dict(cfg.env.randomization)
    return kwargs


def make_envs(cfg: TrainConfig, num_envs: int | None = None, seed_offset: int = 0):
    """The training pool of ``cfg`` (``num_envs``: a learner rank's share of ``env.num_envs``; ``seed_offset``: its
    first env's index in the whole pool, so env i is seeded ``seed + seed_offset + i``)."""
    from sim.pool import make_pool

    kw = {"seed": cfg.seed + seed_offset, "task_kwargs": task_kwargs_of(cfg)}
    if ray_address(cfg.workers) is not False:
        from sim.ray_pool import RayPool

        return RayPool(cfg.env.task, num_envs or cfg.env.num_envs, num_actors=cfg.env.num_workers,
                       address=ray_address(cfg.workers), **kw)
    if cfg.env.backend == "genesis":
        from sim.genesis_pool import GenesisPool

        return GenesisPool(cfg.env.task, num_envs or cfg.env.num_envs, backend=genesis_backend(cfg), **kw)
    if cfg.env.backend == "pool":
        kw["num_workers"] = cfg.env.num_workers
    return make_pool(cfg.env.task, num_envs or cfg.env.num_envs, backend=cfg.env.backend, **kw)


def genesis_backend(cfg: TrainConfig) -> str:
    """Genesis' backend of an ``env.backend='genesis'`` run: 'gpu' when the learner's device is cuda, else 'cpu'."""
    return "gpu" if resolve_device(cfg.device).type == "cuda" else "cpu"


def check_env_backend(cfg: TrainConfig) -> None:
    """Refuse an ``env.backend`` this process cannot run before anything is built or written (the run directory, a
    seeds group, a launch spec): Genesis without the ``genesis`` extra (``GenesisUnavailable`` saying how to install
    it), or asked for what it lacks; and a robot overlay with a Ray cluster's workers (``ray://``)."""
    address = ray_address(cfg.workers)
    if isinstance(address, str) and run_overlay.task_overlay(cfg.env.task, cfg.env.task_kwargs):
        # a cluster's actors get neither R2S_ROBOT_OVERLAY nor the file: they would simulate the nominal model while
        # the run recorded the overlay
        raise ValueError(f"workers={cfg.workers!r} with a robot overlay "
                         f"({run_overlay.task_overlay(cfg.env.task, cfg.env.task_kwargs)}): Ray Client actors on "
                         "other hosts do not carry it; expected workers='local' or 'ray' (a local instance)")
    if cfg.env.backend != "genesis":
        return
    from sim.core import DomainRandomization
    from sim.genesis_pool import GenesisUnavailable, check_supported, import_genesis

    if ray_address(cfg.workers) is not False:
        raise ValueError(f"workers={cfg.workers!r} with env.backend='genesis': Genesis steps all envs in one scene of "
                         "the training process; expected workers='local'")
    if DomainRandomization.from_dict(cfg.env.randomization or None).enabled:
        raise ValueError("env.randomization with env.backend='genesis': the Genesis backend has no domain "
                         "randomisation; expected {}")
    try:
        check_supported(cfg.env.task, cfg.env.task_kwargs)
    except ValueError as e:  # name the config's field, not the pool's argument
        raise ValueError(f"env.{e} (env.backend='genesis')") from e
    try:
        import_genesis()
    except GenesisUnavailable as e:
        raise GenesisUnavailable(f"env.backend='genesis': {e} (`make test-genesis` builds .venv-genesis; then train "
                                 "with .venv-genesis/bin/r2s train ...)") from e


def ray_address(workers: str) -> str | None | bool:
    """``workers`` → False (local workers), None (Ray: a local instance or ``RAY_ADDRESS``) or the Ray address."""
    if workers == "local":
        return False
    if workers == "ray":
        return None
    if workers.startswith("ray://"):
        return workers
    raise ValueError(f"workers={workers!r}: expected 'local', 'ray' or 'ray://HOST:PORT'")


def due(every: int, before: int, now: int) -> bool:
    """Whether a cadence of ``every`` steps fires between step counts ``before`` and ``now``."""
    return every > 0 and now // every > before // every


def eval_metrics(result: dict) -> dict:
    """The metrics.csv columns of an evaluation result."""
    out = {"eval_return": result["return_mean"], "eval_return_std": result["return_std"],
           "eval_length": result["length_mean"]}
    if result["has_success"]:
        out["eval_success"] = result["success_rate"]
    return out


class Runner:
    """Base of the runner family. A subclass sets ``step_key`` and implements ``learn``, ``controller``,
    ``checkpoint_parts`` and ``restore``; it calls ``log_row`` once per logged step and ``finish`` at the end."""

    step_key = "env_steps"
    """The run's step axis (metrics.csv's first column; what eval_every and checkpoint_every count)."""
    supports_distributed = False
    """Whether the family runs as several learner processes (``stack.distributed``; the on-policy runner does)."""

    def __init__(self, cfg: TrainConfig, name_parts: tuple[str, ...]):
        self.cfg = cfg
        if distributed.world_size() > 1 and not self.supports_distributed:
            raise NotImplementedError(f"nproc={distributed.world_size()}: {type(self).__name__} ({cfg.algo}) trains "
                                      "in one process; several learner processes run algo ppo, fpo or dppo")
        ray_address(cfg.workers)  # a bad value refused before the run directory exists
        check_env_backend(cfg)  # so is a Genesis backend this process lacks
        self.is_main = distributed.is_main()
        """Rank 0 (or the only process): the one that evaluates and writes the run directory."""
        torch.set_num_threads(cfg.torch_threads)
        self.device = resolve_device(cfg.device)
        self.resume_from: checkpoint.Checkpoint | None = None
        overlay = run_overlay.run_overlay(*self.eval_task)  # a bad overlay file refused before the run directory
        if cfg.resume:
            path = Path(cfg.resume)
            self.resume_from = checkpoint.load(path, require=())
            self.resume_from.check_matches(algo=cfg.algo)
            overlay = run_overlay.check_resume(self.resume_from.meta, overlay, path, f"resume {path}")
            if self.is_main:
                _truncate_metrics(path / "metrics.csv", self.step_key, self.resume_from.env_steps)
        else:
            path = Path(cfg.runs_dir) / (cfg.name or default_run_name(*name_parts))
            if (path / "metrics.csv").exists():
                raise FileExistsError(f"run directory {path} already holds a run; pick another name or pass "
                                      f"resume={str(path)!r}")
        path = Path(distributed.broadcast_object(str(path)))  # rank 0's name (a default name has a timestamp)
        self.run_path = path
        self.run = RunDir(path, config=cfg, tensorboard=cfg.tensorboard, step_key=self.step_key) \
            if self.is_main else None
        """The run directory, on rank 0 only (None on the other ranks)."""
        if overlay is not None and self.is_main and "copy" not in overlay:
            overlay = run_overlay.save_copy(path, overlay)
        self.robot_overlay = overlay
        """The robot overlay the run's simulator carries (``stack.run_overlay``; None: the nominal model): copied into
        the run directory, recorded in every checkpoint's meta, checked on resume."""
        self.steps = 0
        """Steps of the run's axis done (env steps, or gradient steps offline)."""
        self.last_eval: dict | None = None
        self.last_eval_step = -1

    # ---- what a subclass provides ---------------------------------------------------------------------------------
    @property
    def eval_task(self) -> tuple[str, dict]:
        """(task, task_kwargs) evaluations run on."""
        return self.cfg.env.task, task_kwargs_of(self.cfg)

    def controller(self, seed: int):
        """The current policy as a ``stack.controller.PolicyController`` whose noise is seeded with ``seed``."""
        raise NotImplementedError

    def checkpoint_parts(self) -> dict:
        """``checkpoint.save`` keyword arguments: modules, normalization, meta (without the common fields),
        trainer_state."""
        raise NotImplementedError

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        """Load a checkpoint's modules and trainer state into this runner (resume)."""
        raise NotImplementedError

    # ---- evaluation -----------------------------------------------------------------------------------------------
    def evaluate(self, video: bool = False, episodes: int | None = None) -> dict:
        from stack.evaluate import evaluate

        seed = eval_seed(self.cfg.seed)
        task, kwargs = self.eval_task
        return evaluate(self.controller(seed), task, episodes or self.cfg.eval_episodes, seed, video=video,
                        task_kwargs=kwargs)

    def log_row(self, before: int, row: dict) -> dict:
        """Log the metrics of the step count ``self.steps`` (``before``: the count at the previous row): evaluate when
        due or final, write the row, checkpoint when due or final. Returns the row as logged."""
        cfg = self.cfg
        final = self.steps >= self.total_steps
        if (due(cfg.eval_every, before, self.steps) or final) and self.last_eval_step != self.steps \
                and cfg.eval_episodes > 0 and self.can_evaluate and self.is_main:
            t0 = time.perf_counter()
            self.last_eval = self.evaluate(video=final and cfg.video)
            self.last_eval_step = self.steps
            row.update(eval_metrics(self.last_eval), eval_s=time.perf_counter() - t0)
        if self.is_main:
            self.run.log(self.steps, **row)
        if final or due(cfg.checkpoint_every, before, self.steps):
            if self.is_main:
                self.save_checkpoint()
            if not final:
                self.after_checkpoint()
        return row

    @property
    def total_steps(self) -> int:
        return self.cfg.total_env_steps

    @property
    def can_evaluate(self) -> bool:
        """Whether the run has a simulated task to evaluate in (a dataset from a robot may have none)."""
        return True

    def after_checkpoint(self) -> None:
        """What a periodic (not final) checkpoint implies for the loop (on-/off-policy: an episode boundary)."""

    # ---- checkpoints ----------------------------------------------------------------------------------------------
    def common_meta(self) -> dict:
        task, kwargs = self.eval_task
        return {"algo": self.cfg.algo, "task": task, "task_kwargs": kwargs, "seed": self.cfg.seed,
                "env_steps": self.steps, "step_key": self.step_key, "run_id": self.run_path.name,
                run_overlay.META_KEY: self.robot_overlay}

    def save_checkpoint(self) -> Path:
        """checkpoints/latest (and checkpoints/step_<N> with keep_checkpoints), each saved atomically."""
        parts = self.checkpoint_parts()
        meta = {**self.common_meta(), **parts.pop("meta")}
        root = checkpoint.checkpoints_root(self.run.path)
        if self.cfg.keep_checkpoints:
            checkpoint.save(root / f"step_{self.steps}", meta=meta, **parts)
        return checkpoint.save(root / checkpoint.LATEST, meta=meta, **parts)

    def restore_modules(self, ckpt: checkpoint.Checkpoint, **expected) -> None:
        """Refuse a checkpoint whose meta differs from ``expected`` (naming the field), then load its weights into
        the algorithm's modules (train mode)."""
        ckpt.check_matches(**expected)
        for name, module in self.algo.policy_modules().items():
            ckpt.module(name, into=module, device=self.device).train()

    # ---- the end of a run -----------------------------------------------------------------------------------------
    def progress_bar(self, desc: str):
        from tqdm import tqdm

        return tqdm(total=self.total_steps, initial=min(self.steps, self.total_steps), unit="step",
                    disable=not (self.cfg.progress and self.is_main), dynamic_ncols=True, mininterval=1.0, desc=desc)

    def finish(self, title: str) -> Path:
        """Video of the final evaluation, learning-curve plot, close the run directory (rank 0). Returns its path."""
        if not self.is_main:
            return self.run_path
        if self.cfg.video and self.can_evaluate:
            self._write_video()
        try:
            self.run.plot_learning_curve(title=title)
        except Exception as e:  # a plot must never lose a finished run
            warnings.warn(f"learning curve not written: {e}", stacklevel=2)
        self.run.close()
        return self.run.path

    def _write_video(self) -> None:
        result = self.last_eval or {}
        frames = result.get("frames") or []
        if not frames:  # rendering failed (warned), or the final evaluation was taken earlier: film one episode now
            result = self.evaluate(video=True, episodes=1)
            frames = result.get("frames") or []
        if frames:
            try:
                self.run.save_video(frames, fps=result.get("fps", 30))
            except Exception as e:
                warnings.warn(f"video not written ({type(e).__name__}: {e})", stacklevel=2)


def _truncate_metrics(path: Path, step_key: str, steps: int) -> None:
    """Drop rows logged after the checkpoint a run resumes from (they will be logged again)."""
    import csv

    if not path.exists():
        return
    with open(path) as f:
        reader = csv.DictReader(f)
        columns = list(reader.fieldnames or [])
        rows = [r for r in reader if float(r[step_key]) <= steps]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)


__all__ = ["EVAL_SEED_OFFSET", "TIMING_KEYS", "Runner", "check_env_backend", "due", "eval_metrics", "eval_seed",
           "genesis_backend", "make_envs", "resolve_device", "task_kwargs_of"]
