"""The scripted operator, free of torch and ROS: HABC's simulated human (``stack.runners.habc`` rolls out with it in
process, ``stack.ros.operator_node`` puts it into the ROS 2 graph for ``r2s record``).

``SimulatedOperator`` decides, step by step, whether the operator holds authority: it takes over when the distance to
done has not dropped by ``stall_eps`` over ``stall_steps`` steps (or, optionally, the critic predicts failure) and
keeps authority ``takeover_steps`` steps, at most ``max_takeovers`` times an episode. Its commands are the task's
baseline controller's (``ScriptedTakeover``), on ``dims`` only (the per-dimension intervention mask).

In process the distance comes from the task's ``info``; on the robot side only the observation exists, so
``OBS_PROGRESS`` computes the same quantities from the observation's named segments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class OperatorConfig:
    progress: dict = field(default_factory=lambda: {"distance": 1.0, "ee_object_distance": 0.5})
    """The distance to done the operator watches: a weighted sum of the task's ``info`` entries (push: the puck's
    distance to the goal + half the fingertip's to the puck, the task's own shaping, so an approach is progress)."""
    stall_steps: int = 20
    """K: take over when that distance has not dropped by stall_eps over the last K steps."""
    stall_eps: float = 0.005
    """Progress (m) that counts as not stalled."""
    takeover_steps: int = 40
    """Steps the operator keeps authority once it took over."""
    max_takeovers: int = 2
    """Takeovers per episode at most (then the policy finishes the episode on its own)."""
    dims: tuple[int, ...] | None = None
    """Action dimensions the operator commands (None: all); the others stay with the policy."""
    p_threshold: float | None = None
    """Also take over where the critic predicts failure, p_v(s) < this (None: off)."""
    authority: str = "human"
    """Authority the takeover is recorded under (the operator stands in for a human)."""


class SimulatedOperator:
    """Decides, step by step, whether the scripted operator holds authority (stalled progress or predicted failure)."""

    def __init__(self, cfg: OperatorConfig):
        self.cfg = cfg
        self.reset()

    def reset(self) -> None:
        self.history: list[float] = []
        self.remaining = 0
        self.takeovers = 0

    def stalled(self) -> bool:
        k = self.cfg.stall_steps
        if len(self.history) <= k:
            return False
        return min(self.history[-k:]) > self.history[-k - 1] - self.cfg.stall_eps

    def active(self, distance: float, success: bool, p_v: float | None = None) -> bool:
        """Whether the operator commands the next step, given the last step's progress."""
        if self.remaining > 0:
            self.remaining -= 1
            if self.remaining == 0:
                self.history = []  # hand back: the policy gets stall_steps steps again
            return self.remaining > 0
        self.history.append(float(distance))
        if success or self.takeovers >= self.cfg.max_takeovers:
            return False
        predicted = self.cfg.p_threshold is not None and p_v is not None and p_v < self.cfg.p_threshold
        if self.stalled() or predicted:
            self.takeovers += 1
            self.remaining = self.cfg.takeover_steps
            return True
        return False


# ---- the task's info entries, from the observation ---------------------------------------------------------------
def _push_terms(seg: dict[str, np.ndarray]) -> dict[str, float]:
    obj, goal, ee = seg["object_pos"], seg["goal"], seg["ee_pos"]
    return {"distance": math.hypot(goal[0] - obj[0], goal[1] - obj[1]),
            "ee_object_distance": float(np.linalg.norm(ee - obj))}


def _reach_terms(seg: dict[str, np.ndarray]) -> dict[str, float]:
    return {"distance": float(np.linalg.norm(seg["ee_pos"] - seg["goal"]))}


OBS_PROGRESS = {"push": _push_terms, "reach": _reach_terms}
"""Task → the ``info`` distances its ``_task_terms`` reports, computed from the observation's segments (the same
formulas: push's puck→goal distance is in the table plane, its fingertip→puck one in 3-D)."""


def segments(obs: np.ndarray, layout) -> dict[str, np.ndarray]:
    """The observation's named segments (``robots.spec.ObsSegment`` layout)."""
    out, offset = {}, 0
    for s in layout:
        out[s.name] = np.asarray(obs[offset: offset + s.size], dtype=np.float64)
        offset += s.size
    if offset != len(obs):
        raise ValueError(f"observation has {len(obs)} values; the layout {[s.name for s in layout]} has {offset}")
    return out


def progress(info: dict, weights: dict) -> float:
    missing = [k for k in weights if k not in info]
    if missing:
        raise KeyError(f"operator.progress: the task's info lacks {missing}; it has {sorted(info)}")
    return float(sum(w * float(info[k]) for k, w in weights.items()))


class ScriptedTakeover:
    """The scripted operator on observations alone (what a ROS node sees): ``step(obs, success)`` → the operator's
    joint target for the next step, or None while the policy keeps authority.

    The target is the task's baseline controller's, moved at most ``max_step`` rad per joint from the measured
    joints — the step a delta-action policy (and the in-process operator, which acts in the task's delta action
    space) can take."""

    def __init__(self, task: str, cfg: OperatorConfig, max_step: float | None = 0.1):
        from sim.registry import make_task

        if task not in OBS_PROGRESS:
            raise ValueError(f"task: the scripted operator knows the progress of {sorted(OBS_PROGRESS)}, not {task!r}")
        self.task = task
        self.env = make_task(task)  # absolute action mode: the baseline's joint targets
        if not self.env.has_baseline:
            raise ValueError(f"task {task!r} has no baseline controller for the scripted operator")
        self.layout = self.env.obs_layout
        self.cfg = cfg
        self.max_step = max_step
        self.operator = SimulatedOperator(cfg)
        self.nq = self.env.home.size
        self.lo, self.hi = self.env.joint_low, self.env.joint_high

    def reset(self) -> None:
        self.operator.reset()
        self.env.close()
        from sim.registry import make_task

        self.env = make_task(self.task)  # a fresh baseline controller (it keeps a phase)

    def distance(self, obs: np.ndarray) -> float:
        return progress(OBS_PROGRESS[self.task](segments(obs, self.layout)), self.cfg.progress)

    def step(self, obs: np.ndarray, success: bool) -> np.ndarray | None:
        if not self.operator.active(self.distance(obs), success):
            return None
        return self.target(obs)

    def target(self, obs: np.ndarray) -> np.ndarray:
        q = np.asarray(obs[: self.nq], dtype=np.float64)
        target = np.asarray(self.env.baseline(obs), dtype=np.float64)
        if self.max_step is not None:
            target = q + np.clip(target - q, -self.max_step, self.max_step)
        return np.clip(target, self.lo, self.hi)

    def close(self) -> None:
        self.env.close()


__all__ = ["OBS_PROGRESS", "OperatorConfig", "ScriptedTakeover", "SimulatedOperator", "progress", "segments"]
