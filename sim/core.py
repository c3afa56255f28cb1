"""The base of every r2s MuJoCo task: a Gymnasium env with input checks, domain randomisation and a time limit.

A subclass provides the model and four hooks (``_reset_model``, ``_get_obs``, ``_reward``, ``_apply_action``);
this class owns the parts every task must get right the same way: action validation, the frame skip, seeding,
randomisation and rendering.
"""

from __future__ import annotations

import abc
import copy
import os
from collections import deque
from dataclasses import dataclass, field, fields

import gymnasium as gym
import mujoco
import numpy as np

from robots.spec import ObsSegment, RobotSpec


class ActionError(ValueError):
    """An action was refused before it touched the simulation (wrong shape, NaN/inf)."""


class NoBaseline(RuntimeError):
    """The task offers no hand-written baseline controller."""


Range = tuple[float, float]


@dataclass
class DomainRandomization:
    """Per-episode randomisation of physics and sensing. Every field is off (None / 0) by default.

    Scale ranges multiply the model's nominal value by a factor drawn uniformly from ``(low, high)`` at each reset,
    from the env's own seeded generator, so a seeded env is reproducible with randomisation on.
    """

    friction: Range | None = None
    """Scale of every geom's sliding friction."""
    mass: Range | None = None
    """Scale of every body's mass (and inertia, so the body's density scales consistently)."""
    joint_damping: Range | None = None
    """Scale of every DoF's damping."""
    armature: Range | None = None
    """Scale of every DoF's armature (rotor inertia)."""
    actuator_gain: Range | None = None
    """Scale of every actuator's gain (for position servos kp: gain and bias scale together)."""
    obs_noise_std: float = 0.0
    """Std of Gaussian noise added to every observation."""
    action_latency_steps: int = 0
    """Maximum action delay in control steps; each episode draws a delay in [0, this]."""

    @property
    def enabled(self) -> bool:
        return any(getattr(self, f.name) not in (None, 0, 0.0) for f in fields(self))

    @classmethod
    def from_dict(cls, d: dict | None) -> "DomainRandomization":
        if not d:
            return cls()
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"randomization: unknown field(s) {sorted(unknown)}; expected some of {sorted(known)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def _scale(rng: np.random.Generator, rng_range: Range | None) -> float:
    return 1.0 if rng_range is None else float(rng.uniform(*rng_range))


@dataclass
class _Nominal:
    """Nominal model parameters that randomisation scales from (never from an already-randomised value)."""

    friction: np.ndarray
    mass: np.ndarray
    inertia: np.ndarray
    damping: np.ndarray
    armature: np.ndarray
    gain: np.ndarray
    bias: np.ndarray
    extra: dict = field(default_factory=dict)

    @classmethod
    def of(cls, m: mujoco.MjModel) -> "_Nominal":
        return cls(
            m.geom_friction.copy(), m.body_mass.copy(), m.body_inertia.copy(), m.dof_damping.copy(),
            m.dof_armature.copy(), m.actuator_gainprm.copy(), m.actuator_biasprm.copy(),
        )


