"""``train(cfg) -> run directory``: the one entry point of training (``r2s train``).

``cfg.algo`` picks the runner (``stack.runners``): on-policy for PPO, FPO and DPPO, off-policy for SAC, offline for
BC. With ``cfg.seeds`` it trains once per seed and aggregates them (``stack.seeds``).

With ``cfg.nproc > 1`` it starts that many learner processes with ``torchrun --standalone`` (a free local port), each
running ``r2s train`` on the resolved config written to ``<run dir>/launch.yaml``; a process started by torchrun (or
any launcher that sets ``WORLD_SIZE``) joins the process group and trains its rank (``stack.distributed``).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import yaml

from stack.config import TrainConfig


def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says and return the run directory (``runs/<name>``; with ``seeds``: the group's folder)."""
    from stack import distributed
    from stack.runners.base import check_env_backend

    if cfg.nproc < 1:
        raise ValueError(f"nproc={cfg.nproc}: expected at least 1 learner process")
    check_env_backend(cfg)  # before a seeds group or a launch spec is written
    if cfg.nproc > 1 and distributed.launched_world_size() == 1:
        return launch(cfg)
    if cfg.seeds:
        if distributed.launched_world_size() > 1:
            raise ValueError(f"seeds={cfg.seeds} with nproc={cfg.nproc}: train one seed per multi-process run")
        from stack.seeds import train_seeds

        return train_seeds(cfg)
    from stack.runners import runner_for

    if distributed.launched_world_size() == 1:
        return runner_for(cfg).learn()
    device = distributed.init_from_env(cfg.device)
    try:
        return runner_for(dataclasses.replace(cfg, device=device, nproc=distributed.world_size())).learn()
    finally:
        distributed.shutdown()


def launch(cfg: TrainConfig) -> Path:
    """Run ``cfg`` as ``cfg.nproc`` processes of this machine (torchrun --standalone); returns the run directory."""
    from stack.runs import _plain, default_run_name

    if cfg.seeds:
        raise ValueError(f"seeds={cfg.seeds} with nproc={cfg.nproc}: train one seed per multi-process run")
    if not cfg.resume and not cfg.name:  # the run's name fixed here, so this process knows where it is
        cfg = dataclasses.replace(cfg, name=default_run_name(cfg.algo, cfg.env.task))
    run_dir = Path(cfg.resume) if cfg.resume else Path(cfg.runs_dir) / cfg.name
    if not cfg.resume and (run_dir / "metrics.csv").exists():
        raise FileExistsError(f"run directory {run_dir} already holds a run; pick another name or pass "
                              f"resume={str(run_dir)!r}")
    run_dir.mkdir(parents=True, exist_ok=True)
    spec = run_dir / "launch.yaml"
    with open(spec, "w") as f:
        yaml.safe_dump(_plain(dataclasses.asdict(cfg)), f, sort_keys=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={cfg.nproc}",
           "-m", "stack", "train", "--preset", str(spec)]
    rc = subprocess.run(cmd, env={**os.environ, "R2S_LAUNCHED": "1"}).returncode
    if rc != 0:
        raise RuntimeError(f"nproc={cfg.nproc}: the learner processes failed (exit status {rc}; {' '.join(cmd)})")
    return run_dir


__all__ = ["launch", "train"]
