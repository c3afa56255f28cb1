"""Hopper, Walker2d and HalfCheetah with the dynamics, observations, rewards and resets of Gymnasium's v5 envs.

Reimplemented on ``sim.core.MujocoTask`` (action checks, time limit, domain randomisation), from Gymnasium's own XML
models. With the same seed and the same in-range actions a task gives the same observations, rewards and termination
flags as ``gym.make("Hopper-v5")`` (and ``Walker2d-v5``, ``HalfCheetah-v5``); the tests check this to 1e-10.
Differences, all deliberate:

* an action outside ``[-1, 1]`` is clipped before it is used, so the control cost uses the clipped action (Gymnasium
  charges the raw one; the physics is the same because MuJoCo clamps ``ctrl`` to ``ctrlrange`` either way);
* ``mj_rnePostConstraint`` is not called after stepping: it only fills ``cacc``/``cfrc_int``/``cfrc_ext``, which no
  observation or reward of these three tasks reads (Gymnasium v5 uses contact forces only for Ant/Humanoid);
* at the time limit ``truncated`` is False when the episode also terminated on that step (Gymnasium's ``TimeLimit``
  sets both);
* the observation excludes the torso x position always (Gymnasium's default, not a flag here).

Hot path: ``step`` is the base class's (checks, clip, ``mj_step(m, d, nstep=frame_skip)``, hooks, ~15–20 µs of
Python per step besides the physics). The worker pool (``sim.pool``) steps the envs of one worker through
``batch_stepper``: one validated action batch, a lean per-env loop (ctrl, ``mj_step``, ``mj_getState``, time limit,
health test, reset at an episode end; optionally in several threads, since ``mj_step`` releases the GIL) and the
reward, flags and observation of the whole batch in numpy — a few µs per env-step. It gives the same numbers as
``step``/``reset`` (tested bit for bit).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import cache

import mujoco
import numpy as np

from robots.locomotion import HALFCHEETAH, HOPPER, WALKER2D, load_gymnasium_model
from robots.spec import ObsSegment, RobotSpec
from sim.core import DomainRandomization, MujocoTask

_QPOS_QVEL = int(mujoco.mjtState.mjSTATE_QPOS | mujoco.mjtState.mjSTATE_QVEL)


class BatchStepper:
    """What ``batch_stepper`` returns: call it to step every env once (returns whether an episode ended);
    ``sync()`` after resetting envs from outside; ``close()`` stops its helper threads."""

    __slots__ = ("step", "sync", "_close")

    def __init__(self, step: Callable[[], bool], sync: Callable[[], None], close: Callable[[], None] | None):
        self.step = step
        self.sync = sync
        self._close = close

    def __call__(self) -> bool:
        return self.step()

    def close(self) -> None:
        if self._close is not None:
            self._close()
            self._close = None


@cache
def _shared_model(asset: str) -> mujoco.MjModel:
    """One compiled model per asset and process, shared read-only by unrandomised envs (the base class copies it
    for a randomised env)."""
    return load_gymnasium_model(asset)


def _layout(num_joints: int) -> tuple[ObsSegment, ...]:
    return (
        ObsSegment("root_pos", 2, "topic:/base/pose"),  # torso height z and pitch angle
        ObsSegment("joint_pos", num_joints, "joint_states.position"),
        ObsSegment("root_vel", 3, "topic:/base/twist"),  # torso x and z velocity, pitch rate
        ObsSegment("joint_vel", num_joints, "joint_states.velocity"),
    )


_STEP_HOOKS = ("step", "check_action", "_pre_step", "_apply_action", "_reward", "_get_obs", "_observe", "is_healthy")


class _PlanarLocomotion(MujocoTask):
    """Shared body of the three planar tasks: root joints x, z, pitch followed by the actuated joints.

    Reward = forward_reward_weight · x velocity + healthy_reward · healthy − ctrl_cost_weight · ‖action‖²
    (HalfCheetah: no healthy term and no termination).
    """

    asset: str
    default_frame_skip: int
    qvel_clip: float | None = 10.0
    """Joint velocities are clipped to ±this in the observation (Hopper, Walker2d); None: not clipped."""
    has_health: bool = True

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = None,
        max_episode_steps: int = 1000,
        *,
        reset_noise_scale: float,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (-math.inf, math.inf),
        healthy_angle_range: tuple[float, float] = (-math.inf, math.inf),
        healthy_state_range: tuple[float, float] | None = None,
    ):
        model = _shared_model(self.asset)
        if render_mode is not None and (width > model.vis.global_.offwidth or height > model.vis.global_.offheight):
            # The offscreen buffer must hold the requested image: give this env its own model with a larger one.
            import copy

            model = copy.deepcopy(model)
            model.vis.global_.offwidth = max(model.vis.global_.offwidth, width)
            model.vis.global_.offheight = max(model.vis.global_.offheight, height)
        ctrlrange = model.actuator_ctrlrange
        super().__init__(
            model, self.default_frame_skip, ctrlrange[:, 0], ctrlrange[:, 1], max_episode_steps,
            randomization=randomization, render_mode=render_mode, width=width, height=height, camera=camera,
        )
        self.reset_noise_scale = float(reset_noise_scale)
        self.forward_reward_weight = float(forward_reward_weight)
        self.ctrl_cost_weight = float(ctrl_cost_weight)
        self.healthy_reward = float(healthy_reward)
        self.terminate_when_unhealthy = bool(terminate_when_unhealthy)
        self.healthy_z_range = (float(healthy_z_range[0]), float(healthy_z_range[1]))
        self.healthy_angle_range = (float(healthy_angle_range[0]), float(healthy_angle_range[1]))
        self.healthy_state_range = None if healthy_state_range is None else (
            float(healthy_state_range[0]), float(healthy_state_range[1]))
        self.init_qpos = self.model.qpos0.copy()
        self.init_qvel = np.zeros(self.model.nv)
        self._nq = self.model.nq
        self._dt = self.dt
        self._obs_dim = self.model.nq - 1 + self.model.nv
        # Views onto the MjData buffers (stable for the life of self.data): no attribute lookups per step.
        self._qpos = self.data.qpos
        self._qvel = self.data.qvel

    # ---- hooks ---------------------------------------------------------------------------------------------------
    def _reset_model(self) -> None:
        s = self.reset_noise_scale
        rng = self.np_random
        self._qpos[:] = self.init_qpos + rng.uniform(low=-s, high=s, size=self.model.nq)
        self._qvel[:] = self.init_qvel + self._qvel_noise(rng, s)

    def _qvel_noise(self, rng: np.random.Generator, s: float) -> np.ndarray:
        return rng.uniform(low=-s, high=s, size=self.model.nv)

    def _get_obs(self) -> np.ndarray:
        obs = np.empty(self._obs_dim)
        nq1 = self._nq - 1
        obs[:nq1] = self._qpos[1:]
        if self.qvel_clip is None:
            obs[nq1:] = self._qvel
        else:
            # minimum/maximum: np.clip's result (NaN included) at a third of its cost on small arrays
            v = obs[nq1:]
            np.minimum(self._qvel, self.qvel_clip, out=v)
            np.maximum(v, -self.qvel_clip, out=v)
        return obs

    def _pre_step(self) -> dict:
        return {"x": float(self._qpos[0])}

    def is_healthy(self) -> bool:
        """Gymnasium's health test on the current state (always True for HalfCheetah)."""
        if not self.has_health:
            return True
        qpos = self._qpos
        z, angle = qpos[1], qpos[2]
        if not (self.healthy_z_range[0] < z < self.healthy_z_range[1]):
            return False
        if not (self.healthy_angle_range[0] < angle < self.healthy_angle_range[1]):
            return False
        if self.healthy_state_range is not None:
            lo, hi = self.healthy_state_range
            # plain floats: np.all on ten numbers costs more than this loop; NaN fails the test as in Gymnasium
            for v in qpos[2:].tolist() + self._qvel.tolist():
                if not lo < v < hi:
                    return False
        return True

    def _reward(self, action: np.ndarray, before: dict) -> tuple[float, bool, dict]:
        x_after = float(self._qpos[0])
        x_velocity = (x_after - before["x"]) / self._dt
        forward = self.forward_reward_weight * x_velocity
        sq = 0.0
        for a in action.tolist():  # sequential, as numpy sums fewer than eight numbers: same bits as np.sum
            sq += a * a
        ctrl_cost = self.ctrl_cost_weight * sq
        info = {"x_position": x_after, "x_velocity": x_velocity, "reward_forward": forward, "reward_ctrl": -ctrl_cost}
        if not self.has_health:
            return forward - ctrl_cost, False, info
        healthy = self.is_healthy()
        survive = self.healthy_reward * healthy
        info["reward_survive"] = survive
        info["z_distance_from_origin"] = float(self._qpos[1] - self.init_qpos[1])
        terminated = (not healthy) and self.terminate_when_unhealthy
        return forward + survive - ctrl_cost, terminated, info

    # ---- batched stepping for the worker pool --------------------------------------------------------------------
    @classmethod
    def batch_stepper(cls, envs: Sequence["_PlanarLocomotion"], actions: np.ndarray, obs: np.ndarray,
                      final_obs: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
                      truncated: np.ndarray, threads: int = 1) -> BatchStepper | None:
        """A function ``step() -> bool`` that steps every env of ``envs`` once, with same-step autoreset.

        The arrays (one row per env) are bound once: ``step`` reads ``actions`` (already validated and clipped by
        the caller), writes ``obs``, ``reward``, ``terminated`` and ``truncated`` in place, and for each env whose
        episode ended copies its last observation to ``final_obs``, resets it (``env.reset()``) and puts the first
        observation of the next episode in ``obs``; it returns whether any episode ended. Results equal calling
        ``env.step`` (and ``env.reset`` at an episode end) on each env. Returns None where the envs need that generic
        path instead: mixed task classes or settings, observation noise or action latency.
        """
        if not envs or any(type(e) is not cls for e in envs):
            return None
        # A subclass that changes how a step is computed gets the generic path (this code would bypass it).
        if any(getattr(cls, h) is not getattr(_PlanarLocomotion, h) for h in _STEP_HOOKS):
            return None
        e0 = envs[0]
        keys = ("frame_skip", "forward_reward_weight", "ctrl_cost_weight", "healthy_reward",
                "terminate_when_unhealthy", "healthy_z_range", "healthy_angle_range", "healthy_state_range",
                "max_episode_steps")
        if any(getattr(e, k) != getattr(e0, k) for e in envs for k in keys):
            return None
        if any(e.randomization.obs_noise_std or e.randomization.action_latency_steps for e in envs):
            return None
        return _make_batch_step(cls, list(envs), actions, obs, final_obs, reward, terminated, truncated, threads)

    def _health_bounds(self) -> tuple[int, np.ndarray, np.ndarray]:
        """The health test as open bounds on columns ``1..c-1`` of the state row [qpos, qvel]: (c, low, high)."""
        nq, nv = self.model.nq, self.model.nv
        lo = np.full(nq + nv, -np.inf)
        hi = np.full(nq + nv, np.inf)
        lo[1], hi[1] = self.healthy_z_range
        lo[2], hi[2] = self.healthy_angle_range
        last = 2
        if self.healthy_state_range is not None:  # Gymnasium's state_vector()[2:]: qpos[2:] and qvel
            lo[2:] = np.maximum(lo[2:], self.healthy_state_range[0])
            hi[2:] = np.minimum(hi[2:], self.healthy_state_range[1])
            last = nq + nv - 1
        return last + 1, lo[1 : last + 1], hi[1 : last + 1]


