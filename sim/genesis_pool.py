"""The Genesis backend (``genesis`` extra): batched envs in one Genesis scene, behind the worker pool's interface.

``GenesisPool(task, num_envs, seed=0, task_kwargs=None, backend="cpu", precision="32")`` is a
``gymnasium.vector.VectorEnv`` with the same semantics as ``sim.pool.WorkerPool`` (it shares its caller-side code):
same-step autoreset with ``final_obs``/``episode_return``/``episode_length``/``success`` in ``infos``, the ``active``
mask, action checks (``ActionError`` naming the env index; finite out-of-range actions clipped), and seeding
``seed + i`` for env ``i``. All envs live in one Genesis scene built with ``scene.build(n_envs=num_envs)`` and step
together in one ``scene.step()`` per control step (``dt`` = the MuJoCo task's control period, ``substeps`` = its
frame skip, the implicit-fast integrator as in the MJCF); an env that ends its episode is reset alone through
``envs_idx``.

Tasks: ``reach`` (``sim.tasks.reach.ReachTask``, the SO-101 arm; ``robots/assets/so101.xml`` loaded by Genesis' MJCF
importer, which reads the position servos' kp, force range, joint damping and armature from the file; a robot
overlay, ``R2S_ROBOT_OVERLAY``, is copied over them). The observation layout (``joint_pos``, ``joint_vel``,
``ee_pos``, ``goal``), the action modes, the reward, the success test and the time limit are the MuJoCo task's: the
task's own parameters (``task_kwargs``) are read from a MuJoCo ``ReachTask`` built with them. Resets are *drawn by*
that MuJoCo task — one generator per env, seeded as the MuJoCo env would be — so env ``i`` starts each episode from
exactly the joint positions and goal the MuJoCo pool's env ``i`` starts from; the first observation after a reset is
the MuJoCo task's. ``ee_pos`` is the fingertip (``ee_site``: 0.07 m along the gripper link's x axis) from Genesis'
link pose after the step.

Physics differences: away from constraints the two simulators agree closely (Genesis' rigid solver follows MuJoCo's
formulation: over a 100-step reach episode of small random targets around the start, float32, rewards within 1e-5
and episode returns within 3e-5 of the MuJoCo task's); a constraint — a joint at its limit (the gripper closed at 0
is the common case: its position and velocity then differ by up to 5e-3 rad and 0.9 rad/s) or a contact (the arm
touching the table) — is resolved with Genesis' own constraint parameters and collision detection, and trajectories
that hit one part from there. Not supported (refused with a clear
error): domain randomisation, rendering, observation noise, action latency.

``active``: Genesis steps every env of a scene together, so an idle env is stepped and then put back (joint positions,
velocities, its previous servo target); its observation is returned unchanged, reward 0, no flags.

Genesis is initialised once per process (``gs.init``; ``backend`` "cpu" or "gpu"/"cuda", ``precision`` "32" or
"64"); a second pool must ask for the same. Its first ``scene.build`` compiles the kernels (≈ 1 min on one core
here); they are cached on disk by Quadrants, Genesis' compiler (``~/.cache/quadrants``, or
``QD_OFFLINE_CACHE_FILE_PATH``), and a later build of the same scene takes seconds. Its CPU backend runs in one thread
unless ``QD_NUM_THREADS`` (and ``GS_PARA_LEVEL``) say otherwise. Without the extra, ``import_genesis()`` raises
``GenesisUnavailable`` saying how to install it.
"""

from __future__ import annotations

import os
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


