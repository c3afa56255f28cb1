"""``r2s bench sim``: env-steps/s of the r2s worker pool beside Gymnasium's vector envs and the physics limit.

``run(task, quick)`` returns a dict (the CLI prints it as JSON). Every figure comes from the same run:

* ``limit_steps_per_s``: the physics limit on this machine, ``mujoco.rollout`` with one thread per core (a persistent
  ``Rollout(nthread=os.cpu_count())``) over a batch of 16 initial states drawn as the task's resets draw them,
  ``limit_horizon_steps`` control steps each with a random control held for the frame skip; raw ``mj_step``/s divided
  by the frame skip. No Python, no observation, no reward: what a perfect simulator loop could do.
* ``pool_steps_per_s``: ``sim.pool.WorkerPool`` with its defaults (one worker process per core, at most one per env,
  each stepping its slice in one thread); ``pool_threaded_steps_per_s``: one worker process stepping all envs in one
  thread per core (``num_workers=1, threads_per_worker=os.cpu_count()``), which balances uneven step costs.
* ``sync_steps_per_s`` / ``async_steps_per_s``: ``gymnasium.vector.SyncVectorEnv`` / ``AsyncVectorEnv`` (one process
  per env) of ``gym.make("<Task>-v5")``, same-step autoreset like the pool.
* ``envpool_steps_per_s`` only where ``envpool`` is importable.

Each is measured at 1, 8 and 16 envs with uniformly random actions; only stepping is timed (start-up and a warm-up
are excluded). The machine is shared, so the configurations are measured in interleaved rounds of short windows and
each figure is the median over rounds; ``ratio_to_limit_16`` (``ratio_to_limit_16_threaded``) is the median over
rounds of the pool's 16-env rate divided by the limit measured right beside it (before and after) in the same round.
``worker_rss_mb`` is the peak resident set (VmHWM) of a pool worker holding 8 envs (the 16-env pool's workers on a
2-core machine; measured on a separate 8-env, 1-worker pool otherwise); ``worker_rss_mb_threaded_16`` that of the
threaded pool's one worker holding 16. ``load_avg_before``/``after`` record how busy the machine was.

``backend="ray"`` (the ``dist`` extra): the same JSON with ``sim.ray_pool.RayPool`` in the pool's place —
``pool_steps_per_s`` one actor per CPU of the Ray instance (at most one per env), ``pool_threaded_steps_per_s`` one
actor stepping all envs in one thread per core — plus ``actors`` (actors per env count) and
``steps_per_s_by_actors_16`` (16 envs on 1 actor and on one actor per CPU, one thread each). Ray joins the cluster
``RAY_ADDRESS`` names, or starts a local instance with one CPU per core; ``worker_rss_mb`` is read from
``/proc`` and so is null for actors on other nodes.

``backend="genesis"`` (the ``genesis`` extra, in its own venv — see ``sim.genesis_pool``): the same JSON with
``sim.genesis_pool.GenesisPool`` (all envs in one Genesis scene, stepped in this process) in the pool's place
(``GENESIS_TASKS`` there: reach and the locomotion tasks); Genesis runs on the GPU when torch sees one, else on its
CPU backend (one thread unless ``QD_NUM_THREADS`` says otherwise). There is no threaded variant:
``pool_threaded_steps_per_s``, ``ratio_to_limit_16_threaded``, ``worker_rss_mb_threaded_16`` and
``pool_threaded_config`` are null; ``worker_rss_mb`` is this process's peak RSS after the 16-env pool ran
(``worker_rss_envs`` null: the one process held every pool); the limit and ``ratio_to_limit_16`` stay MuJoCo's
(``mujoco.rollout`` of the same task), and so do Gymnasium's vector envs. Added: ``genesis_backend``,
``genesis_precision``, ``genesis_build_s`` (``scene.build`` seconds per env count: kernel compilation on a cold
cache, about a minute here, seconds once Quadrants' disk cache holds them) and, outside ``--quick``,
``genesis_steps_per_s_large`` at ``GENESIS_LARGE_COUNTS`` envs (1k–16k on a GPU, 128 and 1024 on a CPU).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import numpy as np

ENV_COUNTS = (1, 8, 16)
GYM_IDS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5"}
GENESIS_LARGE_COUNTS = {"gpu": (1024, 4096, 16384), "cpu": (128, 1024)}
LIMIT_BATCH = 16
LIMIT_HORIZON = 25
"""Control steps per limit rollout: random-action Hopper episodes last about this long, so the limit's states
(upright, falling, first contacts) resemble those the vector envs step through."""


def _vm_hwm_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class _Limit:
    """Physics limit: persistent ``mujoco.rollout.Rollout`` with one thread per core."""

    def __init__(self, env, seed: int):
        import mujoco
        import mujoco.rollout

        self.mujoco = mujoco
        self.model = env.model
        self.frame_skip = env.frame_skip
        self.nthread = os.cpu_count() or 1
        self.rollout = mujoco.rollout.Rollout(nthread=self.nthread)
        self.datas = [mujoco.MjData(self.model) for _ in range(self.nthread)]
        spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
        self.state0 = np.zeros((LIMIT_BATCH, mujoco.mj_stateSize(self.model, spec)))
        for i in range(LIMIT_BATCH):
            env.reset(seed=seed + i)
            mujoco.mj_getState(env.model, env.data, self.state0[i], spec)
        rng = np.random.default_rng(seed)
        lo, hi = self.model.actuator_ctrlrange.T
        ctrl = rng.uniform(lo, hi, (LIMIT_BATCH, LIMIT_HORIZON, self.model.nu))
        self.control = np.repeat(ctrl, self.frame_skip, axis=1)
        self.nstep = LIMIT_HORIZON * self.frame_skip
        self.out = np.zeros((LIMIT_BATCH, self.nstep, self.state0.shape[1]))
        self._once()

    def _once(self) -> None:
        self.rollout.rollout(self.model, self.datas, self.state0, self.control, state=self.out)

    def measure(self, window_s: float) -> float:
        n, t0 = 0, time.perf_counter()
        while True:
            self._once()
            n += LIMIT_BATCH * self.nstep
            dt = time.perf_counter() - t0
            if dt >= window_s:
                return n / dt / self.frame_skip

    def close(self) -> None:
        self.rollout.close()


def _stepper(env, n: int, low: np.ndarray, high: np.ndarray, seed: int) -> Callable[[float], float]:
    """A function measuring ``env``'s env-steps/s over a window of random actions (already reset and warmed up)."""
    rng = np.random.default_rng(seed)
    acts = rng.uniform(low, high, (64, n, low.shape[0])).astype(np.float32)
    env.reset(seed=seed)
    for k in range(10):
        env.step(acts[k % 64])

    def measure(window_s: float) -> float:
        steps, t0 = 0, time.perf_counter()
        while True:
            env.step(acts[steps & 63])
            steps += 1
            if steps & 7 == 0:
                dt = time.perf_counter() - t0
                if dt >= window_s:
                    return steps * n / dt

    return measure


