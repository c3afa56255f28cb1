"""Zone baseline: over the keep-out box by waypoints, at the reach baseline's slow fingertip speed.

A stateless rule on the observation (joint positions, goal, the box's center; the box's half sizes are given):

* **lift**: the straight line (in the table plane) from the fingertip to the goal crosses the box's footprint grown by
  ``margin`` and the fingertip is below the safe height (box top + ``clearance``) → rise straight up;
* **over**: that line crosses the footprint and the fingertip is at the safe height → move level to above the goal;
* **reach**: the line is clear of the footprint (the box is behind) → go straight to the goal.

Each waypoint is followed with ``ReachBaseline`` (damped-least-squares IK, ``max_step`` of fingertip travel per tick,
gravity feed-forward), so it is safe and slow: the reference a learned policy should beat on steps-to-goal.
"""

from __future__ import annotations

import numpy as np

from robots.baselines.ik import require, segment_slices
from robots.baselines.reach import ReachBaseline
from robots.spec import ObsSegment


def segment_crosses_box(p0: np.ndarray, p1: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the segment p0→p1 touches the axis-aligned box [lo, hi] in any dimension (slab test; a point segment
    is a containment test). The zone task's entry check and this baseline's route share it."""
    d = p1 - p0
    t0, t1 = 0.0, 1.0
    for k in range(len(lo)):
        if abs(d[k]) < 1e-12:
            if p0[k] < lo[k] or p0[k] > hi[k]:
                return False
            continue
        a, b = sorted(((lo[k] - p0[k]) / d[k], (hi[k] - p0[k]) / d[k]))
        t0, t1 = max(t0, a), min(t1, b)
        if t0 > t1:
            return False
    return True


segment_crosses_rect = segment_crosses_box
"""The 2-D case (the baseline plans in the table plane)."""


class ZoneBaseline:
    """``ZoneBaseline(obs_layout, zone_half)(obs) -> action``: joint-position targets (rad) for the 6 actuators."""

    def __init__(self, obs_layout, zone_half=(0.06, 0.025, 0.06), margin: float = 0.025, clearance: float = 0.03,
                 max_step: float = 0.008, model=None):
        self.slices = segment_slices(obs_layout)
        require(self.slices, ("joint_pos", "goal", "zone"), "ZoneBaseline")
        self.half = np.asarray(zone_half, np.float64)
        if self.half.shape != (3,) or not np.all(self.half > 0):
            raise ValueError(f"zone_half: expected three positive half sizes (m), got {zone_half!r}")
        self.margin = float(margin)
        self.clearance = float(clearance)
        self.reach = ReachBaseline((ObsSegment("joint_pos", 6, ""), ObsSegment("goal", 3, "")), max_step=max_step,
                                   model=model)
        self.kin = self.reach.kin
        self.phase = ""
        """The phase chosen by the last call (for plots and debugging)."""

    def waypoint(self, ee: np.ndarray, goal: np.ndarray, zone: np.ndarray) -> np.ndarray:
        grown = self.half[:2] + self.margin
        safe_z = zone[2] + self.half[2] + self.clearance
        if not segment_crosses_box(ee[:2], goal[:2], zone[:2] - grown, zone[:2] + grown):
            self.phase = "reach"
            return goal
        if ee[2] < safe_z - 0.01:
            self.phase = "lift"
            return np.array([ee[0], ee[1], safe_z + 0.005])
        self.phase = "over"
        return np.array([goal[0], goal[1], safe_z + 0.005])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        q = obs[self.slices["joint_pos"]]
        ee = self.kin.fk(q)
        target = self.waypoint(ee, obs[self.slices["goal"]], obs[self.slices["zone"]])
        return self.reach(np.concatenate((q, target)))


__all__ = ["ZoneBaseline", "segment_crosses_box", "segment_crosses_rect"]
