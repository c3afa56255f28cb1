"""Vectorised environments: a shared-memory worker pool and an in-process pool with the same semantics.

Both follow ``gymnasium.vector.VectorEnv`` semantics with **same-step autoreset**
(``metadata["autoreset_mode"] == gymnasium.vector.AutoresetMode.SAME_STEP``): when env ``i``'s episode ends
(terminated or truncated) in ``step``, the ``obs[i]`` returned is already the first observation of its next episode,
and the step's ``infos`` carry

* ``final_obs`` [N, obs_dim] and ``_final_obs`` [N] (bool mask): the last observation of the ended episodes
  (rows outside the mask are zero) — what PPO needs to bootstrap a truncated episode's value;
* ``episode_return`` and ``episode_length`` [N] (with masks ``_episode_return``/``_episode_length`` equal to
  ``_final_obs``): the undiscounted return and the length of each ended episode;
* where the task reports ``info["success"]``: ``success`` [N] bool with mask ``_success`` at every step, and at an
  episode end ``final_info = {"success": ..., "_success": ...}`` with ``_final_info`` = ``_final_obs``.

Those keys are present only on steps where some episode ended (``success``: whenever a task reported it), as in
Gymnasium. Other keys of a task's per-step ``info`` are not carried across processes.

Seeding: env ``i`` is seeded with ``seed + i`` (``reset(seed=s)``; the constructor's ``seed`` for the first reset
without one), however the envs are spread over workers, so a trajectory does not depend on ``num_workers``.

Actions are checked in the calling process before anything reaches a worker: a batch of the wrong shape, or with a
NaN/inf, raises ``sim.core.ActionError`` naming the env index, and no env moves; finite out-of-range actions are
clipped to the action space (as ``MujocoTask.step`` does).

``WorkerPool`` design: a few processes (default one per core), each owning a contiguous slice of env indices, stepping
all of them per command. Actions, observations, rewards and flags travel through one ``multiprocessing.shared_memory``
block; one byte on a pipe wakes a worker and one byte answers (``k`` done, ``e`` error, text in shared memory). The
caller blocks in ``poll`` on the answer pipes and on the workers' process sentinels, so a worker that dies is seen at
once, an exception inside a task step comes back with its traceback, and a worker silent for ``step_timeout_s``
is reported; each raises ``WorkerError`` naming the worker and its env indices, and the pool is closed after it.
Workers start with the ``forkserver`` method (torch may be loaded in the caller) with ``OMP_NUM_THREADS=1``.
``threads_per_worker > 1`` steps a worker's envs in that many threads (``mj_step`` releases the GIL), handing out
envs as threads free up: it balances uneven step costs inside a worker (``num_workers=1, threads_per_worker=2`` on
2 cores). Results never depend on ``num_workers`` or ``threads_per_worker``. A task class may offer
``batch_stepper(envs, actions, obs, final_obs, reward, terminated, truncated, threads)`` (see
``sim.tasks.locomotion``) to step its slice with one lean loop and numpy over the batch, autoreset included;
otherwise each env's ``step`` (and ``reset`` at an episode end) is called.

``step(actions, active=mask)`` steps only the envs where ``mask`` is True; the others idle (not stepped: their
observation is returned unchanged, reward 0, no flags, their episode counters stand still). Chunk execution uses it:
an env whose episode ended inside an action chunk waits for the others to finish theirs. A step with some envs idle
takes each active env's own ``step``/``reset`` (the ``batch_stepper``, when a task has one, is re-synchronised after).

``make_pool(task, num_envs, backend="pool" | "sync", **kw)`` picks one; ``"sync"`` steps the envs in this process.
"""

from __future__ import annotations

import importlib
import math
import multiprocessing as mp
import os
import pickle
import select
import signal
import time
import traceback
import weakref
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from sim.core import ActionError

_MSG_BYTES = 1 << 16  # per-worker buffer for error text and pickled reset options
_ALIGN = 64


class WorkerError(RuntimeError):
    """A pool worker crashed, raised inside a task, or hung; names the worker and the env indices it held."""

    def __init__(self, message: str, worker: int | None = None, env_indices: tuple[int, ...] = (),
                 cause: str | None = None):
        super().__init__(message)
        self.worker = worker
        self.env_indices = env_indices
        self.cause = cause


