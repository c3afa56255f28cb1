"""Sim workers as Ray actors: ``RayPool``, the ``WorkerPool`` interface on a Ray cluster (the ``dist`` extra).

Same semantics as ``sim.pool.WorkerPool`` (see its module docstring): Gymnasium ``VectorEnv`` with same-step
autoreset and the same ``infos`` keys, ``step(actions, active=mask)``, actions checked and clipped in the caller,
env ``i`` seeded with ``seed + i`` however the envs are spread over actors. Each actor holds a contiguous slice of
env indices and steps it with the very code a pool worker runs (``sim.pool._EnvSlice``, the task's
``batch_stepper`` included), so trajectories equal the local pool's bit for bit. The actors go wherever Ray places
them: this process's local Ray instance, or any node of a cluster (``address="ray://HOST:PORT"``, or
``ray.init(...)`` called before; the nodes need the project installed, or a ``runtime_env``).

A lost actor (its process or node died, ``ray.kill``) is **replaced, never dropped**: a new actor is built for the
same slice, each of its envs re-runs its current episode — the env's random generator restored to its state at
the episode's reset (or the reset's seed), the reset, then the episode's actions so far — and the command in flight
is sent again. The caller checks that every re-run env is back at the observation it last returned (a re-run that
diverges raises ``WorkerError``), so the caller sees the same trajectory as without the loss. Each loss is logged
(``logging`` warning, logger ``sim.ray_pool``), counted in ``actor_restarts`` and recorded in ``lost_actors``
(``LostActor``: actor, env indices, command, step, cause). More than ``max_restarts`` losses within one command
raise ``WorkerError``. Re-running assumes an episode is a function of the env's generator at its reset and of the
episode's actions, as for every ``sim.core.MujocoTask`` (``_randomize`` and ``_reset_model`` draw from
``np_random``); the caller keeps each slice's actions since its oldest running episode began.

An exception inside a task (or building one) and an actor silent for ``step_timeout_s`` are not losses: they raise
``WorkerError`` naming the actor and its env indices, and close the pool, as ``WorkerPool`` does.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.pool import WorkerError, _EnvSlice, _layout, _local_arrays, _PoolBase, _task_name, resolve_task

log = logging.getLogger("sim.ray_pool")


def import_ray():
    """``ray``, or an ImportError naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise ImportError("sim.ray_pool needs Ray: install the project's `dist` extra "
                          "(pip install -e '.[dist]')") from e
    return ray


@dataclass(frozen=True)
class LostActor:
    """One actor loss the pool recovered from."""

    actor: int
    env_indices: tuple[int, ...]
    during: str  # the command in flight: "start", "reset" or "step"
    step: int  # pool steps taken before it
    cause: str


# ---- the actor ----------------------------------------------------------------------------------------------------
def _recording(cls: type) -> type:
    """``cls`` with a ``reset`` that first records what re-creates the episode: (seed, options, generator state)."""

    class Recording(cls):
        def reset(self, *, seed=None, options=None):
            state = None if seed is not None else self.np_random.bit_generator.state
            self._r2s_episode_start = (seed, options, state)
            return super().reset(seed=seed, options=options)

    # Same name: error texts and batch_stepper's ``type(e) is cls`` test see the task as it is.
    Recording.__name__, Recording.__qualname__ = cls.__name__, cls.__qualname__
    return Recording


def _restore_and_reset(env, start: tuple) -> None:
    seed, options, state = start
    if seed is None:
        bit_gen = getattr(np.random, state["bit_generator"])()
        bit_gen.state = state
        env.np_random = np.random.Generator(bit_gen)
    return env.reset(seed=seed, options=options)[0]


