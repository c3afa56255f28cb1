"""sim.genesis_pool: the reach task on Genesis against the MuJoCo task, and the pool's semantics.

The Genesis tests need the ``genesis`` extra, which lives in its own venv (``.venv-genesis``: it would replace
packages the main venv pins, see ``sim.genesis_pool.INSTALL_HINT``); without it they skip. They run on Genesis' CPU
backend with 2–3 envs. The first ``scene.build`` on a machine compiles Genesis' kernels (≈ 65 s on one core here;
Quadrants caches them in ``~/.cache/quadrants``), later runs take ≈ 15 s (Genesis' init ≈ 8 s, builds seconds):
hence the ``genesis`` marker. Run them with ``.venv-genesis/bin/python -m pytest -m genesis tests/sim/test_genesis.py``.

Reach: with targets that keep every joint off its limits and the arm off the table, Genesis'
rigid solver (MuJoCo's formulation, float32 here) follows MuJoCo's trajectory: per-step rewards agree within 1e-4
(measured ≤ 6e-6) and joint positions within 1e-3 rad. A joint limit or a contact is resolved with Genesis' own
constraint parameters, and there the trajectories part (the gripper held closed at its 0 limit differs by up to
5e-3 rad / 0.9 rad/s): the rollout below keeps the gripper open for that reason.

Hopper: Gymnasium's model starts with the thigh and leg joints at their upper limit (0) and integrates with RK4,
which Genesis lacks (Euler here). So the default hopper parts from MuJoCo's from the first steps (per-step rewards
within 0.05 over 5 steps, measured ≤ 0.03, then further); on a hopper with joint limits off, Euler on both sides
and lifted 0.5 m (no floor contact before it falls) the two agree to 1e-5 per step (measured ≤ 1e-6) over 40 steps,
falls, terminations and autoresets included — which checks the motor gear, observation, reward and health test.
"""

from __future__ import annotations

import copy
import importlib.util

import mujoco
import numpy as np
import pytest

from sim.core import ActionError
from sim.genesis_pool import GenesisPool, GenesisUnavailable, check_supported
from sim.pool import SyncPool
from sim.tasks.locomotion import HopperTask

HAVE_GENESIS = importlib.util.find_spec("genesis") is not None
skip_no_genesis = pytest.mark.skipif(
    not HAVE_GENESIS, reason="genesis-world is not importable here (the `genesis` extra lives in its own venv, "
                             ".venv-genesis: see sim.genesis_pool.INSTALL_HINT)")

REWARD_TOL = 1e-4
QPOS_TOL = 1e-3


def _targets(obs0: np.ndarray, steps: int, seed: int = 0) -> np.ndarray:
    """Joint targets near each env's start, gripper held open at 0.5 rad (off its limits), [steps, N, 6]."""
    rng = np.random.default_rng(seed)
    q0 = obs0[:, :6]
    t = q0[None] + rng.normal(0.0, 0.05, (steps, *q0.shape))
    t[..., 5] = 0.5
    return t


# ---- without Genesis: refusals before anything is imported -----------------------------------------------------
def test_refuses_tasks_and_options_it_lacks():
    with pytest.raises(ValueError, match=r"task: the Genesis backend has \['reach', 'hopper', .*\]; got 'push'"):
        GenesisPool("push", 2)
    with pytest.raises(ValueError, match="task_kwargs.randomization"):
        GenesisPool("reach", 2, task_kwargs={"randomization": {"mass": (0.9, 1.1)}})
    with pytest.raises(ValueError, match="task_kwargs.render_mode"):
        GenesisPool("reach", 2, task_kwargs={"render_mode": "rgb_array"})
    with pytest.raises(ValueError, match="backend: expected one of"):
        GenesisPool("reach", 2, backend="tpu")
    with pytest.raises(ValueError, match="precision: expected one of"):
        GenesisPool("reach", 2, precision="16")


def test_refuses_an_overlay_with_a_command_delay(tmp_path, monkeypatch):
    delayed, plain = tmp_path / "delayed.yaml", tmp_path / "plain.yaml"
    delayed.write_text("robot: so101\ncommand_delay_substeps: 2\n")
    plain.write_text("robot: so101\ncommand_delay_substeps: 0\n")
    with pytest.raises(ValueError, match="command_delay_substeps > 0"):
        check_supported("reach", {"robot_overlay": str(delayed)})
    monkeypatch.setenv("R2S_ROBOT_OVERLAY", str(delayed))
    with pytest.raises(ValueError, match="command_delay_substeps > 0"):
        check_supported("reach", {})
    check_supported("reach", {"robot_overlay": str(plain)})  # the kwarg wins over the env var; no delay: accepted
    check_supported("hopper", {})  # not an arm task: the overlay is not its


@pytest.mark.skipif(HAVE_GENESIS, reason="genesis-world is installed here")
def test_without_the_extra_says_how_to_install_it():
    with pytest.raises(GenesisUnavailable, match=r"pip install -e '\.\[dev,genesis\]'"):
        GenesisPool("reach", 2)


