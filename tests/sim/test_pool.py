"""sim.pool: VectorEnv semantics with same-step autoreset, determinism, failure handling, refused actions.

The test-only tasks below are imported by the pool's worker processes from this module (the pool accepts a task
class as well as a registered name).
"""

from __future__ import annotations

import os
import signal
import time

import gymnasium as gym
import numpy as np
import pytest

from sim.core import ActionError
from sim.pool import SyncPool, WorkerError, WorkerPool, make_pool
from sim.registry import make_task
from sim.tasks.locomotion import HopperTask


class RaisingHopper(HopperTask):
    """Raises inside ``step`` after ``fail_after`` steps (generic per-env path: it overrides ``step``)."""

    def __init__(self, fail_after: int = 3, **kw):
        super().__init__(**kw)
        self.fail_after = fail_after

    def step(self, action):
        if self._elapsed >= self.fail_after:
            raise RuntimeError("boom: simulated task failure")
        return super().step(action)


class SleepyHopper(HopperTask):
    """Hangs (sleeps) inside ``step`` after ``sleep_after`` steps."""

    def __init__(self, sleep_after: int = 2, sleep_s: float = 60.0, **kw):
        super().__init__(**kw)
        self.sleep_after, self.sleep_s = sleep_after, sleep_s

    def step(self, action):
        if self._elapsed >= self.sleep_after:
            time.sleep(self.sleep_s)
        return super().step(action)


class WorkerShyHopper(HopperTask):
    """Cannot be built outside the process ``parent_pid``: a worker that fails while starting."""

    def __init__(self, parent_pid: int, **kw):
        if os.getpid() != parent_pid:
            raise RuntimeError("cannot build in a worker")
        super().__init__(**kw)


class SuccessfulHopper(HopperTask):
    """Reports ``info["success"]`` (x beyond 0.01 m) — exercises the generic path's success flags."""

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        info["success"] = bool(self.data.qpos[0] > 0.01)
        return obs, reward, terminated, truncated, info


def _actions(n: int, steps: int, dim: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (steps, n, dim))


def _reference(task: str, n: int, seed: int, actions: np.ndarray, **kw):
    """Single envs stepped one by one with same-step autoreset: the semantics the pools must reproduce."""
    envs = [make_task(task, **kw) for _ in range(n)]
    first = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    out = []
    for a in actions:
        rows, final = [], {}
        for i, e in enumerate(envs):
            o, r, te, tr, _ = e.step(a[i])
            if te or tr:
                final[i] = o
                o, _ = e.reset()
            rows.append((o, r, te, tr))
        obs, rew, term, trunc = (np.array(x) for x in zip(*rows))
        out.append((obs, rew, term, trunc, final))
    return first, out


def _run(pool, actions):
    return [pool.step(a) for a in actions]


@pytest.fixture(scope="module")
def hopper_pool():
    with WorkerPool("hopper", 4, num_workers=2, seed=7) as pool:
        yield pool


def test_vector_env_api(hopper_pool):
    pool = hopper_pool
    assert isinstance(pool, gym.vector.VectorEnv)
    assert pool.metadata["autoreset_mode"] == gym.vector.AutoresetMode.SAME_STEP
    assert pool.num_envs == 4 and pool.num_workers == 2
    assert pool.worker_envs == [(0, 1), (2, 3)]
    assert pool.single_observation_space.shape == (11,) and pool.single_action_space.shape == (3,)
    assert pool.observation_space.shape == (4, 11) and pool.action_space.shape == (4, 3)
    obs, info = pool.reset(seed=3)
    assert obs.shape == (4, 11) and obs.dtype == np.float64 and info == {}
    obs, rew, term, trunc, info = pool.step(pool.action_space.sample())
    assert obs.shape == (4, 11) and rew.shape == term.shape == trunc.shape == (4,)
    assert rew.dtype == np.float64 and term.dtype == trunc.dtype == np.bool_
    assert pool.observation_space.contains(obs)