class _SliceActor:
    """Envs ``lo..hi-1`` of a ``RayPool``; each method answers with numpy arrays for the slice."""

    def __init__(self, task, task_kwargs: dict, lo: int, hi: int, obs_shape: tuple, obs_dtype: str, act_dim: int,
                 threads: int):
        layout, size = _layout(hi - lo, tuple(obs_shape), np.dtype(obs_dtype), act_dim, 1)
        self.a = _local_arrays(layout, size)
        self.part = _EnvSlice(_recording(resolve_task(task)), task_kwargs, 0, hi - lo, self.a, threads)
        self.part.lo = lo  # error notes name the pool's env index

    def pid(self) -> int:
        return os.getpid()

    def _starts(self, rows) -> list:
        return [self.part.envs[j]._r2s_episode_start for j in rows]

    def reset(self, seeds: np.ndarray, seed_mask: np.ndarray, options: dict | None):
        self.a["seeds"][:], self.a["seed_mask"][:] = seeds, seed_mask
        self.part.reset(options)
        return self.a["obs"].copy(), self._starts(range(len(seeds)))

    def step(self, actions: np.ndarray, active: np.ndarray):
        a = self.a
        a["actions"][:], a["active"][:] = actions, active
        self.part.step()
        done = np.flatnonzero(a["terminated"] | a["truncated"])
        return (a["obs"].copy(), a["final_obs"][done], a["reward"].copy(), a["terminated"].copy(),
                a["truncated"].copy(), a["success"].copy(), a["has_success"].copy(), self._starts(done))

    def rerun(self, starts: list, episodes: list[np.ndarray]) -> np.ndarray:
        """Put each env back where its episode stands: restore, reset, replay ``episodes[j]`` (actions [T, A])."""
        obs = self.a["obs"]
        for j, env in enumerate(self.part.envs):
            o = _restore_and_reset(env, starts[j])
            for act in episodes[j]:
                o = env.step(act)[0]
            obs[j] = o
        if self.part.batch is not None:  # it keeps copies of the envs' states: refresh them
            self.part.batch.sync()
        return obs.copy()

    def close(self) -> None:
        self.part.close()


