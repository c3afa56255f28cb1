"""The Genesis backend (``genesis`` extra): batched envs in one Genesis scene, behind the worker pool's interface.

``GenesisPool(task, num_envs, seed=0, task_kwargs=None, backend="cpu", precision="32", rigid_options=None)`` is a
``gymnasium.vector.VectorEnv`` with the same semantics as ``sim.pool.WorkerPool`` (it shares its caller-side code):
same-step autoreset with ``final_obs``/``episode_return``/``episode_length``/``success`` in ``infos``, the ``active``
mask, action checks (``ActionError`` naming the env index; finite out-of-range actions clipped), and seeding
``seed + i`` for env ``i``. All envs live in one Genesis scene built with ``scene.build(n_envs=num_envs)`` and step
together in one ``scene.step()`` per control step (``dt`` = the MuJoCo task's control period, ``substeps`` = its
frame skip); an env that ends its episode is reset alone through ``envs_idx``.

One design for every task: a MuJoCo instance of the task (built with ``task_kwargs``) holds the task's parameters
and *draws every reset* — one generator per env, seeded as the MuJoCo env would be — so env ``i`` starts each episode
from exactly the state (and goal) the MuJoCo pool's env ``i`` starts from, and the first observation of an episode is
the MuJoCo task's. Genesis loads the same MJCF (its importer reads joint damping, armature, friction loss, actuator
gains and force ranges; the MuJoCo model's values — a robot overlay, ``R2S_ROBOT_OVERLAY``, included — are laid over
them where they differ), gets the MuJoCo model's integrator (``implicitfast``; RK4, which Genesis lacks, becomes
Euler) and its disabled joint limits or contacts (``opt.disableflags``); ``rigid_options`` overrides any of
Genesis' ``RigidOptions``. Observation layouts, rewards, terminations and time limits are the MuJoCo tasks',
computed over the batch in numpy:

* ``reach`` (SO-101, ``robots/assets/so101.xml`` without the goal marker): servo targets by
  ``control_dofs_position`` (absolute or delta actions), ``ee_pos`` the fingertip (``ee_site``: 0.07 m along the
  gripper link's x axis) from Genesis' link pose after the step, reward/success as ``sim.tasks.arm``.
* ``hopper``, ``walker2d``, ``halfcheetah`` (Gymnasium's XML): motor torques gear × action by
  ``control_dofs_force``; forward reward from the root's x displacement, control cost, Gymnasium's health test.

Physics differences: away from constraints the two simulators agree closely (Genesis' rigid solver follows MuJoCo's
formulation). Reach, float32, small random targets, gripper open: per-step rewards within 6e-6, episode returns
within 3e-5; a hopper with joint limits off, Euler on both sides and no floor contact: rewards within 1e-6 per step
over 40 steps, falls and autoresets included. A constraint — a joint at its limit, or a contact — is resolved with
Genesis' own constraint parameters and collision detection, and trajectories that meet one part from there: the
reach gripper held closed at its 0 limit differs by up to 5e-3 rad and 0.9 rad/s (the fingertip is unaffected);
Gymnasium's hopper starts with its thigh and leg at their upper limit (0) and integrates with RK4, so its rewards
differ by ≈ 0.01–0.03 per step from the first steps and episodes part after some tens of steps (the tests state the
tolerances). Not supported (refused with a clear error): domain randomisation, rendering, observation noise, action
latency.

``active``: Genesis steps every env of a scene together, so an idle env is stepped and then put back (joint positions,
velocities; its previous servo target); its observation is returned unchanged, reward 0, no flags.

Genesis is initialised once per process (``gs.init``; ``backend`` "cpu" or "gpu"/"cuda", ``precision`` "32" or
"64"); a second pool must ask for the same. The first ``scene.build`` of a scene compiles its kernels (≈ 65 s for the
arm, ≈ 35 s more for the hopper on one core here); Quadrants, Genesis' compiler, caches them on disk
(``~/.cache/quadrants``, or ``QD_OFFLINE_CACHE_FILE_PATH``; Genesis' own preprocessed-geometry cache is
``~/.cache/genesis``, or ``GS_CACHE_FILE_PATH``), and a later build takes seconds (≈ 8 s for the first scene of a
process, under 1 s for the next). Its CPU backend runs in one thread unless ``QD_NUM_THREADS`` (and
``GS_PARA_LEVEL``) say otherwise. Without the extra, ``import_genesis()`` raises ``GenesisUnavailable`` saying how to
install it.
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from sim.core import DomainRandomization
from sim.pool import _PoolBase, _layout, _local_arrays, resolve_task

INSTALL_HINT = ("the Genesis backend needs the 'genesis' extra in its own venv (it would replace packages the main "
                "venv pins): python3.11 -m venv .venv-genesis && .venv-genesis/bin/pip install torch==2.13.0 && "
                ".venv-genesis/bin/pip install -e '.[dev,genesis]'")

BACKENDS = ("cpu", "gpu", "cuda")
PRECISIONS = ("32", "64")


class GenesisUnavailable(ImportError):
    """``genesis-world`` is not importable here."""


def import_genesis():
    """The ``genesis`` module, or ``GenesisUnavailable`` naming how to install it."""
    try:
        import genesis
    except ImportError as e:
        raise GenesisUnavailable(f"genesis-world is not importable ({e}); {INSTALL_HINT}") from e
    return genesis


def init_genesis(backend: str = "cpu", precision: str = "32"):
    """Initialise Genesis once per process (quiet logging) and return the module; a later call must ask for the same
    backend and precision (Genesis cannot be re-initialised with others while scenes exist)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    precision = str(precision)
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    gs = import_genesis()
    if not gs._initialized:
        gs.init(backend=getattr(gs, backend), precision=precision, logging_level="warning")
        gs._r2s_config = (backend, precision)
        # Genesis logs to stdout: move it to stderr, so that a command's stdout stays its output (bench JSON).
        handler = getattr(gs.logger, "_handler", None)
        if handler is not None and hasattr(handler, "setStream"):
            handler.setStream(sys.stderr)
            gs.logger._stream = sys.stderr
    else:
        have = getattr(gs, "_r2s_config", None)
        want_cpu = backend == "cpu"
        if have is not None:
            same = have[1] == precision and (have[0] == "cpu") == want_cpu
        else:  # initialised by someone else: check what we can
            same = (gs.backend == gs.cpu) == want_cpu and np.dtype(gs.np_float).itemsize * 8 == int(precision)
        if not same:
            raise RuntimeError(f"genesis: already initialised in this process as {have or gs.backend}; a pool asked "
                               f"for backend={backend!r}, precision={precision!r} (one configuration per process)")
    return gs


