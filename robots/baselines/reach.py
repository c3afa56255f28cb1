"""Reach baseline: damped-least-squares IK on the fingertip position, a small fixed step per control tick.

Far from the goal, each tick moves the joint targets one damped-least-squares step from the observed joint
positions, the fingertip's step capped at ``max_step`` (8 mm): about 0.16 m/s where the servos could carry it at over
1 m/s. Within ``settle_radius`` of the goal it commands the IK solution itself (iterated from the observed pose on a
private ``MjData``). Every target carries a gravity feed-forward offset (the model's gravity torque / servo kp) so the
servos do not sag below it. The IK ignores the table and the arm's own links; a delayed command halves its progress
and can stall it. It reaches most goals, slowly: the reference a learned policy should beat.
"""

from __future__ import annotations

import numpy as np

from robots.baselines.ik import ArmKinematics, dls, require, segment_slices


class ReachBaseline:
    """``ReachBaseline(obs_layout)(obs) -> action``: joint-position targets (rad) for the 6 actuators.

    Reads ``joint_pos`` and ``goal`` from the observation (the fingertip position is recomputed from ``joint_pos``
    by forward kinematics, as on the robot). Stateless: each call depends on ``obs`` only, so one controller can
    serve many environments.
    """

    def __init__(self, obs_layout, max_step: float = 0.008, max_joint_step: float = 0.15, damping: float = 0.03,
                 settle_radius: float = 0.03, gravity_feedforward: bool = True, gripper: float = 0.0, model=None):
        self.slices = segment_slices(obs_layout)
        require(self.slices, ("joint_pos", "goal"), "ReachBaseline")
        self.kin = ArmKinematics(model)
        self.max_step = float(max_step)
        self.max_joint_step = float(max_joint_step)
        self.damping = float(damping)
        self.settle_radius = float(settle_radius)
        self.gravity_feedforward = bool(gravity_feedforward)
        self.gripper = float(gripper)

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        obs = np.asarray(obs, dtype=np.float64)
        q = obs[self.slices["joint_pos"]]
        goal = obs[self.slices["goal"]]
        ee, jac = self.kin.jacobian(q)
        err = goal - ee
        dist = float(np.linalg.norm(err))
        if dist < self.settle_radius:
            target = self.kin.solve(q, goal, damping=self.damping)
            target[:5] = q[:5] + np.clip(target[:5] - q[:5], -self.max_joint_step, self.max_joint_step)
        else:
            target = q.copy()
            step = dls(jac, err * (self.max_step / dist), self.damping)
            target[:5] += np.clip(step, -self.max_joint_step, self.max_joint_step)
        target[5] = self.gripper
        if self.gravity_feedforward:
            target += self.kin.gravity_offset(target)
        return self.kin.clip(target)