# ---- the caller side ------------------------------------------------------------------------------------------------
class RayPool(_PoolBase):
    """``num_envs`` envs of ``task`` in ``num_actors`` Ray actors (default ``min(num_envs, cluster CPUs)``).

    Same interface and semantics as ``WorkerPool`` (see the module docstring for losses and failures).
    ``address``: passed to ``ray.init`` when Ray is not initialised yet (None: a local instance).
    ``threads_per_actor``: threads an actor steps its slice in (and the CPUs it asks Ray for, unless
    ``actor_options`` says ``num_cpus``); ``actor_options``: more ``.options(...)`` for the actors (resources,
    ``scheduling_strategy``, ...).
    """

    def __init__(
        self,
        task: str | type,
        num_envs: int,
        num_actors: int | None = None,
        seed: int = 0,
        task_kwargs: dict | None = None,
        step_timeout_s: float = 60.0,
        start_timeout_s: float = 300.0,
        threads_per_actor: int = 1,
        address: str | None = None,
        actor_options: dict | None = None,
        max_restarts: int = 3,
    ):
        ray = self._ray = import_ray()
        super().__init__(task, num_envs, seed, task_kwargs)
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False)
        cpus = int(ray.cluster_resources().get("CPU", 1))
        na = min(self.num_envs, max(1, cpus)) if num_actors is None else int(num_actors)
        if not 1 <= na <= self.num_envs:
            raise ValueError(f"num_actors must be in [1, num_envs={self.num_envs}], got {num_actors}")
        self.num_actors = na
        self.threads_per_actor = max(1, int(threads_per_actor))
        self.step_timeout_s, self.start_timeout_s = float(step_timeout_s), float(start_timeout_s)
        self.max_restarts = int(max_restarts)
        self._actor_options = {"num_cpus": self.threads_per_actor, **(actor_options or {})}
        bounds = [round(k * self.num_envs / na) for k in range(na + 1)]
        self.worker_envs: list[tuple[int, ...]] = [tuple(range(bounds[k], bounds[k + 1])) for k in range(na)]
        self._bounds = bounds
        obs_space = self.single_observation_space
        self._obs_spec = (tuple(obs_space.shape), np.dtype(obs_space.dtype).str)
        layout, size = _layout(self.num_envs, obs_space.shape, obs_space.dtype, self._act_shape[1], na)
        self._init_arrays(_local_arrays(layout, size))
        self.actor_restarts = 0
        self.lost_actors: list[LostActor] = []
        self.steps = 0
        # What re-runs an episode: per env its start (seed, options, generator state) and first step's index; per
        # actor the (step index, actions, active) records since its oldest running episode began.
        self._starts: list[Any] = [None] * self.num_envs
        self._first = np.zeros(self.num_envs, dtype=np.int64)
        self._records: list[list[tuple[int, np.ndarray, np.ndarray]]] = [[] for _ in range(na)]
        self.actors: list = [None] * na
        try:
            for k in range(na):
                self.actors[k] = self._new_actor(k)
            self._gather({k: self.actors[k].pid.remote() for k in range(na)}, "start", self.start_timeout_s,
                         lambda k: self.actors[k].pid.remote())
        except BaseException:
            self.close()
            raise

    @property
    def num_workers(self) -> int:
        return self.num_actors

    @property
    def worker_pids(self) -> list[int]:
        return self._ray.get([a.pid.remote() for a in self.actors], timeout=self.step_timeout_s)

    def _new_actor(self, k: int):
        cls = _remote_actor_class(self._ray)
        lo, hi = self._bounds[k], self._bounds[k + 1]
        return cls.options(max_restarts=0, **self._actor_options).remote(
            self.task, self.task_kwargs, lo, hi, self._obs_spec[0], self._obs_spec[1], self._act_shape[1],
            self.threads_per_actor)

    # ---- one command on every actor, with losses replaced -------------------------------------------------------
    def _gather(self, refs: dict, what: str, timeout_s: float, again) -> dict:
        """Wait for every actor's answer to ``refs`` (actor -> ObjectRef); a lost actor is replaced and ``again(k)``
        re-sends its command to the new one (``again=None``: a loss raises ``_Lost``)."""
        ray = self._ray
        from ray.exceptions import RayActorError, RayTaskError

        out: dict[int, Any] = {}
        losses = 0
        deadline = time.monotonic() + timeout_s
        while refs:
            ready, _ = ray.wait(list(refs.values()), num_returns=len(refs),
                                timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = sorted(refs)
                why = (f"not placed? the cluster may lack the resources asked, {self._actor_options}" if what == "start"
                       else "hung in a task?")
                self._fail(late[0], f"did not answer {what} within {timeout_s:g} s ({why})", also=late[1:])
            by_ref = {r: k for k, r in refs.items()}
            for ref in ready:
                k = by_ref[ref]
                del refs[k]
                try:
                    out[k] = ray.get(ref)
                except RayActorError as e:
                    if again is None:
                        raise _Lost(_first_line(e)) from e
                    losses += 1
                    if losses > self.max_restarts:
                        self._fail(k, f"was lost during {what} more than max_restarts={self.max_restarts} times "
                                      f"(last: {_first_line(e)})")
                    self._replace(k, what, _first_line(e))
                    refs[k] = again(k)
                    deadline = max(deadline, time.monotonic() + timeout_s)
                except RayTaskError as e:
                    self._fail(k, f"raised during {what}:\n{e}", cause=str(e))
        return out

    def _replace(self, k: int, what: str, cause: str) -> None:
        """A new actor for slice ``k``, its envs re-run to where the caller last saw them."""
        envs = self.worker_envs[k]
        event = LostActor(k, envs, what, self.steps, cause)
        self.lost_actors.append(event)
        self.actor_restarts += 1
        log.warning("ray pool of %d %s envs: actor %d (envs %s) lost during %s at step %d (%s); replacing it and "
                    "re-running its envs from their last reset", self.num_envs, _task_name(self.task), k,
                    _span(envs), what, self.steps, cause)
        lo, hi = self._bounds[k], self._bounds[k + 1]
        episodes = [self._episode_actions(k, i) for i in range(lo, hi)]
        for _attempt in range(self.max_restarts + 1):
            try:
                self._ray.kill(self.actors[k], no_restart=True)
            except Exception:  # already gone
                pass
            self.actors[k] = self._new_actor(k)
            if what == "start" or not self._reset_done:
                return
            try:
                ref = self.actors[k].rerun.remote(self._starts[lo:hi], episodes)
                obs = self._gather({k: ref}, "re-run", self.start_timeout_s, None)[k]
                break
            except _Lost as e:
                cause = str(e)
        else:
            self._fail(k, f"was lost again while re-running its envs, {self.max_restarts + 1} times (last: {cause})")
        bad = np.flatnonzero(~np.all(obs.reshape(hi - lo, -1) == self._obs[lo:hi].reshape(hi - lo, -1), axis=1))
        if bad.size:
            self._fail(k, f"re-ran envs {(lo + bad).tolist()} to observations that differ from those last returned "
                          "(an episode that is not a function of its reset's generator and its actions?)")

    def _episode_actions(self, k: int, i: int) -> np.ndarray:
        j = i - self._bounds[k]
        # Steps before the command in flight (a loss during step ``self.steps`` replays up to the one before).
        rows = [acts[j] for t, acts, active in self._records[k] if self._first[i] <= t < self.steps and active[j]]
        return np.array(rows, dtype=np.float64).reshape(len(rows), self._act_shape[1])

    def _fail(self, k: int, text: str, cause: str | None = None, also=()) -> None:
        envs = self.worker_envs[k]
        others = "".join(f"; actor {j} (envs {_span(self.worker_envs[j])}) too" for j in also)
        msg = (f"ray pool of {self.num_envs} {_task_name(self.task)} envs: actor {k} (envs {_span(envs)}) {text}"
               f"{others}; the pool is closed")
        self.close()
        raise WorkerError(msg, worker=k, env_indices=envs, cause=cause)

    # ---- the pool commands ----------------------------------------------------------------------------------------
    def _run_reset(self, options: dict | None) -> None:
        seeds, mask, b = self._a["seeds"], self._a["seed_mask"], self._bounds

        def send(k):
            return self.actors[k].reset.remote(seeds[b[k]:b[k + 1]].copy(), mask[b[k]:b[k + 1]].copy(), options)

        out = self._gather({k: send(k) for k in range(self.num_actors)}, "reset", self.step_timeout_s, send)
        for k, (obs, starts) in out.items():
            self._obs[b[k]:b[k + 1]] = obs
            self._starts[b[k]:b[k + 1]] = starts
            self._records[k].clear()
        self._first[:] = self.steps

    def _run_step(self) -> None:
        acts, active, b, t = self._actions, self._a["active"], self._bounds, self.steps

        def send(k):
            return self.actors[k].step.remote(acts[b[k]:b[k + 1]], active[b[k]:b[k + 1]])

        for k in range(self.num_actors):  # recorded first: a replacement mid-step replays up to this step
            self._records[k].append((t, acts[b[k]:b[k + 1]].copy(), active[b[k]:b[k + 1]].copy()))
        out = self._gather({k: send(k) for k in range(self.num_actors)}, "step", self.step_timeout_s, send)
        for k, (obs, final, rew, term, trunc, succ, has, starts) in out.items():
            lo, hi = b[k], b[k + 1]
            self._obs[lo:hi], self._reward[lo:hi] = obs, rew
            self._terminated[lo:hi], self._truncated[lo:hi] = term, trunc
            self._success[lo:hi], self._has_success[lo:hi] = succ, has
            done = np.flatnonzero(term | trunc)
            if done.size:
                self._final_obs[lo + done] = final
                for j, s in zip(done.tolist(), starts):
                    self._starts[lo + j] = s
                self._first[lo + done] = t + 1
                oldest = self._first[lo:hi].min()
                recs = self._records[k]
                while recs and recs[0][0] < oldest:
                    recs.pop(0)
        self.steps = t + 1

    def close_extras(self, **kwargs) -> None:
        for actor in getattr(self, "actors", []):
            if actor is not None:
                try:
                    self._ray.kill(actor, no_restart=True)
                except Exception:
                    pass
        self.actors = []


class _Lost(Exception):
    """An actor was lost where no replacement is made (while re-running a replacement's envs)."""


def _span(envs: tuple[int, ...]) -> str:
    return f"{envs[0]}–{envs[-1]}" if len(envs) > 1 else str(envs[0])


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


_REMOTE: dict[int, Any] = {}


def _remote_actor_class(ray):
    """``ray.remote(_SliceActor)``, made once (Ray is imported only when a pool is built)."""
    if id(ray) not in _REMOTE:
        _REMOTE[id(ray)] = ray.remote(_SliceActor)
    return _REMOTE[id(ray)]


__all__ = ["LostActor", "RayPool", "import_ray"]