def test_matches_single_envs_with_same_step_autoreset():
    """Every pool (processes, threads, in-process) equals single envs stepped one by one, bit for bit."""
    n, steps, seed = 5, 120, 100
    acts = _actions(n, steps)
    first, ref = _reference("hopper", n, seed, acts)
    pools = [SyncPool("hopper", n, seed=seed), WorkerPool("hopper", n, num_workers=2, seed=seed),
             WorkerPool("hopper", n, num_workers=1, threads_per_worker=2, seed=seed)]
    try:
        for pool in pools:
            obs0, _ = pool.reset()  # the constructor's seed: env i gets seed + i
            np.testing.assert_array_equal(obs0, first)
            ended = 0
            ep_return, ep_len = np.zeros(n), np.zeros(n, dtype=int)
            for t, a in enumerate(acts):
                obs, rew, term, trunc, info = pool.step(a)
                r_obs, r_rew, r_term, r_trunc, r_final = ref[t]
                np.testing.assert_array_equal(obs, r_obs)
                np.testing.assert_array_equal(rew, r_rew)
                np.testing.assert_array_equal(term, r_term)
                np.testing.assert_array_equal(trunc, r_trunc)
                ep_return += rew
                ep_len += 1
                done = term | trunc
                if r_final:
                    np.testing.assert_array_equal(info["_final_obs"], done)
                    for i, final in r_final.items():
                        np.testing.assert_array_equal(info["final_obs"][i], final)
                    assert np.all(info["final_obs"][~done] == 0)
                    np.testing.assert_allclose(info["episode_return"][done], ep_return[done])
                    np.testing.assert_array_equal(info["episode_length"][done], ep_len[done])
                    np.testing.assert_array_equal(info["_episode_return"], done)
                    ep_return[done], ep_len[done] = 0.0, 0
                    ended += len(r_final)
                else:
                    assert "final_obs" not in info
            assert ended > 5
    finally:
        for pool in pools:
            pool.close()


def test_truncation_autoreset_and_final_obs():
    """A time limit from task_kwargs: every env truncates at step 4, obs is already the next episode's first."""
    acts = _actions(3, 9, dim=6)
    first, ref = _reference("halfcheetah", 3, 0, acts, max_episode_steps=4)
    with make_pool("halfcheetah", 3, backend="pool", num_workers=2, seed=0,
                   task_kwargs={"max_episode_steps": 4}) as pool:
        pool.reset(seed=0)
        for t, a in enumerate(acts):
            obs, rew, term, trunc, info = pool.step(a)
            assert not term.any()
            if t in (3, 7):
                assert trunc.all() and info["_final_obs"].all()
                np.testing.assert_array_equal(info["episode_length"], [4, 4, 4])
                for i in range(3):
                    np.testing.assert_array_equal(info["final_obs"][i], ref[t][4][i])
                np.testing.assert_array_equal(obs, ref[t][0])  # first obs of the next episode
            else:
                assert not trunc.any() and "final_obs" not in info


def test_determinism_seed_and_worker_count():
    with WorkerPool("walker2d", 6, num_workers=1, seed=5) as p1, \
            WorkerPool("walker2d", 6, num_workers=3, seed=5) as p3:
        acts = _actions(6, 60, dim=6)
        o1, _ = p1.reset(seed=42)
        o3, _ = p3.reset(seed=42)
        np.testing.assert_array_equal(o1, o3)
        for a in acts:
            r1, r3 = p1.step(a), p3.step(a)
            for x, y in zip(r1[:4], r3[:4]):
                np.testing.assert_array_equal(x, y)
        # a different seed gives a different start; the same seed the same one again
        assert not np.array_equal(p1.reset(seed=43)[0], o1)
        np.testing.assert_array_equal(p1.reset(seed=42)[0], o1)
        # per-env seed lists
        seeds = [42 + i for i in range(6)]
        np.testing.assert_array_equal(p3.reset(seed=seeds)[0], o1)


def test_bad_actions_refused_before_any_env_moves(hopper_pool):
    pool = hopper_pool
    with SyncPool("hopper", 4, seed=7) as twin:
        pool.reset(seed=1)
        twin.reset(seed=1)
        good = _actions(4, 1)[0]
        bad_shape = np.zeros((4, 4))
        with pytest.raises(ActionError, match=r"shape \(4, 4\).*expects \(4, 3\)"):
            pool.step(bad_shape)
        with pytest.raises(ActionError, match="shape"):
            pool.step(np.zeros(3))
        nan = good.copy()
        nan[2, 1] = np.nan
        with pytest.raises(ActionError, match=r"env index \[2\]"):
            pool.step(nan)
        inf = good.copy()
        inf[0, 0] = np.inf
        inf[3, 2] = -np.inf
        with pytest.raises(ActionError, match=r"env index \[0, 3\]"):
            pool.step(inf)
        # nothing moved: the next step equals a twin that never saw the bad batches
        for x, y in zip(pool.step(good)[:4], twin.step(good)[:4]):
            np.testing.assert_array_equal(x, y)
        # out-of-range actions are clipped like the single env does
        big = good * 10
        for x, y in zip(pool.step(big)[:4], twin.step(np.clip(big, -1, 1))[:4]):
            np.testing.assert_array_equal(x, y)


def test_step_before_reset_is_refused():
    with SyncPool("hopper", 2) as pool, pytest.raises(gym.error.ResetNeeded):
        pool.step(np.zeros((2, 3)))