def _make_batch_step(cls: type[_PlanarLocomotion], envs: list[_PlanarLocomotion], actions: np.ndarray,
                     obs: np.ndarray, final_obs: np.ndarray, reward: np.ndarray, terminated: np.ndarray,
                     truncated: np.ndarray, threads: int = 1) -> BatchStepper:
    """See ``_PlanarLocomotion.batch_stepper``.

    Per env (in up to ``threads`` threads; ``mj_step`` releases the GIL): ctrl, ``mj_step``, ``mj_getState`` into a
    row of ``post``, the time limit and the health test on plain floats, and the reset of an env whose episode ended
    (its new state in ``cur``). Then, over the whole batch in numpy: reward, flags and observation from ``post``.
    Everything is bound once and every array is allocated once (numpy ufuncs with ``out=``: its wrappers such as
    np.all/np.sum/np.clip cost microseconds each on arrays this small).
    """
    e0 = envs[0]
    n = len(envs)
    nq, nv = e0.model.nq, e0.model.nv
    nq1 = nq - 1
    fs, dt = e0.frame_skip, e0._dt
    fw, cw, hr = e0.forward_reward_weight, e0.ctrl_cost_weight, e0.healthy_reward
    clip = cls.qvel_clip
    health = cls.has_health
    term_flag = health and e0.terminate_when_unhealthy
    max_steps = e0.max_episode_steps
    post = np.zeros((n, nq + nv))  # [qpos, qvel] right after this step
    cur = np.zeros((n, nq + nv))  # ... after this step or, where an episode ended, after the reset
    x_before, tmp = np.zeros(n), np.zeros(n)
    ok, keep = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    elapsed = np.zeros(n, dtype=np.int64)
    was_reset = np.zeros(n, dtype=bool)
    reset_obs = np.zeros(obs.shape)
    sq = np.zeros(actions.shape)
    c_end, h_lo, h_hi = e0._health_bounds()
    bounds = list(zip(h_lo.tolist(), h_hi.tolist()))
    checked = post[:, 1:c_end]
    b1, b2 = np.zeros(checked.shape, dtype=bool), np.zeros(checked.shape, dtype=bool)
    x_post, x_cur, qvel, obs_vel = post[:, 0], cur[:, 0], post[:, nq:], obs[:, nq1:]
    mj_step, mj_get_state, spec = mujoco.mj_step, mujoco.mj_getState, _QPOS_QVEL
    items = [(e.model, e.data, e.data.ctrl, actions[i], post[i], cur[i], e) for i, e in enumerate(envs)]

    def sync() -> None:
        for i, (m, d, _, _, _, row, e) in enumerate(items):
            mj_get_state(m, d, row, spec)
            elapsed[i] = e._elapsed

    sync()
    add, sub, mul, div, land = np.add, np.subtract, np.multiply, np.divide, np.logical_and

    def physics(order) -> None:
        # ``order`` may be shared by several threads: each next() hands out one env (atomic under the GIL), and
        # mj_step releases the GIL, so the envs spread over the threads as they free up.
        for i in order:
            m, d, ctrl, act, row, row_cur, e = items[i]
            ctrl[:] = act
            mj_step(m, d, fs)
            mj_get_state(m, d, row, spec)
            k = e._elapsed + 1  # each env's own counter stays the truth (single steps and resets agree)
            e._elapsed = k
            elapsed[i] = k
            ended = k >= max_steps
            if term_flag and not ended:
                # Gymnasium's health test (the numpy one below gives the same answer, NaN included)
                for (lo, hi), v in zip(bounds, row[1:c_end].tolist()):
                    if not lo < v < hi:
                        ended = True
                        break
            if ended:
                reset_obs[i] = e.reset()[0]
                mj_get_state(m, d, row_cur, spec)
                was_reset[i] = True

    helpers = _Helpers(physics, threads - 1) if threads > 1 and n > 1 else None

    def step() -> bool:
        np.copyto(x_before, x_cur)
        was_reset.fill(False)
        if helpers is None:
            physics(range(n))
        else:
            helpers.run(iter(range(n)))
        # Reward and termination: the same operations, in the same order, as the single-env _reward.
        sub(x_post, x_before, out=tmp)
        div(tmp, dt, out=reward)
        if fw != 1.0:
            mul(reward, fw, out=reward)
        if health:
            land(np.greater(checked, h_lo, out=b1), np.less(checked, h_hi, out=b2), out=b1)
            land.reduce(b1, axis=1, out=ok)
            if hr == 1.0:
                add(reward, ok, out=reward)
            else:
                add(reward, mul(ok, hr, out=tmp), out=reward)
        np.square(actions, out=sq)
        add.reduce(sq, axis=1, out=tmp)
        sub(reward, mul(tmp, cw, out=tmp), out=reward)
        if term_flag:
            np.logical_not(ok, out=terminated)
        else:
            terminated.fill(False)
        np.greater_equal(elapsed, max_steps, out=truncated)
        np.greater(truncated, terminated, out=truncated)  # truncated and not terminated
        # Observation.
        obs[:, :nq1] = post[:, 1:nq]
        if clip is None:
            obs_vel[:] = qvel
        else:
            np.minimum(qvel, clip, out=obs_vel)
            np.maximum(obs_vel, -clip, out=obs_vel)
        # Same-step autoreset (the resets themselves ran above).
        np.copyto(cur, post, where=np.logical_not(was_reset, out=keep)[:, None])
        if not was_reset.any():
            return False
        np.copyto(final_obs, obs, where=was_reset[:, None])
        np.copyto(obs, reset_obs, where=was_reset[:, None])
        return True

    return BatchStepper(step, sync, helpers.close if helpers is not None else None)