def _gym_vector(gym_id: str, n: int, kind: str):
    import gymnasium as gym

    fns = [lambda: gym.make(gym_id) for _ in range(n)]
    mode = gym.vector.AutoresetMode.SAME_STEP
    if kind == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=mode)
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=mode)


def _envpool(gym_id: str, n: int):
    try:
        import envpool  # noqa: F401  (optional peer; not installed by default)
    except Exception:
        return None
    try:
        name = gym_id.replace("-v5", "-v4")
        return envpool.make_gymnasium(name, num_envs=n, batch_size=n, num_threads=min(n, os.cpu_count() or 1))
    except Exception:
        return None


def _pool_makers(backend: str, cpus: int):
    """(default pool, threaded pool) constructors ``f(task, n, seed)`` for ``backend``."""
    if backend == "mujoco":
        from sim.pool import WorkerPool

        return (lambda task, n, seed: WorkerPool(task, n, seed=seed),
                lambda task, n, seed: WorkerPool(task, n, num_workers=1, threads_per_worker=cpus, seed=seed))
    if backend == "ray":
        from sim.ray_pool import RayPool, import_ray

        ray = import_ray()
        if not ray.is_initialized():
            ray.init(include_dashboard=False, **({} if os.environ.get("RAY_ADDRESS") else {"num_cpus": cpus}))
        # The bench holds all its pools at once and steps one at a time: its actors reserve no CPU (placement
        # would otherwise wait for CPUs the idle pools hold).
        free = {"num_cpus": 0}
        return (lambda task, n, seed: RayPool(task, n, seed=seed, actor_options=free),
                lambda task, n, seed: RayPool(task, n, num_actors=1, threads_per_actor=cpus, seed=seed,
                                              actor_options=free))
    if backend == "genesis":
        from sim.genesis_pool import GenesisPool, import_genesis

        import_genesis()  # fail before anything is built where the extra is absent
        device = _genesis_device()
        return (lambda task, n, seed: GenesisPool(task, n, seed=seed, backend=device), None)
    raise ValueError(f"bench sim: unknown backend {backend!r}; expected 'mujoco', 'ray' or 'genesis'")


