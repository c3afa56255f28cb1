"""Push baseline: go behind the puck (opposite the goal), lower, push along the puck→goal line with IK.

A stateless state machine on the observation (joint positions, puck and goal positions):

* **push**: the fingertip is low, behind the puck and close to the puck→goal line → step along that line by
  ``push_step`` per tick, nudging back toward the line;
* **lift**: low and near the puck but not in push position → rise straight up first (so it does not sweep the puck);
* **transit**: move high to above the pre-push point, ``standoff`` behind the puck on the goal line;
* **descend**: above the pre-push point → lower to pushing height;
* **hold**: the puck is within ``done_radius`` of the goal → keep still.

Fragile on purpose: a puck that slides off the line is re-approached from scratch (up, over, down), the gripper's
pitch is only a soft objective of the IK, and each tick moves a small fixed step.
"""

from __future__ import annotations

import math

import numpy as np

from robots.baselines.ik import ArmKinematics, dls, require, segment_slices


class PushBaseline:
    """``PushBaseline(obs_layout)(obs) -> action``: joint-position targets (rad) for the 6 actuators.

    Reads ``joint_pos``, ``object_pos`` and ``goal`` from the observation; the fingertip position comes from forward
    kinematics of ``joint_pos``.
    """

    def __init__(self, obs_layout, object_radius: float = 0.022, push_height: float = 0.018,
                 travel_height: float = 0.07, standoff: float = 0.05, push_step: float = 0.006,
                 max_step: float = 0.01, line_tolerance: float = 0.012, done_radius: float = 0.01,
                 pitch: float = 1.3, pitch_weight: float = 0.05, damping: float = 0.03, max_joint_step: float = 0.15,
                 gravity_feedforward: bool = True, model=None):
        self.slices = segment_slices(obs_layout)
        require(self.slices, ("joint_pos", "object_pos", "goal"), "PushBaseline")
        self.kin = ArmKinematics(model)
        self.radius = float(object_radius)
        self.z_push = float(push_height)
        self.z_travel = float(travel_height)
        self.standoff = float(standoff)
        self.push_step = float(push_step)
        self.max_step = float(max_step)
        self.line_tol = float(line_tolerance)
        self.done_radius = float(done_radius)
        self.pitch = float(pitch)
        self.pitch_weight = float(pitch_weight)
        self.damping = float(damping)
        self.max_joint_step = float(max_joint_step)
        self.gravity_feedforward = bool(gravity_feedforward)
        self.phase = ""
        """The phase chosen by the last call (for plots and debugging)."""

    def _target(self, ee: np.ndarray, obj: np.ndarray, goal: np.ndarray) -> np.ndarray | None:
        to_goal = goal[:2] - obj[:2]
        d = math.hypot(to_goal[0], to_goal[1])
        if d < self.done_radius:
            self.phase = "hold"
            return None
        u = to_goal / d
        perp = np.array([-u[1], u[0]])
        rel = ee[:2] - obj[:2]
        along, lateral = float(rel @ u), float(rel @ perp)
        low = ee[2] < self.z_push + 0.015
        behind = -(self.radius + self.standoff + 0.02) < along < -(self.radius - 0.005)
        if low and behind and abs(lateral) < self.line_tol:
            self.phase = "push"
            xy = ee[:2] + self.push_step * u - 0.5 * lateral * perp
            return np.array([xy[0], xy[1], self.z_push])
        pre = obj[:2] - (self.radius + self.standoff) * u
        if math.hypot(*(ee[:2] - pre)) < 0.012:
            self.phase = "descend"
            return np.array([pre[0], pre[1], self.z_push])
        if ee[2] < self.z_travel - 0.015 and math.hypot(*rel) < self.radius + self.standoff + 0.03:
            self.phase = "lift"
            return np.array([ee[0], ee[1], self.z_travel])
        self.phase = "transit"
        return np.array([pre[0], pre[1], self.z_travel])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        q = obs[self.slices["joint_pos"]]
        ee, jac = self.kin.jacobian(q)
        target = self._target(ee, obs[self.slices["object_pos"]], obs[self.slices["goal"]])
        out = q.copy()
        out[5] = 0.0  # gripper closed: the two jaws make one pusher
        if target is not None:
            err = target - ee
            dist = float(np.linalg.norm(err))
            if dist > self.max_step:
                err *= self.max_step / dist
            # Soft objective on the gripper's pitch (a fourth task row: lift + elbow + wrist flex).
            w = self.pitch_weight
            jac4 = np.vstack([jac, w * np.array([0.0, 1.0, 1.0, 1.0, 0.0])])
            err4 = np.append(err, w * float(np.clip(self.pitch - self.kin.pitch(q), -0.1, 0.1)))
            out[:5] += np.clip(dls(jac4, err4, self.damping), -self.max_joint_step, self.max_joint_step)
        if self.gravity_feedforward:
            out += self.kin.gravity_offset(out)
        return self.kin.clip(out)