@pytest.mark.skipif(HAVE_GENESIS, reason="genesis-world is installed here")
def test_bench_sim_genesis_without_the_extra_exits_2_naming_it(capsys):
    from stack import cli

    assert cli.main(["bench", "sim", "--backend", "genesis", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "r2s bench sim: genesis-world is not importable" in err and ".venv-genesis" in err


# ---- with Genesis (CPU backend, 2-3 envs) -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def pools():
    g = GenesisPool("reach", 3, seed=11)
    m = SyncPool("reach", 3, seed=11)
    yield g, m
    g.close()
    m.close()


@pytest.mark.genesis
@skip_no_genesis
def test_rollout_rewards_match_mujoco(pools):
    g, m = pools
    og, _ = g.reset(seed=11)
    om, _ = m.reset(seed=11)
    np.testing.assert_array_equal(og, om)  # the same initial state: drawn by the MuJoCo task for both
    assert g.obs_layout == m.obs_layout and g.single_observation_space == m.single_observation_space
    worst = 0.0
    for a in _targets(og, 30):
        og, rg, tg, trg, _ = g.step(a)
        om, rm, tm, trm, _ = m.step(a)
        worst = max(worst, float(np.abs(rg - rm).max()))
        np.testing.assert_allclose(og[:, :6], om[:, :6], atol=QPOS_TOL)
        np.testing.assert_allclose(og[:, 12:15], om[:, 12:15], atol=QPOS_TOL)  # fingertip, m
        np.testing.assert_array_equal(og[:, 15:], om[:, 15:])  # goal
        np.testing.assert_array_equal(tg | trg, tm | trm)
    assert worst < REWARD_TOL, f"largest per-step reward difference {worst:.2e}"
    assert np.all(rg < 0.0)  # dense reward: −distance (a wrong sign or a zero reward would pass the comparison)


@pytest.mark.genesis
@skip_no_genesis
def test_autoreset_active_mask_and_bad_actions_as_the_mujoco_pool():
    kw = {"max_episode_steps": 4, "action_mode": "delta"}
    with GenesisPool("reach", 2, seed=3, task_kwargs=kw) as g, SyncPool("reach", 2, seed=3, task_kwargs=kw) as m:
        og, _ = g.reset()
        om, _ = m.reset()
        np.testing.assert_array_equal(og, om)
        with pytest.raises(ActionError, match=r"env index \[1\]"):
            g.step(np.array([[0.0] * 6, [np.nan] + [0.0] * 5]))
        np.testing.assert_array_equal(g.step(np.zeros((2, 6)), active=np.array([True, False]))[0][1], og[1])
        m.step(np.zeros((2, 6)), active=np.array([True, False]))
        rng = np.random.default_rng(1)
        ended = 0
        for _ in range(6):
            a = rng.uniform(-0.3, 0.3, (2, 6))
            og, rg, tg, trg, ig = g.step(a)
            om, rm, tm, trm, im = m.step(a)
            np.testing.assert_array_equal(trg, trm)  # env 1 idled once: it ends one step after env 0
            np.testing.assert_allclose(rg, rm, atol=REWARD_TOL)
            if trg.any():
                ended += int(trg.sum())
                np.testing.assert_array_equal(ig["_final_obs"], trg)
                np.testing.assert_array_equal(ig["episode_length"], im["episode_length"])
                np.testing.assert_allclose(ig["episode_return"], im["episode_return"], atol=4 * REWARD_TOL)
                np.testing.assert_allclose(ig["final_obs"][:, :6], im["final_obs"][:, :6], atol=QPOS_TOL)
                np.testing.assert_array_equal(og[trg], om[trg])  # the next episode's start: the MuJoCo task's draw
                assert ig["final_info"]["_success"].tolist() == trg.tolist()
        assert ended == 2


class FreeHopper(HopperTask):
    """Hopper lifted 0.5 m, joint limits off, Euler integrator (own model copy): no constraint in a short rollout.
    Genesis reads the integrator and the disabled limits from the model the pool's MuJoCo sampler holds."""

    def __init__(self, **kw):
        super().__init__(**kw)
        m = copy.deepcopy(self.model)
        m.opt.integrator = mujoco.mjtIntegrator.mjINT_EULER
        m.opt.disableflags |= int(mujoco.mjtDisableBit.mjDSBL_LIMIT)
        self.model, self.data = m, mujoco.MjData(m)
        self._qpos, self._qvel = self.data.qpos, self.data.qvel

    def _reset_model(self) -> None:
        super()._reset_model()
        self._qpos[1] += 0.5


def _hopper_rollout(task, steps: int, n: int = 3, seed: int = 2) -> tuple[list, int]:
    """Per-step largest reward difference Genesis vs MuJoCo on random actions, and how many episodes ended."""
    rng = np.random.default_rng(seed)
    diffs, ended = [], 0
    with GenesisPool(task, n, seed=seed) as g, SyncPool(task, n, seed=seed) as m:
        og, _ = g.reset()
        om, _ = m.reset()
        np.testing.assert_array_equal(og, om)
        for _ in range(steps):
            a = rng.uniform(-1.0, 1.0, (n, 3))
            og, rg, tg, trg, _ = g.step(a)
            om, rm, tm, trm, _ = m.step(a)
            diffs.append(float(np.abs(rg - rm).max()))
            if diffs[-1] < 1e-3:  # while they agree, so do the episode ends
                np.testing.assert_array_equal(tg, tm)
            ended += int(tm.sum())
    return diffs, ended


@pytest.mark.genesis
@skip_no_genesis
def test_hopper_without_constraints_matches_mujoco():
    diffs, ended = _hopper_rollout(FreeHopper, 40)
    assert max(diffs) < 1e-5, f"largest per-step reward difference {max(diffs):.2e}"
    assert ended >= 1  # the lifted hopper falls and is reset within the rollout: the health test is compared too


@pytest.mark.genesis
@skip_no_genesis
def test_hopper_default_parts_from_mujoco_at_its_joint_limits():
    diffs, _ = _hopper_rollout("hopper", 5)
    assert max(diffs) < 0.05, f"largest per-step reward difference {max(diffs):.2e}"
    assert max(diffs) > 1e-4  # documented: the joint limits (and RK4) make them differ; a match would mean a change