def _genesis_large(make, task: str, low, high, seed: int, window: float, counts) -> dict[str, float]:
    """env-steps/s of a Genesis pool at each of ``counts`` envs, one pool at a time (each built, measured, closed)."""
    out = {}
    for n in counts:
        pool = make(task, n, seed)
        try:
            out[str(n)] = round(_stepper(pool, n, low, high, seed + n)(window), 1)
        finally:
            pool.close()
    return out


def _genesis_device() -> str:
    import torch

    return "gpu" if torch.cuda.is_available() else "cpu"


def run(task: str | None = None, quick: bool = False, backend: str = "mujoco") -> dict:
    """Measure and return env-steps/s of the pool, Gymnasium's vector envs and the physics limit (see module doc).
    ``task``: default ``hopper``."""
    from sim.registry import make_task

    task = task or "hopper"

    rounds, window = (2, 0.5) if quick else (5, 2.0)
    seed = 0
    cpus = os.cpu_count() or 1
    make_default, make_threaded = _pool_makers(backend, cpus)
    load_before = os.getloadavg()
    probe = make_task(task)
    low = probe.action_space.low.astype(np.float64)
    high = probe.action_space.high.astype(np.float64)
    limit = _Limit(probe, seed)
    gym_id = GYM_IDS.get(task)

    envs: dict[tuple[str, int], object] = {}
    measures: dict[tuple[str, int], Callable[[float], float]] = {}
    pools: dict[int, object] = {}
    threaded: dict[int, object] = {}
    try:
        # Gymnasium's AsyncVectorEnv forks: start it before our pools so that its children inherit none of their pipes.
        if gym_id is not None:
            for n in ENV_COUNTS:
                envs[("sync", n)] = _gym_vector(gym_id, n, "sync")
                envs[("async", n)] = _gym_vector(gym_id, n, "async")
                ep = _envpool(gym_id, n)
                if ep is not None:
                    envs[("envpool", n)] = ep
        for n in ENV_COUNTS:
            pools[n] = envs[("pool", n)] = make_default(task, n, seed)
            if make_threaded is not None:
                threaded[n] = envs[("pool_threaded", n)] = make_threaded(task, n, seed)
        if backend == "ray":  # actor scaling at 16 envs: one actor, one thread (the other end is ("pool", 16))
            from sim.ray_pool import RayPool

            envs[("ray_1_actor", 16)] = RayPool(task, 16, num_actors=1, seed=seed, actor_options={"num_cpus": 0})
        for (kind, n), env in envs.items():
            measures[(kind, n)] = _stepper(env, n, low, high, seed + n)

        results: dict[tuple[str, int], list[float]] = {k: [] for k in measures}
        limits: list[float] = []
        ratios: dict[str, list[float]] = {"pool": [], "pool_threaded": []}
        order = sorted(measures, key=lambda k: (-k[1], not k[0].startswith("pool"), k[0]))
        for _ in range(rounds):
            for key in order:
                if key[1] == 16 and key[0] in ratios:
                    before = limit.measure(window)
                    value = measures[key](window)
                    after = limit.measure(window)
                    limits += [before, after]
                    ratios[key[0]].append(value / (0.5 * (before + after)))
                else:
                    value = measures[key](window)
                results[key].append(value)

        def table(kind: str) -> dict[str, float] | None:
            if (kind, ENV_COUNTS[0]) not in results:
                return None
            return {str(n): round(statistics.median(results[(kind, n)]), 1) for n in ENV_COUNTS}

        # Peak RSS of a worker with 8 envs: the 16-env pool's workers on 2 cores, else a pool made for it.
        if backend == "genesis":  # one process holds every pool
            rss = [_vm_hwm_mb(os.getpid())]
        elif all(len(w) == 8 for w in pools[16].worker_envs):
            rss = [_vm_hwm_mb(pid) for pid in pools[16].worker_pids]
        else:
            from sim.pool import WorkerPool

            with WorkerPool(task, 8, num_workers=1, seed=seed) as p8:
                _stepper(p8, 8, low, high, seed)(min(window, 0.5))
                rss = [_vm_hwm_mb(pid) for pid in p8.worker_pids]
        rss = [r for r in rss if r is not None]
        rss_threaded = [r for r in map(_vm_hwm_mb, threaded[16].worker_pids) if r is not None] if threaded else []

        pool_t, async_t, sync_t = table("pool"), table("async"), table("sync")
        pool16 = pool_t["16"]
        result = {
            "task": task,
            "gym_id": gym_id,
            "frame_skip": limit.frame_skip,
            "cpu_count": cpus,
            "quick": quick,
            "rounds": rounds,
            "window_s": window,
            "limit_steps_per_s": round(statistics.median(limits), 1),
            "limit_horizon_steps": LIMIT_HORIZON,
            "limit_threads": limit.nthread,
            "pool_steps_per_s": pool_t,
            "pool_threaded_steps_per_s": table("pool_threaded"),
            "async_steps_per_s": async_t,
            "sync_steps_per_s": sync_t,
            "pool_workers": {str(n): pools[n].num_workers for n in ENV_COUNTS},
            "ratio_to_limit_16": round(statistics.median(ratios["pool"]), 3),
            "ratio_to_limit_16_threaded": (round(statistics.median(ratios["pool_threaded"]), 3)
                                           if ratios["pool_threaded"] else None),
            "speedup_vs_async_16": round(pool16 / async_t["16"], 2) if async_t else None,
            "speedup_vs_sync_16": round(pool16 / sync_t["16"], 2) if sync_t else None,
            "worker_rss_mb": round(max(rss), 1) if rss else None,
            "worker_rss_envs": 8,
            "worker_rss_mb_threaded_16": round(max(rss_threaded), 1) if rss_threaded else None,
            "pool_threaded_config": {"num_workers": 1, "threads_per_worker": cpus} if threaded else None,
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        }
        ep = table("envpool")
        if ep is not None:
            result["envpool_steps_per_s"] = ep
        if backend == "ray":
            result["backend"] = "ray"
            result["actors"] = result["pool_workers"]
            result["steps_per_s_by_actors_16"] = {
                "1": round(statistics.median(results[("ray_1_actor", 16)]), 1),
                str(pools[16].num_workers): pool16}
        if backend == "genesis":
            result["backend"] = "genesis"
            result["worker_rss_envs"] = None  # one process held the 1-, 8- and 16-env pools
            result["genesis_backend"] = pools[16].backend
            result["genesis_precision"] = pools[16].precision
            result["genesis_build_s"] = {str(n): round(pools[n].build_s, 1) for n in ENV_COUNTS}
            if not quick:
                counts = GENESIS_LARGE_COUNTS["cpu" if pools[16].backend == "cpu" else "gpu"]
                result["genesis_steps_per_s_large"] = _genesis_large(make_default, task, low, high, seed, window,
                                                                     counts)
        return result
    finally:
        for env in envs.values():
            try:
                env.close()
            except Exception:
                pass
        limit.close()
        probe.close()