class _GenesisReach:
    """The reach task on ``num_envs`` envs of one Genesis scene, stepping the pool's arrays in place."""

    def __init__(self, cls, task_kwargs: dict, num_envs: int, arrays: dict, backend: str, precision: str):
        from robots.so101 import EE_SITE, model_path

        kw = dict(task_kwargs)
        self.gs = gs = init_genesis(backend, precision)
        import mujoco
        import torch

        self.torch = torch
        self.n = num_envs
        # The MuJoCo task draws every reset (one generator per env) and holds the task's parameters.
        self.sampler = cls(**kw)
        s = self.sampler
        self.gens: list = [None] * num_envs
        self.lo, self.hi = s.joint_low, s.joint_high
        self.delta = s.action_mode == "delta"
        self.delta_scale = s.delta_scale
        self.sparse = s.reward_type == "sparse"
        self.threshold = s.success_threshold
        self.bonus = s.success_bonus
        self.rate_w = s.action_rate_weight
        self.terminate_on_success = s.terminate_on_success
        self.max_steps = s.max_episode_steps
        m = s.model
        site = m.site(EE_SITE)
        self.gripper_body = m.body(int(site.bodyid[0])).name
        if np.any(site.pos[1:] != 0.0) or np.any(site.quat != (1.0, 0.0, 0.0, 0.0)):
            raise RuntimeError(f"{EE_SITE}: expected on its body's x axis, found at {site.pos.tolist()}")
        self.ee_offset = float(site.pos[0])

        scene = gs.Scene(
            sim_options=gs.options.SimOptions(dt=s.dt, substeps=s.frame_skip),
            rigid_options=gs.options.RigidOptions(integrator=gs.integrator.implicitfast),
            show_viewer=False,
        )
        self.arm = scene.add_entity(gs.morphs.MJCF(file=model_path("arm")))
        t0 = time.perf_counter()
        scene.build(n_envs=num_envs)
        self.build_s = time.perf_counter() - t0
        self.scene = scene
        names = [j.name for j in self.arm.joints]
        if names[: len(s.robot.joint_names)] != list(s.robot.joint_names) or self.arm.n_dofs != len(names):
            raise RuntimeError(f"genesis: the arm's joints are {names}; expected {list(s.robot.joint_names)}")
        self._copy_dof_params(m, mujoco)
        self.link = self.arm.get_link(self.gripper_body)
        self.all_idx = torch.arange(num_envs, device=gs.device)

        a = arrays
        self.actions, self.obs, self.final_obs = a["actions"], a["obs"], a["final_obs"]
        self.reward, self.terminated, self.truncated = a["reward"], a["terminated"], a["truncated"]
        self.success, self.has_success = a["success"], a["has_success"]
        self.seeds, self.seed_mask, self.active = a["seeds"], a["seed_mask"], a["active"]
        self.target = np.zeros((num_envs, len(names)))
        self.prev = np.zeros_like(self.target)
        self.goal = np.zeros((num_envs, 3))
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    def _copy_dof_params(self, m, mujoco) -> None:
        """Lay the MuJoCo model's servo and joint parameters (a robot overlay included) over those Genesis parsed from
        the file, where they differ (each setter may compile a kernel: skipped when nothing changed)."""
        jids = [m.joint(n).id for n in self.sampler.robot.joint_names]
        dofs = m.jnt_dofadr[jids]
        acts = [next(a for a in range(m.nu) if m.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT
                     and m.actuator_trnid[a, 0] == j) for j in jids]
        want = {
            "kp": m.actuator_gainprm[acts, 0],
            "damping": m.dof_damping[dofs],
            "armature": m.dof_armature[dofs],
            "frictionloss": m.dof_frictionloss[dofs],
        }
        for name, value in want.items():
            have = _as_numpy(getattr(self.arm, f"get_dofs_{name}")())
            have = have[0] if have.ndim == 2 else have
            if not np.allclose(have, value, rtol=1e-6, atol=1e-9):
                getattr(self.arm, f"set_dofs_{name}")(self.torch.as_tensor(value, dtype=self.gs.tc_float))

    # ---- resets ---------------------------------------------------------------------------------------------------
    def _draw(self, i: int, seed: int | None, options: dict | None) -> np.ndarray:
        """Env ``i``'s next initial observation, drawn by the MuJoCo task from env ``i``'s generator."""
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

    def _reset_envs(self, idx: np.ndarray, seeds: list, options: dict | None, obs_out: np.ndarray) -> None:
        q0 = np.empty((len(idx), self.target.shape[1]))
        for k, (i, seed) in enumerate(zip(idx.tolist(), seeds)):
            o = self._draw(i, seed, options)
            obs_out[i] = o
            q0[k] = o[: q0.shape[1]]
            self.goal[i] = o[-3:]
        t = self.torch.as_tensor(q0, dtype=self.gs.tc_float)
        envs = self.torch.as_tensor(idx, device=self.gs.device)
        self.arm.set_dofs_position(t, envs_idx=envs, zero_velocity=True)
        self.arm.control_dofs_position(t, envs_idx=envs)
        self.target[idx] = q0
        self.prev[idx] = q0
        self.elapsed[idx] = 0

    def reset(self, options: dict | None) -> None:
        idx = np.arange(self.n)
        seeds = [int(self.seeds[i]) if self.seed_mask[i] else None for i in range(self.n)]
        self._reset_envs(idx, seeds, options, self.obs)
        self.has_success[:] = False

    # ---- steps ----------------------------------------------------------------------------------------------------
    def step(self) -> None:
        torch, gs = self.torch, self.gs
        nj = self.target.shape[1]
        active = self.active
        all_active = bool(active.all())
        if not all_active:
            idle = np.flatnonzero(~active)
            idle_t = torch.as_tensor(idle, device=gs.device)
            saved_q = self.arm.get_dofs_position(envs_idx=idle_t).clone()
            saved_qd = self.arm.get_dofs_velocity(envs_idx=idle_t).clone()
        a = self.actions
        if self.delta:
            target = np.clip(self.obs[:, :nj] + self.delta_scale * np.clip(a, -1.0, 1.0), self.lo, self.hi)
        else:
            target = a.copy()
        if not all_active:
            target[~active] = self.target[~active]
        self.arm.control_dofs_position(torch.as_tensor(target, dtype=gs.tc_float))
        self.scene.step()
        if not all_active:
            self.arm.set_dofs_position(saved_q, envs_idx=idle_t, zero_velocity=False)
            self.arm.set_dofs_velocity(saved_qd, envs_idx=idle_t)
        q = _as_numpy(self.arm.get_dofs_position())
        qd = _as_numpy(self.arm.get_dofs_velocity())
        ee = _as_numpy(self.link.get_pos()) + _rotate_x(_as_numpy(self.link.get_quat()), self.ee_offset)
        dist = np.sqrt(((ee - self.goal) ** 2).sum(axis=1))
        success = dist < self.threshold
        if self.sparse:
            reward = success.astype(np.float64)
        else:
            da = target - self.prev
            reward = -dist + self.bonus * success - self.rate_w * (da * da).sum(axis=1)
        terminated = success & self.terminate_on_success
        self.elapsed += active
        truncated = (self.elapsed >= self.max_steps) & ~terminated
        obs = np.concatenate((q, qd, ee, self.goal), axis=1)
        if all_active:
            self.obs[:] = obs
            self.target[:] = target
            self.prev[:] = target
            self.reward[:] = reward
            self.terminated[:] = terminated
            self.truncated[:] = truncated
            self.success[:] = success
            self.has_success[:] = True
        else:
            act = active
            self.obs[act] = obs[act]
            self.target[act] = target[act]
            self.prev[act] = target[act]
            self.reward[:] = np.where(act, reward, 0.0)
            self.terminated[:] = terminated & act
            self.truncated[:] = truncated & act
            self.success[act] = success[act]
            self.has_success[:] = act
        done = np.flatnonzero(self.terminated | self.truncated)
        if done.size:
            self.final_obs[done] = self.obs[done]
            self._reset_envs(done, [None] * done.size, None, self.obs)

    def close(self) -> None:
        self.sampler.close()
        scene, self.scene = self.scene, None
        if scene is not None:
            try:
                scene.destroy()
            except Exception:  # older Genesis: no destroy; the scene goes with the process
                pass


