"""sim.ray_pool: the worker pool as Ray actors — bit-for-bit equal to the local pool; a lost actor is replaced.

One small local Ray instance for the module (2 CPUs, no dashboard). The test-only task below is imported by the
actors from this module.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import time

import numpy as np
import pytest

from sim.pool import WorkerError, WorkerPool
from tests.sim.test_pool import RaisingHopper

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                       reason="ray is not installed (the project's `dist` extra: pip install -e '.[dist]')"),
]


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _actions(n: int, steps: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (steps, n, dim))


def _masks(n: int, steps: int) -> list:
    """All envs active, except every 7th step where every other env idles (chunk execution)."""
    idle = np.arange(n) % 2 == 1
    return [~idle if t % 7 == 3 else None for t in range(steps)]


def _wait_dead(ray, actor, timeout_s: float = 30.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            ray.get(actor.pid.remote(), timeout=timeout_s)
        except ray.exceptions.RayActorError:
            return
        time.sleep(0.05)
    raise AssertionError("the killed actor still answers")


def _assert_same_step(x, y, t):
    for a, b in zip(x[:4], y[:4]):
        np.testing.assert_array_equal(a, b, err_msg=f"step {t}")
    assert sorted(x[4]) == sorted(y[4]), f"step {t}: infos keys differ"
    for key in x[4]:
        np.testing.assert_array_equal(x[4][key], y[4][key], err_msg=f"step {t}: infos[{key!r}]")


def test_trajectories_equal_local_pool_bit_for_bit(ray_local):
    from sim.ray_pool import RayPool

    n, steps = 5, 90
    acts, masks = _actions(n, steps), _masks(n, steps)
    with WorkerPool("hopper", n, num_workers=1, seed=3) as local, RayPool("hopper", n, num_actors=2, seed=3) as rp:
        assert rp.worker_envs == [(0, 1), (2, 3, 4)]
        assert rp.metadata["autoreset_mode"] == local.metadata["autoreset_mode"]
        o1, _ = local.reset()
        o2, _ = rp.reset()
        np.testing.assert_array_equal(o1, o2)
        ended = 0
        for t in range(steps):
            r1, r2 = local.step(acts[t], active=masks[t]), rp.step(acts[t], active=masks[t])
            _assert_same_step(r1, r2, t)
            ended += int(np.sum(r1[2] | r1[3]))
        assert ended >= 5, "the rollout must cover same-step autoresets"
        # a reseed with per-env seeds: env i gets its own seed wherever it lives
        seeds = [11 + i for i in range(n)]
        np.testing.assert_array_equal(local.reset(seed=seeds)[0], rp.reset(seed=seeds)[0])
        assert rp.actor_restarts == 0 and rp.lost_actors == []


def test_killed_actor_is_replaced_and_its_episode_rerun(ray_local, caplog):
    from sim.ray_pool import RayPool

    n, steps, kill_at = 4, 40, 12
    acts = _actions(n, steps, seed=1)
    with WorkerPool("hopper", n, num_workers=1, seed=0) as local, RayPool("hopper", n, num_actors=2, seed=0) as rp:
        local.reset()
        rp.reset()
        pid_before = rp.worker_pids[1]
        lengths = np.zeros(n, dtype=int)
        with caplog.at_level(logging.WARNING, logger="sim.ray_pool"):
            for t in range(steps):
                if t == kill_at:
                    assert lengths[2:].min() >= 2, "the kill must land mid-episode in the killed actor's envs"
                    ray_local.kill(rp.actors[1], no_restart=True)
                    _wait_dead(ray_local, rp.actors[1])  # the loss lands in this step, not a later one
                r1, r2 = local.step(acts[t]), rp.step(acts[t])
                _assert_same_step(r1, r2, t)  # the re-run episode goes on exactly as it would have
                lengths = np.where(r1[2] | r1[3], 0, lengths + 1)
        assert rp.actor_restarts == 1
        (event,) = rp.lost_actors
        assert (event.actor, event.env_indices, event.during, event.step) == (1, (2, 3), "step", kill_at)
        assert rp.worker_pids[1] != pid_before
        assert any("actor 1 (envs 2–3) lost during step" in r.getMessage() for r in caplog.records)


def test_exception_in_task_step_is_reported_and_closes(ray_local):
    from sim.ray_pool import RayPool

    pool = RayPool(RaisingHopper, 4, num_actors=2, task_kwargs={"fail_after": 2})
    pool.reset()
    pool.step(np.zeros((4, 3)))
    pool.step(np.zeros((4, 3)))
    with pytest.raises(WorkerError, match=r"(?s)actor [01] \(envs (0–1|2–3)\) raised during step.*boom: simulated "
                                          r"task failure") as err:
        pool.step(np.zeros((4, 3)))
    assert err.value.env_indices == pool.worker_envs[err.value.worker]
    assert pool.closed and pool.actor_restarts == 0


def test_missing_ray_names_the_extra(monkeypatch):
    from sim.ray_pool import import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without Ray gives ``import ray``
    with pytest.raises(ImportError, match=r"`dist` extra"):
        import_ray()