class _Helpers:
    """Persistent helper threads that run ``fn(shared_iterator)`` beside the calling thread."""

    def __init__(self, fn, count: int):
        import queue
        import threading

        self.fn = fn
        self.jobs = [queue.SimpleQueue() for _ in range(count)]
        self.done: queue.SimpleQueue = queue.SimpleQueue()
        for q in self.jobs:
            threading.Thread(target=self._loop, args=(q,), daemon=True, name="r2s-batch-step").start()

    def _loop(self, q) -> None:
        while True:
            order = q.get()
            if order is None:
                return
            try:
                self.fn(order)
            except BaseException as e:  # handed to the caller
                self.done.put(e)
            else:
                self.done.put(None)

    def run(self, order) -> None:
        for q in self.jobs:
            q.put(order)
        error = None
        try:
            self.fn(order)
        finally:
            for _ in self.jobs:
                e = self.done.get()
                error = error or e
        if error is not None:
            raise error

    def close(self) -> None:
        for q in self.jobs:
            q.put(None)


class HopperTask(_PlanarLocomotion):
    """Gymnasium Hopper-v5: hop forward without falling. obs 11, action 3, 125 Hz, 1000 steps."""

    robot: RobotSpec = HOPPER
    obs_layout = _layout(3)
    asset = "hopper.xml"
    default_frame_skip = 4

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = None,
        max_episode_steps: int = 1000,
        reset_noise_scale: float = 5e-3,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_state_range: tuple[float, float] = (-100.0, 100.0),
        healthy_z_range: tuple[float, float] = (0.7, math.inf),
        healthy_angle_range: tuple[float, float] = (-0.2, 0.2),
    ):
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps,
            reset_noise_scale=reset_noise_scale, forward_reward_weight=forward_reward_weight,
            ctrl_cost_weight=ctrl_cost_weight, healthy_reward=healthy_reward,
            terminate_when_unhealthy=terminate_when_unhealthy, healthy_z_range=healthy_z_range,
            healthy_angle_range=healthy_angle_range, healthy_state_range=healthy_state_range,
        )


