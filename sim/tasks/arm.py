"""Shared base of the SO-101 arm tasks (reach, push): model, action space, home reset, reward bookkeeping.

Actions are absolute joint-position targets (rad) for the 6 position servos, in the spec's joint order; the action
space is the joints' position limits and a finite action outside it is clipped (``MujocoTask`` checks and clips).
One action holds for ``frame_skip`` = 25 physics steps of 2 ms: 20 Hz, the spec's control rate.

After the physics step the kinematics are refreshed (``mj_kinematics``), so ``ee_pos`` in the observation is exactly
the forward kinematics of the observed ``joint_pos`` (``mj_step`` leaves positions one substep stale) — what the
robot side computes from ``/joint_states``.

Reward: ``reward_type="dense"`` is the task's shaped term + ``success_bonus`` on success − ``action_rate_weight`` ·
‖a − a_prev‖²; ``"sparse"`` is 1.0 on success, else 0. ``info`` carries ``success`` and ``goal_reached`` (the same
flag) and the task's distances. ``terminate_on_success`` ends the episode at the first success (default: it runs to
the time limit, and staying at the goal keeps ``success`` True).
"""

from __future__ import annotations

import copy
from functools import cache

import mujoco
import numpy as np

from robots.so101 import EE_SITE, HOME, SO101, load_model
from robots.spec import RobotSpec
from sim.core import DomainRandomization, MujocoTask


@cache
def _shared_model(scene: str) -> mujoco.MjModel:
    """One compiled model per scene and process, shared read-only by unrandomised envs."""
    return load_model(scene)


class ArmTask(MujocoTask):
    """Base of the SO-101 tasks. Subclasses set ``scene``, ``obs_layout`` and implement ``_sample_task``,
    ``_task_terms`` and ``_get_obs``."""

    robot: RobotSpec = SO101
    scene: str

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = "overview",
        max_episode_steps: int = 100,
        reward_type: str = "dense",
        terminate_on_success: bool = False,
        home_noise: float = 0.05,
        success_bonus: float = 0.1,
        action_rate_weight: float = 1e-3,
    ):
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type: expected 'dense' or 'sparse', got {reward_type!r}")
        model = _shared_model(self.scene)
        if render_mode is not None and (width > model.vis.global_.offwidth or height > model.vis.global_.offheight):
            model = copy.deepcopy(model)
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        frame_skip = int(round(1.0 / (SO101.control_rate_hz * model.opt.timestep)))
        jids = [model.joint(n).id for n in SO101.joint_names]
        lo, hi = model.jnt_range[jids, 0], model.jnt_range[jids, 1]
        super().__init__(
            model, frame_skip, lo, hi, max_episode_steps, randomization=randomization, render_mode=render_mode,
            width=width, height=height, camera=camera,
        )
        self.reward_type = reward_type
        self.terminate_on_success = bool(terminate_on_success)
        self.home_noise = float(home_noise)
        self.success_bonus = float(success_bonus)
        self.action_rate_weight = float(action_rate_weight)
        self.home = np.array(HOME, dtype=np.float64)
        self._lo, self._hi = lo.astype(np.float64), hi.astype(np.float64)

        m, d = self.model, self.data
        qadr = m.jnt_qposadr[jids]
        dadr = m.jnt_dofadr[jids]
        if not (np.all(np.diff(qadr) == 1) and np.all(np.diff(dadr) == 1)):
            raise RuntimeError(f"scene {self.scene!r}: arm joints must be contiguous in qpos/qvel")
        # Views onto MjData buffers (stable for the life of self.data): no lookups per step.
        self._q = d.qpos[qadr[0]: qadr[0] + len(jids)]
        self._qd = d.qvel[dadr[0]: dadr[0] + len(jids)]
        self._ee = d.site_xpos[m.site(EE_SITE).id]
        self._goal = np.zeros(3)
        self._goal_marker = d.mocap_pos[m.body_mocapid[m.body("goal").id]]
        self._prev_action = self.home.copy()
        self._baseline_controller = None

    # ---- subclass hooks ------------------------------------------------------------------------------------------
    def _sample_task(self, rng: np.random.Generator) -> None:
        """Set ``self._goal`` (and task objects in ``self.data``) for a new episode."""
        raise NotImplementedError

    def _task_terms(self) -> tuple[float, bool, dict]:
        """(dense shaped term, success, info) from the current (post-step, kinematics-refreshed) state."""
        raise NotImplementedError

    def _make_baseline(self):
        raise NotImplementedError

    # ---- MujocoTask hooks ----------------------------------------------------------------------------------------
    def _reset_model(self) -> None:
        rng = self.np_random
        q = self.home + rng.uniform(-self.home_noise, self.home_noise, size=self.home.shape)
        np.clip(q, self._lo, self._hi, out=q)
        self._q[:] = q
        self.data.ctrl[:] = q
        self._prev_action[:] = q
        self._sample_task(rng)
        self._goal_marker[:] = self._goal

    def _reward(self, action: np.ndarray, before: dict) -> tuple[float, bool, dict]:
        mujoco.mj_kinematics(self.model, self.data)
        shaped, success, info = self._task_terms()
        info["success"] = info["goal_reached"] = success
        if self.reward_type == "sparse":
            reward = 1.0 if success else 0.0
        else:
            da = action - self._prev_action
            reward = shaped + (self.success_bonus if success else 0.0) - self.action_rate_weight * float(da @ da)
        self._prev_action[:] = action
        return reward, success and self.terminate_on_success, info

    def baseline(self, obs: np.ndarray) -> np.ndarray:
        """The hand-written controller of ``robots.baselines`` for this task, on ``obs`` as this task returns it."""
        if self._baseline_controller is None:
            self._baseline_controller = self._make_baseline()
        return self._baseline_controller(obs)

    # ---- conveniences --------------------------------------------------------------------------------------------
    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    @property
    def ee_pos(self) -> np.ndarray:
        return self._ee.copy()
