"""Reach: move the SO-101 fingertip (``ee_site``) to a goal point above the table.

Goals are reachable by construction: each is the fingertip position of a random joint configuration drawn from the
joint ranges shrunk by a margin, kept only if it lies in the workspace region (0.03–0.25 m above the table,
0.10–0.32 m from the base axis) with the elbow and wrist above the table and the elbow not folded onto itself.

Observation (``obs_layout``): ``joint_pos[6]``, ``joint_vel[6]``, ``ee_pos[3]`` (fingertip, forward kinematics of
``joint_pos``), ``goal[3]``. Action: absolute joint-position targets (rad). Success: fingertip within
``success_threshold`` (0.02 m) of the goal. Dense reward: −distance (+ bonus, − action-rate penalty, see
``sim.tasks.arm``). 100 control steps (5 s at 20 Hz) per episode.
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

from robots.so101 import JOINT_NAMES
from robots.spec import ObsSegment
from sim.core import DomainRandomization
from sim.tasks.arm import ArmTask

# Joint-space box the goal configurations are drawn from (rad): the limits minus a margin, elbow not folded flat.
_GOAL_Q_LOW = np.array([-1.3, -0.8, -1.3, -1.5])
_GOAL_Q_HIGH = np.array([1.3, 1.45, 1.25, 1.5])
GOAL_Z = (0.03, 0.25)
"""Height range of goals above the table (m)."""
GOAL_RADIUS = (0.10, 0.32)
"""Range of goal distances from the base's vertical axis (m)."""


class ReachTask(ArmTask):
    """Reach a 3-D goal with the fingertip. obs 18, action 6, 20 Hz, 100 steps."""

    scene = "reach"
    obs_layout = (
        ObsSegment("joint_pos", 6, "joint_states.position"),
        ObsSegment("joint_vel", 6, "joint_states.velocity"),
        ObsSegment("ee_pos", 3, "topic:/r2s/ee_pos"),
        ObsSegment("goal", 3, "topic:/r2s/goal"),
    )

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 640,
        height: int = 480,
        camera: str | int | None = "overview",
        max_episode_steps: int = 100,
        reward_type: str = "dense",
        terminate_on_success: bool = False,
        success_threshold: float = 0.02,
        home_noise: float = 0.05,
        success_bonus: float = 0.1,
        action_rate_weight: float = 1e-3,
        action_mode: str = "absolute",
        delta_scale: float = 0.1,
        robot_overlay: str | None = None,
    ):
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps, reward_type,
            terminate_on_success, home_noise, success_bonus, action_rate_weight, action_mode, delta_scale,
            robot_overlay=robot_overlay,
        )
        self.success_threshold = float(success_threshold)
        m = self.model
        # A private MjData for goal sampling (forward kinematics of random configurations).
        self._fk_data = mujoco.MjData(m)
        self._fk_q = self._fk_data.qpos[m.jnt_qposadr[m.joint(JOINT_NAMES[0]).id]:][:4]
        self._fk_ee = self._fk_data.site_xpos[m.site("ee_site").id]
        self._fk_elbow = self._fk_data.xpos[m.body("forearm").id]
        self._fk_wrist = self._fk_data.xpos[m.body("wrist").id]

    def _sample_task(self, rng: np.random.Generator) -> None:
        m, d = self.model, self._fk_data
        for _ in range(1000):
            self._fk_q[:] = rng.uniform(_GOAL_Q_LOW, _GOAL_Q_HIGH)
            mujoco.mj_kinematics(m, d)
            x, y, z = self._fk_ee.tolist()
            r = math.hypot(x, y)
            if (GOAL_Z[0] <= z <= GOAL_Z[1] and GOAL_RADIUS[0] <= r <= GOAL_RADIUS[1]
                    and self._fk_elbow[2] > 0.04 and self._fk_wrist[2] > 0.04):
                self._goal[:] = self._fk_ee
                return
        raise RuntimeError("ReachTask: no reachable goal found in 1000 draws (workspace bounds inconsistent)")

    def _task_terms(self) -> tuple[float, bool, dict]:
        dx, dy, dz = (self._ee - self._goal).tolist()
        dist = math.sqrt(dx * dx + dy * dy + dz * dz)
        return -dist, dist < self.success_threshold, {"distance": dist}

    def _get_obs(self) -> np.ndarray:
        return np.concatenate((self._q, self._qd, self._ee, self._goal))

    def _make_baseline(self):
        from robots.baselines import ReachBaseline

        return ReachBaseline(self.obs_layout)


__all__ = ["ReachTask"]