class Walker2dTask(_PlanarLocomotion):
    """Gymnasium Walker2d-v5: walk forward on two legs. obs 17, action 6, 125 Hz, 1000 steps."""

    robot: RobotSpec = WALKER2D
    obs_layout = _layout(6)
    asset = "walker2d_v5.xml"
    default_frame_skip = 4

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = None,
        max_episode_steps: int = 1000,
        reset_noise_scale: float = 5e-3,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 1e-3,
        healthy_reward: float = 1.0,
        terminate_when_unhealthy: bool = True,
        healthy_z_range: tuple[float, float] = (0.8, 2.0),
        healthy_angle_range: tuple[float, float] = (-1.0, 1.0),
    ):
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps,
            reset_noise_scale=reset_noise_scale, forward_reward_weight=forward_reward_weight,
            ctrl_cost_weight=ctrl_cost_weight, healthy_reward=healthy_reward,
            terminate_when_unhealthy=terminate_when_unhealthy, healthy_z_range=healthy_z_range,
            healthy_angle_range=healthy_angle_range,
        )


class HalfCheetahTask(_PlanarLocomotion):
    """Gymnasium HalfCheetah-v5: run forward; never terminates. obs 17, action 6, 20 Hz, 1000 steps."""

    robot: RobotSpec = HALFCHEETAH
    obs_layout = _layout(6)
    asset = "half_cheetah.xml"
    default_frame_skip = 5
    qvel_clip = None
    has_health = False

    def __init__(
        self,
        randomization: DomainRandomization | dict | None = None,
        render_mode: str | None = None,
        width: int = 320,
        height: int = 240,
        camera: str | int | None = None,
        max_episode_steps: int = 1000,
        reset_noise_scale: float = 0.1,
        forward_reward_weight: float = 1.0,
        ctrl_cost_weight: float = 0.1,
    ):
        super().__init__(
            randomization, render_mode, width, height, camera, max_episode_steps,
            reset_noise_scale=reset_noise_scale, forward_reward_weight=forward_reward_weight,
            ctrl_cost_weight=ctrl_cost_weight, healthy_reward=0.0, terminate_when_unhealthy=False,
        )

    def _qvel_noise(self, rng: np.random.Generator, s: float) -> np.ndarray:
        return s * rng.standard_normal(self.model.nv)


__all__ = ["HalfCheetahTask", "HopperTask", "Walker2dTask"]
