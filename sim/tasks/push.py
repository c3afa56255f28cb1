"""Push: slide a puck across the table to a 2-D goal with the SO-101 arm.

The puck (a cylinder, radius 0.022 m, height 0.03 m, 50 g, free joint) starts 0.16–0.22 m from the base axis,
within ±35° of straight ahead; the goal lies 0.06–0.12 m from it in a direction between sideways and straight away
from the base (never toward it), 0.14–0.26 m from the base axis and within ±50°: a push the arm can make.

Observation (``obs_layout``): ``joint_pos[6]``, ``joint_vel[6]``, ``ee_pos[3]`` (fingertip), ``object_pos[3]`` (puck
center), ``goal[3]`` (on the table, at the puck's resting center height). Action: absolute joint-position targets
(rad). Success: the puck's center within ``success_threshold`` (0.03 m) of the goal in the table plane. Dense reward:
−(``ee_weight`` · fingertip→target distance + ``object_weight`` · puck→goal distance) (+ bonus, − action-rate
penalty, see ``sim.tasks.arm``), the fingertip's target set by ``shaping``:

* ``"ee_object"`` (default): the puck's center — the fingertip is pulled onto the puck from any side, so a policy is
  paid as much for touching its far side (pushing it away from the goal) as the near one;
* ``"pre_push"``: the pre-push point ``pre_push_offset`` behind the puck on the goal→puck line, at pushing height —
  where the fingertip sits while it pushes the puck toward the goal (the baseline's contact: ~0.03 m behind the
  center), so one target serves the approach and the push.

150 control steps (7.5 s at 20 Hz) per episode.
"""

from __future__ import annotations

import math

import numpy as np

from robots.spec import ObsSegment
from sim.core import DomainRandomization
from sim.tasks.arm import ArmTask

OBJECT_RADIUS = (0.16, 0.22)
"""Range of the puck's start distance from the base axis (m)."""
OBJECT_AZIMUTH = math.radians(35.0)
PUSH_DISTANCE = (0.06, 0.12)
GOAL_RADIUS = (0.14, 0.26)
GOAL_AZIMUTH = math.radians(50.0)
SHAPINGS = ("ee_object", "pre_push")
PUSH_HEIGHT = 0.018
"""Fingertip height of the pre-push point (m): the baseline's pushing height, just above the puck's center."""


class PushTask(ArmTask):
    """Push a puck to a goal on the table. obs 21, action 6, 20 Hz, 150 steps."""

    scene = "push"
    obs_layout = (
        ObsSegment("joint_pos", 6, "joint_states.position"),
        ObsSegment("joint_vel", 6, "joint_states.velocity"),
        ObsSegment("ee_pos", 3, "topic:/r2s/ee_pos"),
        ObsSegment("object_pos", 3, "topic:/r2s/object_pos"),
        ObsSegment("goal", 3, "topic:/r2s/goal"),
    )

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int | None = "overview",
        max_episode_steps: int = 150,
        reward_type: str = "dense",
        terminate_on_success: bool = False,
        success_threshold: float = 0.03,
        home_noise: float = 0.05,
        success_bonus: float = 0.1,
        action_rate_weight: float = 1e-3,
        action_mode: str = "absolute",
        delta_scale: float = 0.1,
        robot_overlay: str | None = None,
        ee_weight: float = 0.5,
        object_weight: float = 1.0,
        shaping: str = "ee_object",
        pre_push_offset: float = 0.034,
    ):
        if shaping not in SHAPINGS:
            raise ValueError(f"shaping: expected one of {SHAPINGS}, got {shaping!r}")
        if not pre_push_offset > 0:
            raise ValueError(f"pre_push_offset: expected > 0 (m behind the puck's center), got {pre_push_offset!r}")
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps, reward_type,
            terminate_on_success, home_noise, success_bonus, action_rate_weight, action_mode, delta_scale,
            robot_overlay=robot_overlay,
        )
        self.success_threshold = float(success_threshold)
        self.ee_weight = float(ee_weight)
        self.object_weight = float(object_weight)
        self.shaping = shaping
        self.pre_push_offset = float(pre_push_offset)
        m = self.model
        joint = m.joint("object")
        qa, da = int(m.jnt_qposadr[joint.id]), int(m.jnt_dofadr[joint.id])
        self._obj_qpos = self.data.qpos[qa: qa + 7]
        self._obj_qvel = self.data.qvel[da: da + 6]
        self._obj = self.data.qpos[qa: qa + 3]
        self._obj_rest = m.body_pos[m.body("object").id].copy()  # resting pose: z = half height
        self._goal[2] = self._obj_rest[2]

    def _sample_task(self, rng: np.random.Generator) -> None:
        for _ in range(1000):
            r = rng.uniform(*OBJECT_RADIUS)
            az = rng.uniform(-OBJECT_AZIMUTH, OBJECT_AZIMUTH)
            ox, oy = r * math.cos(az), r * math.sin(az)
            # Push direction: from straight away from the base (0) to sideways (±90°).
            heading = az + rng.uniform(-math.pi / 2, math.pi / 2)
            dist = rng.uniform(*PUSH_DISTANCE)
            gx, gy = ox + dist * math.cos(heading), oy + dist * math.sin(heading)
            gr = math.hypot(gx, gy)
            if GOAL_RADIUS[0] <= gr <= GOAL_RADIUS[1] and abs(math.atan2(gy, gx)) <= GOAL_AZIMUTH:
                break
        else:
            raise RuntimeError("PushTask: no feasible object/goal pair in 1000 draws (bounds inconsistent)")
        yaw = rng.uniform(-math.pi, math.pi)
        self._obj_qpos[:] = (ox, oy, self._obj_rest[2], math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2))
        self._obj_qvel[:] = 0.0
        self._goal[0], self._goal[1] = gx, gy

    def _task_terms(self) -> tuple[float, bool, dict]:
        ox, oy, oz = self._obj.tolist()
        ex, ey, ez = self._ee.tolist()
        gx, gy = self._goal[0], self._goal[1]
        d_ee = math.sqrt((ex - ox) ** 2 + (ey - oy) ** 2 + (ez - oz) ** 2)
        d_goal = math.hypot(gx - ox, gy - oy)
        info = {"distance": d_goal, "ee_object_distance": d_ee}
        if self.shaping == "pre_push":
            px, py, pz = self.pre_push_point()
            d_ee = info["ee_pre_push_distance"] = math.sqrt((ex - px) ** 2 + (ey - py) ** 2 + (ez - pz) ** 2)
        shaped = -(self.ee_weight * d_ee + self.object_weight * d_goal)
        return shaped, d_goal < self.success_threshold, info

    def pre_push_point(self) -> tuple[float, float, float]:
        """The point ``pre_push_offset`` behind the puck on the goal→puck line, at ``PUSH_HEIGHT`` (a puck on the
        goal: the point above its center)."""
        ox, oy = float(self._obj[0]), float(self._obj[1])
        ux, uy = self._goal[0] - ox, self._goal[1] - oy
        norm = math.hypot(ux, uy)
        if norm < 1e-9:
            return ox, oy, PUSH_HEIGHT
        k = self.pre_push_offset / norm
        return ox - k * ux, oy - k * uy, PUSH_HEIGHT

    def _get_obs(self) -> np.ndarray:
        return np.concatenate((self._q, self._qd, self._ee, self._obj, self._goal))

    def _make_baseline(self):
        from robots.baselines import PushBaseline

        return PushBaseline(self.obs_layout)


__all__ = ["PushTask"]