def _batch_class(cls):
    from sim.tasks.reach import ReachTask

    if isinstance(cls, type) and issubclass(cls, ReachTask):
        return _GenesisReach
    return None


GENESIS_TASKS = ("reach",)


class GenesisPool(_PoolBase):
    """``num_envs`` envs of ``task`` in one Genesis scene (see the module docstring); ``WorkerPool``'s semantics.

    ``num_workers`` is 1 (this process steps all envs); ``worker_pids`` is this process; ``build_s`` is how long
    ``scene.build`` took (kernel compilation on a cold cache)."""

    def __init__(self, task: str | type = "reach", num_envs: int = 1, seed: int = 0, task_kwargs: dict | None = None,
                 backend: str = "cpu", precision: str = "32"):
        cls = resolve_task(task)
        batch = _batch_class(cls)
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
        import_genesis()
        super().__init__(task, num_envs, seed, task_kwargs)
        obs_space = self.single_observation_space
        layout, size = _layout(self.num_envs, obs_space.shape, obs_space.dtype, self._act_shape[1], 1)
        self._init_arrays(_local_arrays(layout, size))
        self._batch = batch(cls, self.task_kwargs, self.num_envs, self._a, backend, str(precision))
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


__all__ = ["BACKENDS", "GENESIS_TASKS", "GenesisPool", "GenesisUnavailable", "genesis_available", "import_genesis",
           "init_genesis"]