class CommandDelay:
    """A command delay line in physics substeps: a ``ctrl`` vector sent takes effect ``delay`` substeps later; the one
    in force before holds until then (a robot's transport and servo-firmware latency, ``command_delay_substeps`` of a
    robot overlay). Command ``i`` sent at substep ``i·F`` therefore acts from substep ``i·F + delay`` on — what
    ``sim.sysid.substep_controls`` replays, so the fitted delay means the same here.

    ``reset(data)`` takes ``data.ctrl`` as the command in force; ``send(data)`` queues ``data.ctrl`` (as an action hook
    left it) and puts the command in force back; ``step(model, data, n)`` advances ``n`` substeps, switching ``ctrl``
    at the substeps where queued commands fall due."""

    def __init__(self, delay_substeps: int):
        if isinstance(delay_substeps, bool) or int(delay_substeps) != delay_substeps or delay_substeps < 0:
            raise ValueError(f"command_delay_substeps: expected an integer >= 0, got {delay_substeps!r}")
        self.delay = int(delay_substeps)
        self._queue: deque[tuple[int, np.ndarray]] = deque()
        self._t = 0
        self._in_force: np.ndarray | None = None

    def reset(self, data: mujoco.MjData) -> None:
        self._queue.clear()
        self._t = 0
        self._in_force = data.ctrl.copy()

    def send(self, data: mujoco.MjData) -> None:
        if self._in_force is None:
            self.reset(data)
        self._queue.append((self._t + self.delay, data.ctrl.copy()))
        data.ctrl[:] = self._in_force

    def step(self, model: mujoco.MjModel, data: mujoco.MjData, nstep: int) -> None:
        end = self._t + int(nstep)
        q = self._queue
        while self._t < end:
            while q and q[0][0] <= self._t:
                self._in_force = q.popleft()[1]
                data.ctrl[:] = self._in_force
            until = min(end, q[0][0]) if q else end
            mujoco.mj_step(model, data, nstep=until - self._t)
            self._t = until


