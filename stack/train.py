"""``train(cfg) -> run directory``: the one entry point of training (``r2s train``).

``cfg.algo`` picks the runner (``stack.runners``): on-policy for PPO, FPO and DPPO, off-policy for SAC, offline for
BC. With ``cfg.seeds`` it trains once per seed and aggregates them (``stack.seeds``).
"""

from __future__ import annotations

from pathlib import Path

from stack.config import TrainConfig


def train(cfg: TrainConfig) -> Path:
    """Train as ``cfg`` says and return the run directory (``runs/<name>``; with ``seeds``: the group's folder)."""
    if cfg.seeds:
        from stack.seeds import train_seeds

        return train_seeds(cfg)
    from stack.runners import runner_for

    return runner_for(cfg).learn()


__all__ = ["train"]