def test_killed_worker_is_reported_with_its_envs():
    pool = WorkerPool("hopper", 4, num_workers=2, seed=0)
    pool.reset()
    pool.step(np.zeros((4, 3)))
    os.kill(pool.worker_pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 .*envs 2–3.*died.*SIGKILL") as err:
        pool.step(np.zeros((4, 3)))
    assert time.monotonic() - t0 < 5.0
    assert err.value.worker == 1 and err.value.env_indices == (2, 3)
    assert pool.closed
    with pytest.raises(WorkerError, match="closed"):
        pool.step(np.zeros((4, 3)))


def test_exception_in_task_step_is_reported_with_its_text():
    pool = WorkerPool(RaisingHopper, 4, num_workers=2, task_kwargs={"fail_after": 2})
    pool.reset()
    pool.step(np.zeros((4, 3)))
    pool.step(np.zeros((4, 3)))
    with pytest.raises(WorkerError, match=r"(?s)worker [01] .*envs (0–1|2–3).*raised during step.*boom: simulated "
                                          r"task failure.*in env [02]") as err:
        pool.step(np.zeros((4, 3)))  # both workers raise; the first answer is reported
    assert "boom" in err.value.cause
    assert err.value.env_indices == pool.worker_envs[err.value.worker]
    assert pool.closed


def test_failures_at_start():
    with pytest.raises(TypeError, match="no_such_kwarg"):  # checked on a probe env in the caller first
        WorkerPool(HopperTask, 2, task_kwargs={"no_such_kwarg": 1})
    with pytest.raises(WorkerError, match=r"(?s)worker [01] .*raised during start.*cannot build in a worker"):
        WorkerPool(WorkerShyHopper, 2, num_workers=2, task_kwargs={"parent_pid": os.getpid()})


def test_hung_worker_times_out():
    pool = WorkerPool(SleepyHopper, 2, num_workers=2, step_timeout_s=1.0, task_kwargs={"sleep_after": 1})
    pool.reset()
    pool.step(np.zeros((2, 3)))
    t0 = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 0 .*envs 0.*did not answer step within 1 s.*worker 1"):
        pool.step(np.zeros((2, 3)))
    assert 0.9 < time.monotonic() - t0 < 6.0
    assert pool.closed
    for pid in pool.worker_pids:  # the hung workers were stopped
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_success_flags_travel_in_infos():
    for backend in ("sync", "pool"):
        with make_pool(SuccessfulHopper, 3, backend=backend, num_workers=2, seed=0,
                       task_kwargs={"max_episode_steps": 5}) as pool:
            pool.reset()
            for _ in range(5):
                obs, rew, term, trunc, info = pool.step(np.tile([1.0, 1.0, 1.0], (3, 1)))
                assert info["success"].dtype == np.bool_ and info["_success"].all()
            assert "final_info" in info and info["_final_info"].all()
            np.testing.assert_array_equal(info["final_info"]["success"], info["success"])


def test_close_stops_workers_and_frees_memory():
    pool = WorkerPool("hopper", 2, num_workers=2)
    pids, name = pool.worker_pids, pool._shm.name
    pool.reset()
    pool.close()
    pool.close()  # idempotent
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not os.path.exists(f"/dev/shm/{name}")


def test_make_pool_and_sync_backend():
    with make_pool("hopper", 1, backend="sync", num_workers=4, step_timeout_s=1.0) as pool:
        assert isinstance(pool, SyncPool)
        obs, _ = pool.reset(seed=0)
        assert obs.shape == (1, 11)
    with pytest.raises(ValueError, match="backend"):
        make_pool("hopper", 2, backend="ray")
    with pytest.raises(ValueError, match="num_workers"):
        WorkerPool("hopper", 2, num_workers=3)


@pytest.mark.parametrize("kw", [
    {"randomization": {"mass": (0.8, 1.2), "friction": (0.5, 1.5)}},  # batched path, randomised at each reset
    {"randomization": {"obs_noise_std": 0.01, "action_latency_steps": 2}},  # generic per-env path
    {"terminate_when_unhealthy": False, "max_episode_steps": 30},
], ids=["dynamics", "noise+latency", "no-termination"])
def test_pool_equals_single_envs_with_task_options(kw):
    n, steps = 3, 70
    acts = _actions(n, steps)
    first, ref = _reference("hopper", n, 20, acts, **kw)
    with SyncPool("hopper", n, seed=20, task_kwargs=kw, threads=2) as pool:
        np.testing.assert_array_equal(pool.reset()[0], first)
        for t, a in enumerate(acts):
            obs, rew, term, trunc, info = pool.step(a)
            np.testing.assert_array_equal(obs, ref[t][0])
            np.testing.assert_array_equal(rew, ref[t][1])
            np.testing.assert_array_equal(term | trunc, ref[t][2] | ref[t][3])
            for i, final in ref[t][4].items():
                np.testing.assert_array_equal(info["final_obs"][i], final)


def test_worker_memory():
    """Peak resident memory of a worker holding 8 Hopper envs stays within the 120 MB budget."""
    with WorkerPool("hopper", 8, num_workers=1) as pool:
        pool.reset()
        for a in _actions(8, 50):
            pool.step(a)
        with open(f"/proc/{pool.worker_pids[0]}/status") as f:
            hwm_kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    assert hwm_kb / 1024 < 120