class MujocoTask(gym.Env, abc.ABC):
    """Base class. Subclasses set ``robot``, ``obs_layout`` and implement the four hooks.

    Action handling (documented, tested): an action of the wrong shape or with NaN/inf raises ``ActionError`` and
    leaves the state untouched; a finite action outside ``action_space`` is clipped to its bounds.
    The time limit lives in the task: ``truncated`` is True at ``max_episode_steps``.
    ``command_delay_substeps`` > 0: the ``ctrl`` an action sets takes effect that many physics substeps into (or
    after) its control step, the previous one holding until then (``CommandDelay``; 0: at once, the step unchanged).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    robot: RobotSpec
    obs_layout: tuple[ObsSegment, ...]

    def __init__(
        self,
        model: mujoco.MjModel,
        frame_skip: int,
        action_low: np.ndarray,
        action_high: np.ndarray,
        max_episode_steps: int,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = None,
        command_delay_substeps: int = 0,
    ):
        self.command_delay = CommandDelay(command_delay_substeps) if command_delay_substeps else None
        self.randomization = (
            randomization if isinstance(randomization, DomainRandomization)
            else DomainRandomization.from_dict(randomization)
        )
        # A randomised env owns its model copy; an unrandomised one may share the (read-only) model.
        self.model = copy.deepcopy(model) if self.randomization.enabled else model
        self.data = mujoco.MjData(self.model)
        self._nominal = _Nominal.of(self.model)
        self.frame_skip = int(frame_skip)
        self.max_episode_steps = int(max_episode_steps)
        self.action_space = gym.spaces.Box(
            np.asarray(action_low, np.float32), np.asarray(action_high, np.float32), dtype=np.float32
        )
        obs_dim = sum(s.size for s in self.obs_layout)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, shape=(obs_dim,), dtype=np.float64)
        self.render_mode = render_mode
        self._render_size = (height, width)
        self._camera = camera
        self._renderer: mujoco.Renderer | None = None
        self._elapsed = 0
        self._latency = 0
        self._action_queue: deque[np.ndarray] = deque()
        self.metadata = {**self.metadata, "render_fps": int(round(1.0 / self.dt))}

    # ---- hooks for subclasses ------------------------------------------------------------------------------------
    @abc.abstractmethod
    def _reset_model(self) -> None:
        """Set ``self.data`` qpos/qvel (and task state such as goals) for a new episode from ``self.np_random``."""

    @abc.abstractmethod
    def _get_obs(self) -> np.ndarray:
        """The observation, laid out as ``obs_layout`` says."""

    @abc.abstractmethod
    def _reward(self, action: np.ndarray, before: dict) -> tuple[float, bool, dict]:
        """Return (reward, terminated, info) after the physics step; ``before`` is what ``_pre_step`` saved."""

    def _pre_step(self) -> dict:
        """Quantities the reward needs from before the physics step (e.g. the torso x position)."""
        return {}

    def _apply_action(self, action: np.ndarray) -> None:
        self.data.ctrl[:] = action

    def baseline(self, obs: np.ndarray) -> np.ndarray:
        """Hand-written controller ``baseline(obs) -> action`` where the task offers one."""
        raise NoBaseline(f"task {type(self).__name__} has no baseline controller")

    @property
    def has_baseline(self) -> bool:
        return type(self).baseline is not MujocoTask.baseline

    # ---- Gymnasium API -------------------------------------------------------------------------------------------
    @property
    def command_delay_substeps(self) -> int:
        """Physics substeps between an action's ``ctrl`` and its effect (0: none)."""
        return 0 if self.command_delay is None else self.command_delay.delay

    @property
    def dt(self) -> float:
        """Control period: physics timestep × frame skip."""
        return float(self.model.opt.timestep) * self.frame_skip

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._randomize()
        mujoco.mj_resetData(self.model, self.data)
        self._reset_model()
        mujoco.mj_forward(self.model, self.data)
        if self.command_delay is not None:
            self.command_delay.reset(self.data)  # the reset's ctrl holds until the first command falls due
        self._elapsed = 0
        self._action_queue.clear()
        return self._observe(), {}

    def step(self, action):
        action = self.check_action(action)
        if self._latency:
            self._action_queue.append(action)
            # Until the queue fills, the robot keeps executing the first command it received.
            action = self._action_queue.popleft() if len(self._action_queue) > self._latency else self._action_queue[0]
        before = self._pre_step()
        self._apply_action(action)
        if self.command_delay is None:
            mujoco.mj_step(self.model, self.data, nstep=self.frame_skip)
        else:
            self.command_delay.send(self.data)
            self.command_delay.step(self.model, self.data, self.frame_skip)
        reward, terminated, info = self._reward(action, before)
        self._elapsed += 1
        truncated = self._elapsed >= self.max_episode_steps and not terminated
        return self._observe(), float(reward), bool(terminated), bool(truncated), info

    def check_action(self, action) -> np.ndarray:
        a = np.asarray(action, dtype=np.float64)
        if a.shape != self.action_space.shape:
            raise ActionError(
                f"action has shape {a.shape}; task {type(self).__name__} expects {self.action_space.shape}"
            )
        if not np.all(np.isfinite(a)):
            bad = np.flatnonzero(~np.isfinite(a)).tolist()
            raise ActionError(f"action has NaN/inf at index {bad}: {a.tolist()}; refused, state unchanged")
        return np.clip(a, self.action_space.low, self.action_space.high)

    def _observe(self) -> np.ndarray:
        obs = self._get_obs()
        std = self.randomization.obs_noise_std
        if std:
            obs = obs + self.np_random.normal(0.0, std, size=obs.shape)
        return obs

    def _randomize(self) -> None:
        r, m, n, rng = self.randomization, self.model, self._nominal, self.np_random
        if not r.enabled:
            return
        m.geom_friction[:, 0] = n.friction[:, 0] * _scale(rng, r.friction)
        s = _scale(rng, r.mass)
        m.body_mass[:] = n.mass * s
        m.body_inertia[:] = n.inertia * s
        m.dof_damping[:] = n.damping * _scale(rng, r.joint_damping)
        m.dof_armature[:] = n.armature * _scale(rng, r.armature)
        g = _scale(rng, r.actuator_gain)
        m.actuator_gainprm[:, 0] = n.gain[:, 0] * g
        # A position servo has bias = [0, -kp, -kv]: kp must scale with the gain or the servo's set point moves.
        m.actuator_biasprm[:, 1] = n.bias[:, 1] * g
        self._latency = int(rng.integers(0, r.action_latency_steps + 1)) if r.action_latency_steps else 0

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        if self._renderer is None:
            os.environ.setdefault("MUJOCO_GL", "egl")
            h, w = self._render_size
            self._renderer = mujoco.Renderer(self.model, height=h, width=w)
        cam = self._camera if self._camera is not None else -1
        self._renderer.update_scene(self.data, camera=cam)
        return self._renderer.render()

    def close(self):
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

