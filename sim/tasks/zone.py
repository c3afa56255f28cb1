"""Zone: reach a low goal with the SO-101 fingertip without entering a keep-out box that stands between home and goal.

The goal lies low beside the arm (0.03–0.05 m above the table, 0.14–0.20 m to the left or right of the base's
forward axis, 0.14–0.24 m ahead); the keep-out box (half sizes 0.06 × 0.025 × 0.06 m, from the table to 0.12 m,
read from the scene's geom ``zone``) stands ``ZONE_OFFSET`` (0.07 m) before the goal on the home→goal side, so the
straight line from the home fingertip (about 0.16 m high) to the goal runs through it: the arm must go over (or
around) it. The box is drawn but has no contacts; the fingertip (``ee_site``) is what must stay out.

Two ways to treat entering (``zone_mode``):

* ``"cost"`` (default, as the agency-transfer paper's avoidance benchmark): every control step whose fingertip motion
  touches the box costs ``zone_penalty`` (0.5, five times a typical step's −distance) and the episode goes on; the
  goal still counts as reached (``success``), and ``info["zone_entries"]`` counts the episode's touching steps, so
  avoidance (episodes with none) is reported beside goal-reaching.
* ``"terminate"``: entering ends the episode as a failure: ``terminated=True``, ``success`` False, and the step's
  reward is ``−zone_penalty · (steps left + 1)`` (at least the −distance any step pays, so cutting an episode short
  by entering never pays).

A step touches the box when the segment from the fingertip's position before the control step to after it crosses
the box (a slab test), so a fast step cannot tunnel through; ``info["entered_zone"]`` flags that step.

Observation (``obs_layout``): ``joint_pos[6]``, ``joint_vel[6]``, ``ee_pos[3]``, ``goal[3]``, ``zone[3]`` (the box's
center). Success: fingertip within ``success_threshold`` (0.02 m) of the goal; the episode ends there
(``terminate_on_success`` defaults to True here, so the episode's length is its steps-to-goal). Dense reward:
−distance (+ bonus on success, − action-rate penalty, see ``sim.tasks.arm``). 100 control steps (5 s at 20 Hz).
``action_mode="delta"`` as the other arm tasks.
"""

from __future__ import annotations

import math

import numpy as np

from robots.baselines.zone import segment_crosses_box
from robots.spec import ObsSegment
from sim.core import DomainRandomization
from sim.tasks.arm import ArmTask

GOAL_X = (0.14, 0.24)
"""Range of the goal's distance ahead of the base (m)."""
GOAL_SIDE = (0.14, 0.20)
"""Range of the goal's distance left or right of the base's forward axis (m); the side is drawn too."""
GOAL_Z = (0.03, 0.05)
ZONE_OFFSET = 0.07
"""Distance from the goal to the box's center, toward the base's forward axis (m)."""


def segment_hits_box(p0: np.ndarray, p1: np.ndarray, center: np.ndarray, half: np.ndarray) -> bool:
    """Whether the segment p0→p1 touches the axis-aligned box ``center ± half`` (the baseline's slab test)."""
    return segment_crosses_box(p0, p1, center - half, center + half)


class ZoneTask(ArmTask):
    """Reach a low goal around a keep-out box. obs 21, action 6, 20 Hz, 100 steps; entering the box costs (or ends
    the episode, ``zone_mode="terminate"``)."""

    scene = "zone"
    obs_layout = (
        ObsSegment("joint_pos", 6, "joint_states.position"),
        ObsSegment("joint_vel", 6, "joint_states.velocity"),
        ObsSegment("ee_pos", 3, "topic:/r2s/ee_pos"),
        ObsSegment("goal", 3, "topic:/r2s/goal"),
        ObsSegment("zone", 3, "topic:/r2s/zone"),
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
        terminate_on_success: bool = True,
        success_threshold: float = 0.02,
        home_noise: float = 0.05,
        success_bonus: float = 0.1,
        action_rate_weight: float = 1e-3,
        action_mode: str = "absolute",
        delta_scale: float = 0.1,
        robot_overlay: str | None = None,
        zone_penalty: float = 0.5,
        zone_mode: str = "cost",
    ):
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps, reward_type,
            terminate_on_success, home_noise, success_bonus, action_rate_weight, action_mode, delta_scale,
            robot_overlay=robot_overlay,
        )
        if not zone_penalty >= 0:
            raise ValueError(f"zone_penalty: expected >= 0 (reward per remaining step), got {zone_penalty!r}")
        if zone_mode not in ("cost", "terminate"):
            raise ValueError(f"zone_mode: expected 'cost' or 'terminate', got {zone_mode!r}")
        self.zone_mode = zone_mode
        self.success_threshold = float(success_threshold)
        self.zone_penalty = float(zone_penalty)
        m = self.model
        self.zone_half = m.geom_size[m.geom("zone").id].astype(np.float64).copy()
        self._zone = np.zeros(3)
        self._zone_marker = self.data.mocap_pos[m.body_mocapid[m.body("zone").id]]
        self._entered = False
        self._entries = 0

    def _sample_task(self, rng: np.random.Generator) -> None:
        side = 1.0 if rng.uniform() < 0.5 else -1.0
        self._goal[:] = (rng.uniform(*GOAL_X), side * rng.uniform(*GOAL_SIDE), rng.uniform(*GOAL_Z))
        self._zone[:] = (self._goal[0], self._goal[1] - side * ZONE_OFFSET, self.zone_half[2])
        self._zone_marker[:] = self._zone
        self._entered = False
        self._entries = 0

    def _pre_step(self) -> dict:
        return {"ee": self._ee.copy()}

    def _task_terms(self) -> tuple[float, bool, dict]:
        dx, dy, dz = (self._ee - self._goal).tolist()
        dist = math.sqrt(dx * dx + dy * dy + dz * dz)
        failed = self._entered and self.zone_mode == "terminate"
        return -dist, dist < self.success_threshold and not failed, {"distance": dist}

    def _reward(self, action: np.ndarray, before: dict) -> tuple[float, bool, dict]:
        import mujoco

        mujoco.mj_kinematics(self.model, self.data)  # the fingertip after the step (the base refreshes it too)
        self._entered = segment_hits_box(before["ee"], self._ee, self._zone, self.zone_half)
        self._entries += self._entered
        reward, terminated, info = super()._reward(action, before)
        info["entered_zone"], info["zone_entries"] = self._entered, self._entries
        if self._entered and self.zone_mode == "cost":
            return reward - self.zone_penalty, terminated, info
        if self._entered:
            steps_left = self.max_episode_steps - self._elapsed - 1
            return -self.zone_penalty * (steps_left + 1), True, info
        return reward, terminated, info

    def _get_obs(self) -> np.ndarray:
        return np.concatenate((self._q, self._qd, self._ee, self._goal, self._zone))

    def _make_baseline(self):
        from robots.baselines import ZoneBaseline

        return ZoneBaseline(self.obs_layout, zone_half=tuple(self.zone_half))

    @property
    def zone(self) -> np.ndarray:
        return self._zone.copy()


__all__ = ["ZoneTask", "segment_hits_box"]