# ---- the task a pool builds -------------------------------------------------------------------------------------
def resolve_task(task: str | type) -> type:
    """A task class from a registered name (``"hopper"``), a ``"package.module:Class"`` path, or the class itself."""
    if isinstance(task, type):
        return task
    if ":" in task:
        module, attr = task.split(":", 1)
        return getattr(importlib.import_module(module), attr)
    from sim.registry import task_class

    return task_class(task)


def _task_name(task: str | type) -> str:
    return task if isinstance(task, str) else f"{task.__module__}:{task.__qualname__}"


# ---- buffers ------------------------------------------------------------------------------------------------------
def _layout(num_envs: int, obs_shape: tuple, obs_dtype, act_dim: int, num_workers: int) -> tuple[list, int]:
    fields = [
        ("actions", (num_envs, act_dim), np.float64),
        ("obs", (num_envs, *obs_shape), obs_dtype),
        ("final_obs", (num_envs, *obs_shape), obs_dtype),
        ("reward", (num_envs,), np.float64),
        ("terminated", (num_envs,), np.bool_),
        ("truncated", (num_envs,), np.bool_),
        ("success", (num_envs,), np.bool_),
        ("has_success", (num_envs,), np.bool_),
        ("seeds", (num_envs,), np.int64),
        ("seed_mask", (num_envs,), np.bool_),
        ("active", (num_envs,), np.bool_),
        ("msg_len", (num_workers,), np.int64),
        ("msg", (num_workers, _MSG_BYTES), np.uint8),
    ]
    out, offset = [], 0
    for name, shape, dtype in fields:
        dtype = np.dtype(dtype)
        out.append((name, shape, dtype.str, offset))
        offset += int(np.prod(shape)) * dtype.itemsize
        offset = (offset + _ALIGN - 1) // _ALIGN * _ALIGN
    return out, max(offset, _ALIGN)


_PER_ENV = ("actions", "obs", "final_obs", "reward", "terminated", "truncated", "success", "has_success", "seeds",
            "seed_mask", "active")


def _views(buf, layout: list) -> dict[str, np.ndarray]:
    return {name: np.ndarray(shape, dtype=np.dtype(dt), buffer=buf, offset=off) for name, shape, dt, off in layout}


def _local_arrays(layout: list, size: int) -> dict[str, np.ndarray]:
    return _views(bytearray(size), layout)