def _as_numpy(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float64, copy=False)


def _rotate_x(quat: np.ndarray, length: float) -> np.ndarray:
    """``length`` along the x axis of the frames with unit quaternions ``quat`` [N, 4] (w, x, y, z): [N, 3]."""
    w, x, y, z = quat[:, 0], quat[:, 1], quat[:, 2], quat[:, 3]
    return length * np.stack((1.0 - 2.0 * (y * y + z * z), 2.0 * (x * y + w * z), 2.0 * (x * z - w * y)), axis=1)


class _GenesisBatch:
    """``num_envs`` envs of one MuJoCo task class in one Genesis scene, stepping the pool's arrays in place.

    A subclass says which MJCF file Genesis loads (``mjcf``), how actions drive the entity (``_apply``) and how the
    observation, reward and termination follow from the state (``_outcome``); this class owns the scene, the resets
    (drawn by a MuJoCo instance of the task, one generator per env), the ``active`` mask and the autoreset."""

    def __init__(self, cls, task_kwargs: dict, num_envs: int, arrays: dict, backend: str, precision: str,
                 rigid_options: dict | None = None):
        self.gs = gs = init_genesis(backend, precision)
        import mujoco
        import torch

        self.torch = torch
        self.n = num_envs
        # The MuJoCo task draws every reset (one generator per env) and holds the task's parameters.
        self.sampler = s = cls(**dict(task_kwargs))
        self.gens: list = [None] * num_envs
        self.max_steps = s.max_episode_steps
        m = s.model
        # Genesis has Euler, implicitfast and an approximate implicitfast: RK4 (Gymnasium's locomotion) maps to Euler.
        integrator = mujoco.mjtIntegrator(m.opt.integrator).name.removeprefix("mjINT_").lower()
        name = {"implicitfast": "implicitfast", "implicit": "implicitfast", "euler": "Euler", "rk4": "Euler"}[
            integrator]
        self.integrator = name
        scene = gs.Scene(
            sim_options=gs.options.SimOptions(dt=s.dt, substeps=s.frame_skip),
            rigid_options=gs.options.RigidOptions(**{**self._rigid_defaults(m, mujoco, gs, name),
                                                     **(rigid_options or {})}),
            show_viewer=False,
        )
        self.ent = scene.add_entity(gs.morphs.MJCF(file=self.mjcf(s)))
        t0 = time.perf_counter()
        scene.build(n_envs=num_envs)
        self.build_s = time.perf_counter() - t0
        self.scene = scene
        names = [j.name for j in self.ent.joints]
        want = [m.joint(j).name for j in range(m.njnt)]
        if names != want or self.ent.n_dofs != m.nv or self.ent.n_qs != m.nq:
            raise RuntimeError(f"genesis: the entity's joints are {names}; the MuJoCo model's are {want}")
        self._copy_dof_params(m, mujoco)
        self.device = gs.device

        a = arrays
        self.actions, self.obs, self.final_obs = a["actions"], a["obs"], a["final_obs"]
        self.reward, self.terminated, self.truncated = a["reward"], a["terminated"], a["truncated"]
        self.success, self.has_success = a["success"], a["has_success"]
        self.seeds, self.seed_mask, self.active = a["seeds"], a["seed_mask"], a["active"]
        self.elapsed = np.zeros(num_envs, dtype=np.int64)
        self._init_task(s, m)

    @staticmethod
    def _rigid_defaults(m, mujoco, gs, integrator: str) -> dict:
        """Genesis' rigid options that the MuJoCo model implies: its integrator, and joint limits / contacts off where
        the model's disable flags turn them off."""
        flags = int(m.opt.disableflags)
        return {
            "integrator": getattr(gs.integrator, integrator),
            "enable_joint_limit": not flags & int(mujoco.mjtDisableBit.mjDSBL_LIMIT),
            "enable_collision": not flags & int(mujoco.mjtDisableBit.mjDSBL_CONTACT),
        }

    # ---- subclass hooks -------------------------------------------------------------------------------------------
    def mjcf(self, sampler) -> str:
        raise NotImplementedError

    def _init_task(self, sampler, model) -> None:
        """Read the task's parameters from the MuJoCo ``sampler``; allocate per-env task state."""

    def _on_reset(self, idx: np.ndarray, obs: np.ndarray, qpos: np.ndarray) -> None:
        """Task state of the envs ``idx`` just reset (their first observations ``obs`` and ``qpos``, rows in ``idx``
        order)."""

    def _apply(self, active: np.ndarray | None) -> None:
        """Set every env's controls from ``self.actions`` (``active``: None when all step; idle envs' controls may
        be anything: their state is put back after the step)."""
        raise NotImplementedError

    def _outcome(self, active: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
        """(obs, reward, terminated, success or None) of every env after the step, from Genesis' state; task state
        (previous actions, positions) is updated for the ``active`` envs only (all when None)."""
        raise NotImplementedError

    # ---- shared -----------------------------------------------------------------------------------------------------
    def _copy_dof_params(self, m, mujoco) -> None:
        """Lay the MuJoCo model's joint parameters (a robot overlay included) and position-servo gains over those
        Genesis parsed from the file, where they differ (each setter may compile a kernel: skipped when equal)."""
        want = {"damping": m.dof_damping, "armature": m.dof_armature, "frictionloss": m.dof_frictionloss}
        kp = np.full(m.nv, np.nan)
        for a in range(m.nu):
            if (m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
                    and m.actuator_biastype[a] == mujoco.mjtBias.mjBIAS_AFFINE
                    and m.actuator_biasprm[a, 1] == -m.actuator_gainprm[a, 0]):  # a position servo
                kp[m.jnt_dofadr[m.actuator_trnid[a, 0]]] = m.actuator_gainprm[a, 0]
        for name, value in want.items():
            self._set_where_different(name, np.arange(m.nv), value)
        servo = np.flatnonzero(~np.isnan(kp))
        if servo.size:
            self._set_where_different("kp", servo, kp[servo])

    def _set_where_different(self, name: str, dofs: np.ndarray, value: np.ndarray) -> None:
        have = _as_numpy(getattr(self.ent, f"get_dofs_{name}")(dofs_idx_local=dofs.tolist()))
        have = have[0] if have.ndim == 2 else have
        if not np.allclose(have, value, rtol=1e-6, atol=1e-9):
            getattr(self.ent, f"set_dofs_{name}")(self.torch.as_tensor(value, dtype=self.gs.tc_float),
                                                  dofs_idx_local=dofs.tolist())

    def _tensor(self, x):
        return self.torch.as_tensor(np.asarray(x), dtype=self.gs.tc_float, device=self.device)

    def _idx(self, idx: np.ndarray):
        return self.torch.as_tensor(idx, device=self.device)

    def _draw(self, i: int, seed: int | None, options: dict | None) -> np.ndarray:
        """Env ``i``'s next initial observation, drawn by the MuJoCo task from env ``i``'s generator (the sampler's
        ``data`` then holds that initial state)."""
        s = self.sampler
        if seed is not None:
            obs = s.reset(seed=seed, options=options)[0]
        else:
            if self.gens[i] is None:
                raise RuntimeError(f"env {i}: reset without a seed before any seeded reset")
            s.np_random = self.gens[i]
            obs = s.reset(options=options)[0]
        self.gens[i] = s.np_random
        return obs

    def _reset_envs(self, idx: np.ndarray, seeds: list, options: dict | None) -> None:
        m = self.sampler.model
        qpos = np.empty((len(idx), m.nq))
        qvel = np.empty((len(idx), m.nv))
        first = np.empty((len(idx), self.obs.shape[1]))
        d = self.sampler.data
        for k, (i, seed) in enumerate(zip(idx.tolist(), seeds)):
            first[k] = self._draw(i, seed, options)
            qpos[k] = d.qpos
            qvel[k] = d.qvel
        envs = self._idx(idx)
        self.ent.set_qpos(self._tensor(qpos), envs_idx=envs, zero_velocity=True)
        if np.any(qvel):
            self.ent.set_dofs_velocity(self._tensor(qvel), envs_idx=envs)
        self.obs[idx] = first
        self.elapsed[idx] = 0
        self._on_reset(idx, first, qpos)

    def reset(self, options: dict | None) -> None:
        seeds = [int(self.seeds[i]) if self.seed_mask[i] else None for i in range(self.n)]
        self._reset_envs(np.arange(self.n), seeds, options)
        self.has_success[:] = False

    def step(self) -> None:
        active = self.active
        mask = None if active.all() else active.copy()
        if mask is not None:  # Genesis steps every env of the scene: the idle ones are put back after
            idle = self._idx(np.flatnonzero(~mask))
            saved_q = self.ent.get_qpos(envs_idx=idle).clone()
            saved_qd = self.ent.get_dofs_velocity(envs_idx=idle).clone()
        self._apply(mask)
        self.scene.step()
        if mask is not None:
            self.ent.set_qpos(saved_q, envs_idx=idle, zero_velocity=False)
            self.ent.set_dofs_velocity(saved_qd, envs_idx=idle)
        obs, reward, terminated, success = self._outcome(mask)
        act = np.ones(self.n, dtype=bool) if mask is None else mask
        self.elapsed += act
        truncated = (self.elapsed >= self.max_steps) & ~terminated
        self.obs[act] = obs[act]
        self.reward[:] = np.where(act, reward, 0.0)
        self.terminated[:] = terminated & act
        self.truncated[:] = truncated & act
        if success is not None:
            self.success[act] = success[act]
            self.has_success[:] = act
        done = np.flatnonzero(self.terminated | self.truncated)
        if done.size:
            self.final_obs[done] = self.obs[done]
            self._reset_envs(done, [None] * done.size, None)

    def close(self) -> None:
        self.sampler.close()
        scene, self.scene = self.scene, None
        if scene is not None:
            try:
                scene.destroy()
            except Exception:  # older Genesis: no destroy; the scene goes with the process
                pass


class _GenesisReach(_GenesisBatch):
    """The SO-101 reach task: position servos driven by ``control_dofs_position``; fingertip from the gripper link."""

    def mjcf(self, sampler) -> str:
        from robots.so101 import model_path

        return model_path("arm")  # the scene without the goal marker (a mocap body Genesis would make a link of)

    def _init_task(self, s, m) -> None:
        from robots.so101 import EE_SITE

        if [m.joint(j).name for j in range(m.njnt)] != list(s.robot.joint_names):
            raise RuntimeError(f"reach: expected the joints {list(s.robot.joint_names)}")
        self.lo, self.hi = s.joint_low, s.joint_high
        self.delta = s.action_mode == "delta"
        self.delta_scale = s.delta_scale
        self.sparse = s.reward_type == "sparse"
        self.threshold = s.success_threshold
        self.bonus = s.success_bonus
        self.rate_w = s.action_rate_weight
        self.terminate_on_success = s.terminate_on_success
        site = m.site(EE_SITE)
        if np.any(site.pos[1:] != 0.0) or np.any(site.quat != (1.0, 0.0, 0.0, 0.0)):
            raise RuntimeError(f"{EE_SITE}: expected on its body's x axis, found at {site.pos.tolist()}")
        self.ee_offset = float(site.pos[0])
        self.link = self.ent.get_link(m.body(int(site.bodyid[0])).name)
        nj = len(s.robot.joint_names)
        self.target = np.zeros((self.n, nj))
        self.prev = np.zeros_like(self.target)
        self.goal = np.zeros((self.n, 3))

    def _on_reset(self, idx, obs, qpos) -> None:
        nj = self.target.shape[1]
        q0 = obs[:, :nj]
        self.ent.control_dofs_position(self._tensor(q0), envs_idx=self._idx(idx))
        self.target[idx] = q0
        self.prev[idx] = q0
        self.goal[idx] = obs[:, -3:]

    def _apply(self, active) -> None:
        a = self.actions
        if self.delta:
            target = np.clip(self.obs[:, : self.target.shape[1]] + self.delta_scale * np.clip(a, -1.0, 1.0),
                             self.lo, self.hi)
        else:
            target = a.copy()
        if active is not None:
            target[~active] = self.target[~active]
        self._next_target = target
        self.ent.control_dofs_position(self._tensor(target))

    def _outcome(self, active):
        target = self._next_target
        q = _as_numpy(self.ent.get_dofs_position())
        qd = _as_numpy(self.ent.get_dofs_velocity())
        ee = _as_numpy(self.link.get_pos()) + _rotate_x(_as_numpy(self.link.get_quat()), self.ee_offset)
        dist = np.sqrt(((ee - self.goal) ** 2).sum(axis=1))
        success = dist < self.threshold
        if self.sparse:
            reward = success.astype(np.float64)
        else:
            da = target - self.prev
            reward = -dist + self.bonus * success - self.rate_w * (da * da).sum(axis=1)
        if active is None:
            self.target[:] = target
            self.prev[:] = target
        else:
            self.target[active] = target[active]
            self.prev[active] = target[active]
        return np.concatenate((q, qd, ee, self.goal), axis=1), reward, success & self.terminate_on_success, success


class _GenesisPlanar(_GenesisBatch):
    """Hopper, Walker2d, HalfCheetah (Gymnasium v5 rewards): motors driven by ``control_dofs_force`` (gear × action),
    reward from the root's x displacement, Gymnasium's health test."""

    def mjcf(self, sampler) -> str:
        from robots.locomotion import gymnasium_asset_path

        return gymnasium_asset_path(sampler.asset)

    def _init_task(self, s, m) -> None:
        import mujoco

        dofs, gear = [], []
        for a in range(m.nu):
            if (m.actuator_trntype[a] != mujoco.mjtTrn.mjTRN_JOINT
                    or m.actuator_biastype[a] != mujoco.mjtBias.mjBIAS_NONE):
                raise RuntimeError(f"{type(s).__name__}: actuator {a} is not a joint motor")
            dofs.append(int(m.jnt_dofadr[m.actuator_trnid[a, 0]]))
            gear.append(float(m.actuator_gear[a, 0] * m.actuator_gainprm[a, 0]))
        self.act_dofs, self.gear = dofs, np.array(gear)
        self.fw, self.cw, self.hr = s.forward_reward_weight, s.ctrl_cost_weight, s.healthy_reward
        self.has_health, self.terminate_when_unhealthy = s.has_health, s.terminate_when_unhealthy
        self.z_range, self.angle_range = s.healthy_z_range, s.healthy_angle_range
        self.state_range = s.healthy_state_range
        self.qvel_clip = s.qvel_clip
        self.dt = s.dt
        self.x = np.zeros(self.n)

    def _on_reset(self, idx, obs, qpos) -> None:
        self.x[idx] = qpos[:, 0]

    def _apply(self, active) -> None:
        self.ent.control_dofs_force(self._tensor(self.actions * self.gear), dofs_idx_local=self.act_dofs)

    def _outcome(self, active):
        q = _as_numpy(self.ent.get_qpos())
        qd = _as_numpy(self.ent.get_dofs_velocity())
        a = self.actions
        forward = self.fw * (q[:, 0] - self.x) / self.dt
        reward = forward - self.cw * (a * a).sum(axis=1)
        terminated = np.zeros(self.n, dtype=bool)
        if self.has_health:
            z, angle = q[:, 1], q[:, 2]
            healthy = (self.z_range[0] < z) & (z < self.z_range[1])
            healthy &= (self.angle_range[0] < angle) & (angle < self.angle_range[1])
            if self.state_range is not None:
                lo, hi = self.state_range
                rest = np.concatenate((q[:, 2:], qd), axis=1)
                healthy &= ((lo < rest) & (rest < hi)).all(axis=1)
            reward = reward + self.hr * healthy
            terminated = ~healthy & self.terminate_when_unhealthy
        if active is None:
            self.x[:] = q[:, 0]
        else:
            self.x[active] = q[active, 0]
        v = qd if self.qvel_clip is None else np.clip(qd, -self.qvel_clip, self.qvel_clip)
        return np.concatenate((q[:, 1:], v), axis=1), reward, terminated, None


def _batch_class(cls):
    from sim.tasks.locomotion import _PlanarLocomotion
    from sim.tasks.reach import ReachTask

    if isinstance(cls, type) and issubclass(cls, ReachTask):
        return _GenesisReach
    if isinstance(cls, type) and issubclass(cls, _PlanarLocomotion):
        return _GenesisPlanar
    return None


GENESIS_TASKS = ("reach", "hopper", "walker2d", "halfcheetah")


def check_supported(task: str | type, task_kwargs: dict | None = None, backend: str = "cpu",
                    precision: str = "32"):
    """Refuse what the Genesis backend lacks — another task, domain randomisation, rendering, an unknown backend or
    precision — with a ``ValueError`` naming the field (no Genesis import: a caller checks before it builds anything).
    Returns the batch class of ``task``."""
    batch = _batch_class(resolve_task(task))
    if batch is None:
        raise ValueError(f"task: the Genesis backend has {list(GENESIS_TASKS)}; got {task!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if str(precision) not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    r = (task_kwargs or {}).get("randomization")
    if (r if isinstance(r, DomainRandomization) else DomainRandomization.from_dict(r)).enabled:
        raise ValueError("task_kwargs.randomization: the Genesis backend has no domain randomisation; "
                         "expected None")
    if (task_kwargs or {}).get("render_mode") is not None:
        raise ValueError("task_kwargs.render_mode: the Genesis backend does not render; expected None")
    _check_no_command_delay(resolve_task(task), task_kwargs or {})
    return batch


def _check_no_command_delay(cls: type, task_kwargs: dict) -> None:
    """An arm task's robot overlay with a command delay: refused (Genesis steps its commands undelayed, so a run on it
    would train without the delay its run directory and exported policy record)."""
    from robots.overlay import command_delay_substeps, load_overlay, overlay_path
    from sim.tasks.arm import ArmTask

    if not (isinstance(cls, type) and issubclass(cls, ArmTask)):
        return
    path = overlay_path() if task_kwargs.get("robot_overlay") is None else str(task_kwargs["robot_overlay"])
    if path and command_delay_substeps(load_overlay(path), path) > 0:
        raise ValueError(f"robot overlay {path}: command_delay_substeps > 0, which the Genesis backend does not "
                         "apply; expected 0 (train on the MuJoCo pool, env.backend 'pool', to keep the delay)")


class GenesisPool(_PoolBase):
    """``num_envs`` envs of ``task`` in one Genesis scene (see the module docstring); ``WorkerPool``'s semantics.

    ``num_workers`` is 1 (this process steps all envs); ``worker_pids`` is this process; ``build_s`` is how long
    ``scene.build`` took (kernel compilation on a cold cache)."""

    def __init__(self, task: str | type = "reach", num_envs: int = 1, seed: int = 0, task_kwargs: dict | None = None,
                 backend: str = "cpu", precision: str = "32", rigid_options: dict | None = None):
        cls = resolve_task(task)
        batch = check_supported(task, task_kwargs, backend, precision)
        import_genesis()
        super().__init__(task, num_envs, seed, task_kwargs)
        obs_space = self.single_observation_space
        layout, size = _layout(self.num_envs, obs_space.shape, obs_space.dtype, self._act_shape[1], 1)
        self._init_arrays(_local_arrays(layout, size))
        self._batch = batch(cls, self.task_kwargs, self.num_envs, self._a, backend, str(precision), rigid_options)
        self.num_workers = 1
        self.worker_envs = [tuple(range(self.num_envs))]
        self.backend = backend
        self.precision = str(precision)
        self.build_s = self._batch.build_s

    @property
    def worker_pids(self) -> list[int]:
        return [os.getpid()]

    def _run_step(self) -> None:
        self._batch.step()

    def _run_reset(self, options: dict | None) -> None:
        self._batch.reset(options)

    def close_extras(self, **kwargs) -> None:
        self._batch.close()


def genesis_available() -> bool:
    try:
        import_genesis()
    except GenesisUnavailable:
        return False
    return True


__all__ = ["BACKENDS", "GENESIS_TASKS", "GenesisPool", "GenesisUnavailable", "check_supported", "genesis_available",
           "import_genesis", "init_genesis"]
