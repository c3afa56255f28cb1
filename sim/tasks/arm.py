"""Shared base of the SO-101 arm tasks (reach, push): model, action space, home reset, reward bookkeeping.

Actions are absolute joint-position targets (rad) for the 6 position servos, in the spec's joint order; the action
space is the joints' position limits and a finite action outside it is clipped (``MujocoTask`` checks and clips).
With ``action_mode="delta"`` the action is in [−1, 1]⁶ and moves the target at most ``delta_scale`` rad per step
from the measured joint positions (``delta_to_absolute``); the action-rate penalty is on the joint target either way.
One action holds for ``frame_skip`` = 25 physics steps of 2 ms: 20 Hz, the spec's control rate.

After the physics step the kinematics are refreshed (``mj_kinematics``), so ``ee_pos`` in the observation is exactly
the forward kinematics of the observed ``joint_pos`` (``mj_step`` leaves positions one substep stale) — what the
robot side computes from ``/joint_states``.

Reward: ``reward_type="dense"`` is the task's shaped term + ``success_bonus`` on success − ``action_rate_weight`` ·
‖a − a_prev‖²; ``"sparse"`` is 1.0 on success, else 0. ``info`` carries ``success`` and ``goal_reached`` (the same
flag) and the task's distances. ``terminate_on_success`` ends the episode at the first success (default: it runs to
the time limit, and staying at the goal keeps ``success`` True).

Robot overlay (``robots.overlay``, from ``r2s sysid``): ``robot_overlay`` (a file; None: the one ``R2S_ROBOT_OVERLAY``
names, if any; "": none) sets the model's calibrated joint parameters, and its ``command_delay_substeps`` delays each
joint target by that many of the 2 ms physics substeps (``sim.core.CommandDelay``): within a control step the
previous target holds for the first N substeps, as ``sim.sysid`` replays a log, so a policy trained with the overlay
sees the delay the real robot has.
"""

from __future__ import annotations

import copy
from functools import cache

import mujoco
import numpy as np

from robots.overlay import command_delay_substeps, load_overlay, overlay_path
from robots.so101 import EE_SITE, HOME, SO101, load_model
from robots.spec import RobotSpec
from sim.core import DomainRandomization, MujocoTask


ACTION_MODES = ("absolute", "delta")
"""``absolute``: the action is the joint-position target (rad). ``delta``: the action in [−1, 1]⁶ moves the target
from the measured joint positions by at most ``delta_scale`` rad per control step — a feedback-shaped action that RL
learns much faster; the robot still receives absolute targets (the exported policy converts, see ``stack.export``)."""


def delta_to_absolute(joint_pos, action, scale: float, low, high) -> np.ndarray:
    """A delta action → the absolute joint target it stands for: ``clip(q + scale · clip(a, −1, 1), low, high)``.
    The one formula training, export and the robot runtime share."""
    return np.clip(np.asarray(joint_pos) + scale * np.clip(action, -1.0, 1.0), low, high)


def absolute_to_delta(joint_pos, target, scale: float) -> np.ndarray:
    """The delta action that moves toward ``target`` from ``joint_pos`` (saturated at ±1)."""
    return np.clip((np.asarray(target) - np.asarray(joint_pos)) / scale, -1.0, 1.0)


@cache
def _shared_model(scene: str, overlay: str = "") -> mujoco.MjModel:
    """One compiled model per scene, robot overlay (``robots.overlay``; "": none) and process, shared read-only by
    unrandomised envs."""
    return load_model(scene, overlay=overlay)


@cache
def _shared_overlay(path: str) -> dict:
    """The overlay file ``path`` as read (and checked) once per process, beside its ``_shared_model``."""
    return load_overlay(path, SO101.name)


class ArmTask(MujocoTask):
    """Base of the SO-101 tasks. Subclasses set ``scene``, ``obs_layout`` and implement ``_sample_task``,
    ``_task_terms`` and ``_get_obs``."""

    robot: RobotSpec = SO101
    scene: str

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
        home_noise: float = 0.05,
        success_bonus: float = 0.1,
        action_rate_weight: float = 1e-3,
        action_mode: str = "absolute",
        delta_scale: float = 0.1,
        robot_overlay: str | None = None,
    ):
        if action_mode not in ACTION_MODES:
            raise ValueError(f"action_mode: expected one of {ACTION_MODES}, got {action_mode!r}")
        if not delta_scale > 0:
            raise ValueError(f"delta_scale: expected > 0 (rad per control step), got {delta_scale!r}")
        if reward_type not in ("dense", "sparse"):
            raise ValueError(f"reward_type: expected 'dense' or 'sparse', got {reward_type!r}")
        overlay = overlay_path() if robot_overlay is None else str(robot_overlay)
        delay = command_delay_substeps(_shared_overlay(overlay), overlay) if overlay else 0
        model = _shared_model(self.scene, overlay)
        if render_mode is not None and (width > model.vis.global_.offwidth or height > model.vis.global_.offheight):
            model = copy.deepcopy(model)
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        frame_skip = int(round(1.0 / (SO101.control_rate_hz * model.opt.timestep)))
        jids = [model.joint(n).id for n in SO101.joint_names]
        lo, hi = model.jnt_range[jids, 0], model.jnt_range[jids, 1]
        if action_mode == "delta":
            act_lo, act_hi = -np.ones(len(jids)), np.ones(len(jids))
        else:
            act_lo, act_hi = lo, hi
        super().__init__(
            model, frame_skip, act_lo, act_hi, max_episode_steps, randomization=randomization, render_mode=render_mode,
            width=width, height=height, camera=camera, command_delay_substeps=delay,
        )
        self.robot_overlay = overlay
        """The overlay file this task's model carries ("": none)."""
        self.reward_type = reward_type
        self.terminate_on_success = bool(terminate_on_success)
        self.home_noise = float(home_noise)
        self.success_bonus = float(success_bonus)
        self.action_rate_weight = float(action_rate_weight)
        self.action_mode = action_mode
        self.delta_scale = float(delta_scale)
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
        self._target = self.home.copy()
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

    def _apply_action(self, action: np.ndarray) -> None:
        if self.action_mode == "delta":
            action = delta_to_absolute(self._q, action, self.delta_scale, self._lo, self._hi)
        self.data.ctrl[:] = action
        self._target = action

    def _reward(self, action: np.ndarray, before: dict) -> tuple[float, bool, dict]:
        action = self._target  # the joint target sent, in either action mode
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
        """The hand-written controller of ``robots.baselines`` for this task, on ``obs`` as this task returns it, in
        this task's action mode (a delta action where the joint target is reachable in one step, else saturated)."""
        if self._baseline_controller is None:
            self._baseline_controller = self._make_baseline()
        target = self._baseline_controller(obs)
        if self.action_mode == "delta":
            return absolute_to_delta(obs[: self.home.size], target, self.delta_scale)
        return target

    # ---- conveniences --------------------------------------------------------------------------------------------
    @property
    def joint_low(self) -> np.ndarray:
        """The joints' position limits (rad): the bounds of an absolute target in either action mode."""
        return self._lo.copy()

    @property
    def joint_high(self) -> np.ndarray:
        return self._hi.copy()

    @property
    def goal(self) -> np.ndarray:
        return self._goal.copy()

    @property
    def ee_pos(self) -> np.ndarray:
        return self._ee.copy()