# ---- one slice of envs, stepped by a worker (or by the sync pool) -----------------------------------------------
class _EnvSlice:
    """Envs ``lo..hi-1`` of a pool and the code that steps and resets them in place in the pool's arrays."""

    def __init__(self, task: str | type, task_kwargs: dict, lo: int, hi: int, arrays: dict[str, np.ndarray],
                 threads: int = 1):
        cls = resolve_task(task)
        self.lo, self.hi = lo, hi
        self.envs = [cls(**task_kwargs) for _ in range(lo, hi)]
        a = {k: arrays[k][lo:hi] for k in _PER_ENV}
        self.actions, self.obs, self.final_obs = a["actions"], a["obs"], a["final_obs"]
        self.reward, self.terminated, self.truncated = a["reward"], a["terminated"], a["truncated"]
        self.success, self.has_success = a["success"], a["has_success"]
        self.seeds, self.seed_mask = a["seeds"], a["seed_mask"]
        self.active = a["active"]
        self.done = np.zeros(hi - lo, dtype=bool)
        self.threads = threads
        maker = getattr(cls, "batch_stepper", None)
        self.batch = None if maker is None else maker(
            self.envs, self.actions, self.obs, self.final_obs, self.reward, self.terminated, self.truncated,
            threads=threads)

    def step(self) -> None:
        if not self.active.all():
            self._step_active()
            return
        if self.batch is not None:
            self.batch.step()
            return
        self._step_each()
        done = np.logical_or(self.terminated, self.truncated, out=self.done)
        if done.any():
            for j in np.flatnonzero(done).tolist():
                self.final_obs[j] = self.obs[j]
                self.obs[j] = self._call(j, self.envs[j].reset)[0]

    def _step_each(self) -> None:
        obs, rew, term, trunc, succ, has = (self.obs, self.reward, self.terminated, self.truncated, self.success,
                                            self.has_success)
        for j, env in enumerate(self.envs):
            o, r, te, tr, info = self._call(j, env.step, self.actions[j])
            obs[j] = o
            rew[j] = r
            term[j] = te
            trunc[j] = tr
            s = info.get("success") if info else None
            if s is None:
                has[j] = False
            else:
                has[j] = True
                succ[j] = bool(s)

    def _step_active(self) -> None:
        """Step (and autoreset) only the active envs; the idle ones keep their observation, reward 0, no flags."""
        obs, rew, term, trunc, succ, has = (self.obs, self.reward, self.terminated, self.truncated, self.success,
                                            self.has_success)
        for j, env in enumerate(self.envs):
            if not self.active[j]:
                rew[j] = 0.0
                term[j] = trunc[j] = has[j] = False
                continue
            o, r, te, tr, info = self._call(j, env.step, self.actions[j])
            rew[j], term[j], trunc[j] = r, te, tr
            s = info.get("success") if info else None
            has[j] = s is not None
            if s is not None:
                succ[j] = bool(s)
            if te or tr:
                self.final_obs[j] = o
                o = self._call(j, env.reset)[0]
            obs[j] = o
        if self.batch is not None:  # it keeps copies of the envs' states: refresh them
            self.batch.sync()

    def reset(self, options: dict | None) -> None:
        for j, env in enumerate(self.envs):
            seed = int(self.seeds[j]) if self.seed_mask[j] else None
            self.obs[j] = self._call(j, env.reset, seed=seed, options=options)[0]
        self.has_success[:] = False
        if self.batch is not None:  # it keeps copies of the envs' states: refresh them
            self.batch.sync()

    def _call(self, j: int, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            e.add_note(f"(in env {self.lo + j})")
            raise

    def close(self) -> None:
        if self.batch is not None:
            self.batch.close()
        for env in self.envs:
            env.close()


def _worker_main(widx: int, task, task_kwargs: dict, lo: int, hi: int, shm_name: str, layout: list,
                 cmd_conn, res_conn, cpu: int | None, threads: int) -> None:
    """A worker process: build envs ``lo..hi-1``, then serve one-byte commands (s: step, r: reset, q: quit)."""
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {cpu})
        except (AttributeError, OSError):
            pass
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the caller, which closes the pool
    rfd, wfd = cmd_conn.fileno(), res_conn.fileno()
    shm = shared_memory.SharedMemory(name=shm_name)
    arrays = _views(shm.buf, layout)
    msg, msg_len = arrays["msg"][widx], arrays["msg_len"]

    def report(exc: BaseException) -> None:
        data = "".join(traceback.format_exception(exc)).encode("utf-8", "replace")[-_MSG_BYTES:]
        msg[: len(data)] = np.frombuffer(data, np.uint8)
        msg_len[widx] = len(data)
        os.write(wfd, b"e")

    part = None
    try:
        try:
            part = _EnvSlice(task, task_kwargs, lo, hi, arrays, threads)
        except Exception as e:
            report(e)
            return
        os.write(wfd, b"k")
        read, write = os.read, os.write
        while True:
            cmd = read(rfd, 1)
            if cmd == b"s":
                try:
                    part.step()
                except Exception as e:
                    report(e)
                    continue
                write(wfd, b"k")
            elif cmd == b"r":
                try:
                    n = int(msg_len[widx])
                    options = pickle.loads(msg[:n].tobytes()) if n else None
                    part.reset(options)
                except Exception as e:
                    report(e)
                    continue
                write(wfd, b"k")
            else:  # b"q", or b"" when the caller has gone away
                break
    finally:
        if part is not None:
            part.close()
        arrays = msg = msg_len = part = None  # no view of the block may outlive it
        shm.close()


# ---- the shared caller-side logic ---------------------------------------------------------------------------------
class _PoolBase(VectorEnv):
    metadata: dict[str, Any] = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, task: str | type, num_envs: int, seed: int, task_kwargs: dict | None):
        if int(num_envs) < 1:
            raise ValueError(f"num_envs must be ≥ 1, got {num_envs}")
        self.task = task
        self.task_kwargs = dict(task_kwargs or {})
        self.num_envs = int(num_envs)
        self.seed = int(seed)
        probe = resolve_task(task)(**self.task_kwargs)
        try:
            self.single_observation_space = probe.observation_space
            self.single_action_space = probe.action_space
            self.metadata = {**type(self).metadata, "render_fps": probe.metadata.get("render_fps"),
                             "autoreset_mode": AutoresetMode.SAME_STEP}
            self.robot = getattr(probe, "robot", None)
            self.obs_layout = getattr(probe, "obs_layout", None)
        finally:
            probe.close()
        if not isinstance(self.single_action_space, gym.spaces.Box) or len(self.single_action_space.shape) != 1:
            raise TypeError(f"pool: task {_task_name(task)} needs a 1-D Box action space, "
                            f"has {self.single_action_space}")
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._act_shape = (self.num_envs, self.single_action_space.shape[0])
        self._low = self.single_action_space.low.astype(np.float64)
        self._high = self.single_action_space.high.astype(np.float64)
        self._ep_return = np.zeros(self.num_envs)
        self._ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self._reset_done = False

    def _init_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        self._a = arrays
        self._actions, self._obs, self._final_obs = arrays["actions"], arrays["obs"], arrays["final_obs"]
        self._reward, self._terminated, self._truncated = arrays["reward"], arrays["terminated"], arrays["truncated"]
        self._success, self._has_success = arrays["success"], arrays["has_success"]
        self._row_shape = (self.num_envs,) + (1,) * (self._obs.ndim - 1)

    # subclasses: run one command on every env
    def _run_step(self) -> None:
        raise NotImplementedError

    def _run_reset(self, options: dict | None) -> None:
        raise NotImplementedError

    def _check_open(self) -> None:
        if self.closed:
            raise WorkerError(f"pool of {_task_name(self.task)} is closed")

    # ---- VectorEnv API --------------------------------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        """Reset every env. ``seed``: an int (env i gets ``seed + i``), a list of per-env seeds, or None (the
        constructor's seed on the first reset, the envs' own generators afterwards)."""
        self._check_open()
        if seed is None and not self._reset_done:
            seed = self.seed
        if seed is None:
            self._a["seed_mask"][:] = False
        elif isinstance(seed, (int, np.integer)):
            super().reset(seed=int(seed))
            self._a["seeds"][:] = int(seed) + np.arange(self.num_envs)
            self._a["seed_mask"][:] = True
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
            self._a["seed_mask"][:] = [s is not None for s in seeds]
            self._a["seeds"][:] = [0 if s is None else int(s) for s in seeds]
        self._run_reset(options)
        self._reset_done = True
        self._ep_return[:] = 0.0
        self._ep_length[:] = 0
        return self._obs.copy(), {}

    def step(self, actions, active=None):
        """Gymnasium's ``step``; ``active`` (bool [N], optional): step only these envs, the others idle."""
        self._check_open()
        if not self._reset_done:
            raise gym.error.ResetNeeded("pool: call reset() before step()")
        a = np.asarray(actions)
        if a.shape != self._act_shape:
            raise ActionError(f"actions have shape {a.shape}; the pool of {self.num_envs} {_task_name(self.task)} "
                              f"envs expects {self._act_shape}; refused, no env stepped")
        if not np.isfinite(a).all():
            bad = np.flatnonzero(~np.isfinite(a).all(axis=1)).tolist()
            raise ActionError(f"actions of env index {bad} have NaN/inf: {a[bad[0]].tolist()} (first); refused, "
                              "no env stepped")
        np.minimum(np.maximum(a, self._low, out=self._actions), self._high, out=self._actions)  # = np.clip, faster
        if active is None:
            self._a["active"][:] = True
        else:
            mask = np.asarray(active, bool)
            if mask.shape != (self.num_envs,):
                raise ValueError(f"active has shape {mask.shape}; expected ({self.num_envs},)")
            self._a["active"][:] = mask
        self._run_step()
        obs = self._obs.copy()
        reward = self._reward.copy()
        terminated = self._terminated.copy()
        truncated = self._truncated.copy()
        self._ep_return += reward
        self._ep_length += self._a["active"]
        done = terminated | truncated
        infos: dict[str, Any] = {}
        has_success = self._has_success.any()
        if has_success:
            infos["success"] = self._success.copy()
            infos["_success"] = self._has_success.copy()
        if done.any():
            infos["final_obs"] = np.where(done.reshape(self._row_shape), self._final_obs, 0)
            infos["_final_obs"] = done
            infos["episode_return"] = np.where(done, self._ep_return, 0.0)
            infos["episode_length"] = np.where(done, self._ep_length, 0)
            infos["_episode_return"] = infos["_episode_length"] = done
            if has_success:
                infos["final_info"] = {"success": infos["success"] & done, "_success": infos["_success"] & done}
                infos["_final_info"] = done
            np.copyto(self._ep_return, 0.0, where=done)
            np.copyto(self._ep_length, 0, where=done)
        return obs, reward, terminated, truncated, infos

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_task_name(self.task)!r}, num_envs={self.num_envs})"


class SyncPool(_PoolBase):
    """All envs in this process, stepped in turn (with the task's ``batch_stepper`` where it has one).

    Same semantics as ``WorkerPool``; for tests, 1-env runs and debugging.
    """

    def __init__(self, task: str | type, num_envs: int, seed: int = 0, task_kwargs: dict | None = None,
                 threads: int = 1):
        super().__init__(task, num_envs, seed, task_kwargs)
        obs_space = self.single_observation_space
        layout, size = _layout(self.num_envs, obs_space.shape, obs_space.dtype, self._act_shape[1], 1)
        self._init_arrays(_local_arrays(layout, size))
        self._part = _EnvSlice(task, self.task_kwargs, 0, self.num_envs, self._a, threads)

    @property
    def envs(self) -> list:
        return self._part.envs

    def _run_step(self) -> None:
        self._part.step()

    def _run_reset(self, options: dict | None) -> None:
        self._part.reset(options)

    def close_extras(self, **kwargs) -> None:
        self._part.close()


@contextmanager
def _single_threaded_env():
    """Children inherit ``OMP_NUM_THREADS=1`` etc. (set before they import numpy); the caller's env is restored."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update({k: "1" for k in names})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _shutdown(procs: list, fds: list, shm: shared_memory.SharedMemory | None, grace: list[float]) -> None:
    """Stop workers (quit byte; after ``grace[0]`` s SIGTERM, then SIGKILL), close pipes and free the shared memory."""
    grace_s = grace[0]
    for conn in fds[0]:
        try:
            os.write(conn.fileno(), b"q")
        except (OSError, ValueError):
            pass
    deadline = time.monotonic() + grace_s
    for p in procs:
        p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p.is_alive():
            p.terminate()
            p.join(0.5)
        if p.is_alive():
            p.kill()
            p.join(0.5)
    for group in fds:
        for conn in group:
            conn.close()
    if shm is not None:
        try:
            shm.close()
        except BufferError:  # a view is still alive (finalised at interpreter exit): unlink anyway
            pass
        try:
            shm.unlink()
        except FileNotFoundError:
            pass


class WorkerPool(_PoolBase):
    """``num_envs`` envs of ``task`` in ``num_workers`` processes (default ``min(num_envs, os.cpu_count())``).

    Gymnasium ``VectorEnv`` semantics with same-step autoreset; see the module docstring for the ``infos`` keys,
    seeding and failure handling (``WorkerError``). Use as a context manager or call ``close()``.
    ``start_method``: ``"forkserver"`` (default) or ``"spawn"``; the caller's ``__main__`` must be importable
    without side effects (the usual ``if __name__ == "__main__":`` guard), as for any multiprocessing pool.
    """

    def __init__(
        self,
        task: str | type,
        num_envs: int,
        num_workers: int | None = None,
        seed: int = 0,
        task_kwargs: dict | None = None,
        step_timeout_s: float = 30.0,
        start_method: str = "forkserver",
        start_timeout_s: float = 120.0,
        threads_per_worker: int = 1,
        pin_workers: bool = False,
    ):
        super().__init__(task, num_envs, seed, task_kwargs)
        nw = min(self.num_envs, os.cpu_count() or 1) if num_workers is None else int(num_workers)
        if not 1 <= nw <= self.num_envs:
            raise ValueError(f"num_workers must be in [1, num_envs={self.num_envs}], got {num_workers}")
        self.num_workers = nw
        self.threads_per_worker = max(1, int(threads_per_worker))
        self.step_timeout_s = float(step_timeout_s)
        # Contiguous slices, sizes differing by at most one.
        bounds = [round(k * self.num_envs / nw) for k in range(nw + 1)]
        self.worker_envs: list[tuple[int, ...]] = [tuple(range(bounds[k], bounds[k + 1])) for k in range(nw)]
        obs_space = self.single_observation_space
        layout, size = _layout(self.num_envs, obs_space.shape, obs_space.dtype, self._act_shape[1], nw)
        self._shm = shared_memory.SharedMemory(create=True, size=size)
        self._init_arrays(_views(self._shm.buf, layout))
        self._msg, self._msg_len = self._a["msg"], self._a["msg_len"]
        self._procs: list = []
        cmd_w, res_r, child_ends = [], [], []
        self._grace = [1.0]  # seconds a worker gets to quit by itself (less once one has failed)
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, (cmd_w, res_r, child_ends), self._shm,
                                           self._grace)
        ctx = mp.get_context(start_method)
        if start_method == "forkserver":
            ctx.set_forkserver_preload(["sim.pool", "sim.core"])
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        pin = pin_workers and 1 < nw <= len(cpus) and self.threads_per_worker == 1
        with _single_threaded_env():
            for k in range(nw):
                c_r, c_w = ctx.Pipe(duplex=False)
                r_r, r_w = ctx.Pipe(duplex=False)
                cmd_w.append(c_w)
                res_r.append(r_r)
                child_ends += [c_r, r_w]
                p = ctx.Process(
                    target=_worker_main, name=f"r2s-pool-{k}", daemon=True,
                    args=(k, task, self.task_kwargs, bounds[k], bounds[k + 1], self._shm.name, layout, c_r, r_w,
                          cpus[k] if pin else None, self.threads_per_worker),
                )
                p.start()
                self._procs.append(p)
        for conn in child_ends:  # the children hold their own copies; ours would hide a dead worker's EOF
            conn.close()
        child_ends.clear()
        self._cmd_fds = [c.fileno() for c in cmd_w]
        self._res_fds = [c.fileno() for c in res_r]
        self._poller = select.poll()
        self._fd_worker: dict[int, tuple[int, bool]] = {}
        for k, (conn, p) in enumerate(zip(res_r, self._procs)):
            self._poller.register(conn.fileno(), select.POLLIN)
            self._fd_worker[conn.fileno()] = (k, False)
            self._poller.register(p.sentinel, select.POLLIN)
            self._fd_worker[p.sentinel] = (k, True)
        self._waiting = [False] * nw
        try:
            self._command(None, start_timeout_s, "start")
        except BaseException:
            self.close()
            raise

    @property
    def worker_pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    # ---- commands -----------------------------------------------------------------------------------------------
    def _command(self, byte: bytes | None, timeout_s: float, what: str) -> None:
        """Send ``byte`` to every worker (None: just wait, at start-up) and block until each has answered.

        Anything that interrupts the wait (Ctrl-C included) closes the pool: answers still in flight would
        otherwise be taken for the next command's.
        """
        try:
            self._send_and_wait(byte, timeout_s, what)
        except BaseException:
            if not self.closed:
                self.close()
            raise

    def _send_and_wait(self, byte: bytes | None, timeout_s: float, what: str) -> None:
        if byte is not None:
            for fd in self._cmd_fds:
                os.write(fd, byte)
        waiting = self._waiting
        for k in range(self.num_workers):
            waiting[k] = True
        remaining = self.num_workers
        deadline = time.monotonic() + timeout_s
        poll, fd_worker, read = self._poller.poll, self._fd_worker, os.read
        while remaining:
            left_ms = (deadline - time.monotonic()) * 1000.0
            events = poll(max(0, math.ceil(left_ms))) if left_ms > 0 else []
            if not events:
                late = [k for k in range(self.num_workers) if waiting[k]]
                self._fail(late[0], f"did not answer {what} within {timeout_s:g} s (hung in a task?)",
                           also=late[1:])
            for fd, _ in events:
                k, is_sentinel = fd_worker[fd]
                if is_sentinel:
                    # A worker that raised writes "e" and then exits: prefer its message to the bare exit.
                    fd = self._res_fds[k]
                    if not select.select([fd], [], [], 0)[0]:
                        self._fail(k, f"died during {what}{self._exit_text(k)}")
                answer = read(fd, 1)
                if answer == b"k" and waiting[k]:
                    waiting[k] = False
                    remaining -= 1
                elif answer == b"e":
                    n = int(self._msg_len[k])
                    text = self._msg[k, :n].tobytes().decode("utf-8", "replace")
                    self._fail(k, f"raised during {what}:\n{text}", cause=text)
                else:  # EOF: the worker closed its pipe, i.e. exited
                    self._fail(k, f"died during {what}{self._exit_text(k)}")

    def _exit_text(self, k: int) -> str:
        p = self._procs[k]
        p.join(1.0)
        code = p.exitcode
        if code is None:
            return ""
        if code < 0:
            try:
                return f" (killed by signal {signal.Signals(-code).name})"
            except ValueError:
                return f" (killed by signal {-code})"
        return f" (exit code {code})"

    def _fail(self, k: int, text: str, cause: str | None = None, also: list[int] = ()) -> None:
        envs = self.worker_envs[k]
        others = "".join(f"; worker {j} (envs {self._span(self.worker_envs[j])}) too" for j in also)
        msg = (f"pool of {self.num_envs} {_task_name(self.task)} envs: worker {k} (pid {self._procs[k].pid}, "
               f"envs {self._span(envs)}) {text}{others}; the pool is closed")
        self._grace[0] = 0.2
        self.close()
        raise WorkerError(msg, worker=k, env_indices=envs, cause=cause)

    @staticmethod
    def _span(envs: tuple[int, ...]) -> str:
        return f"{envs[0]}–{envs[-1]}" if len(envs) > 1 else str(envs[0])

    def _run_step(self) -> None:
        self._command(b"s", self.step_timeout_s, "step")

    def _run_reset(self, options: dict | None) -> None:
        data = pickle.dumps(options) if options is not None else b""
        if len(data) > _MSG_BYTES:
            raise ValueError(f"reset options pickle to {len(data)} bytes; at most {_MSG_BYTES}")
        for k in range(self.num_workers):
            self._msg[k, : len(data)] = np.frombuffer(data, np.uint8)
            self._msg_len[k] = len(data)
        self._command(b"r", self.step_timeout_s, "reset")

    def close_extras(self, **kwargs) -> None:
        self._poller = None
        self._a = self._msg = self._msg_len = None
        self._actions = self._obs = self._final_obs = self._reward = None
        self._terminated = self._truncated = self._success = self._has_success = None
        self._finalizer()


def make_pool(task: str | type, num_envs: int, backend: str = "pool", **kw) -> VectorEnv:
    """A vector env of ``num_envs`` ``task`` envs: ``backend="pool"`` (``WorkerPool``, processes) or ``"sync"``
    (``SyncPool``, this process; ``num_workers``/``step_timeout_s``/``start_method`` are ignored)."""
    if backend == "pool":
        return WorkerPool(task, num_envs, **kw)
    if backend == "sync":
        for k in ("num_workers", "step_timeout_s", "start_method", "start_timeout_s"):
            kw.pop(k, None)
        return SyncPool(task, num_envs, **kw)
    raise ValueError(f"make_pool: backend must be 'pool' or 'sync', got {backend!r}")


__all__ = ["SyncPool", "WorkerError", "WorkerPool", "make_pool", "resolve_task"]
