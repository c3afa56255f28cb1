"""Agency transfer: the arbitration rule, the schedule's numbers, the buffer rule, and that an annealed run never calls
the baseline. Hand-computed figures; each test fails on a flipped certificate or a wrong schedule."""

import numpy as np
import pytest
import torch

from policies.arbitrated import Arbitrator, arbitrate
from stack.algos.agency import AgencySchedule, AgencyTransfer, geometric_sum, solve_lambda


def _raises(_obs):
    raise AssertionError("the baseline was called")


def test_lambda_solves_the_geometric_sum():
    assert solve_lambda(1.75, 3) == pytest.approx(0.5)  # 1 + λ + λ² = 1.75
    assert solve_lambda(0.5, 10) == 0.0 and solve_lambda(12.0, 10) == 1.0
    assert geometric_sum(0.5, 3) == pytest.approx(1.75) and geometric_sum(1.0, 7) == 7.0


def test_schedule_by_hand():
    s = AgencySchedule(total_steps=1000, p0=0.9, lam0=0.96, anneal_fraction=0.9, window=20)
    assert s.update(0, [10] * 20) == pytest.approx((0.9, 0.96))  # f = 0 gives (p0, λ0) back
    # f = 450/900 = 0.5: p = 0.95; R0 = 0.9 Σ_{t<10} 0.96^t = 7.5413; R = R0 + (10 − R0)/2 = 8.7706;
    # Σ_{t<10} λ^t = R / 0.95 = 9.2322 → λ = 0.98211
    p, lam = s.update(450)
    assert p == pytest.approx(0.95) and lam == pytest.approx(0.98211, abs=1e-5)
    assert not s.annealed
    s.update(300, [30] * 20)  # only the last 20 lengths count: L̄ = 30
    r0 = 0.9 * geometric_sum(0.96, 30)
    assert geometric_sum(s.lam, 30) * s.p_ep == pytest.approx(r0 + (30 - r0) / 3)
    assert s.update(900) == (1.0, 1.0) and s.annealed


def test_certificate_direction_and_best_value_update():
    arb = Arbitrator(1, delta=0.01)
    arb.start_episodes(slice(None), 0.0)  # no relax: only certificates grant the learner
    got = [bool(arb.decide(np.array([q]), 1.0)[0][0]) for q in (1.0, 1.005, 1.02, 0.5, 1.031)]
    assert got == [True, False, True, False, True]  # Q* = −inf → 1.0 → 1.02 → 1.031
    assert arb.q_star[0] == pytest.approx(1.031)


def test_relax_is_one_draw_per_decision_with_p_decaying_by_lambda():
    arb = Arbitrator(3, seed=5)
    arb.start_episodes(slice(None), 0.8)
    draws = np.random.default_rng(5).random((4, 3))
    for t in range(4):
        authority, certified = arb.decide(np.full(3, -np.inf), 0.5)  # −inf never certifies
        assert not certified.any()
        np.testing.assert_array_equal(authority, draws[t] < 0.8 * 0.5 ** t)
    assert arb.p == pytest.approx(np.full(3, 0.8 * 0.5 ** 4))


def test_arbitrate_calls_the_baseline_on_its_rows_only():
    obs, prop = np.arange(6.0).reshape(3, 2), np.zeros((3, 1))
    out = arbitrate(obs, prop, np.array([True, False, True]), lambda o: o[:, :1] + 100.0)
    np.testing.assert_array_equal(out[:, 0], [0.0, 102.0, 0.0])
    arbitrate(obs, prop, np.ones(3, bool), _raises)  # all learner: never called


def _agency(num_envs=2, total=100):
    from stack.algos.agency import make_algo
    from stack.config import SACConfig, TrainConfig

    cfg = TrainConfig(algo="agency", total_env_steps=total, sac=SACConfig(hidden=(8,)))
    cfg.env.num_envs = num_envs
    return make_algo(cfg, obs_dim=3, act_dim=2)


def test_annealed_agency_never_calls_the_baseline():
    algo = _agency()
    algo.end_episodes(np.ones(2, bool), [5, 5], env_steps=90)  # f = 90 / (0.9 · 100) = 1
    executed, authority = algo.act(np.zeros((2, 3), np.float32), _raises, env_steps=90)
    assert authority.all() and executed.shape == (2, 2)
    fresh = _agency()  # inside an episode begun before the anneal fraction: the step count alone decides
    assert fresh.act(np.zeros((2, 3), np.float32), _raises, env_steps=95)[1].all()


def test_the_certificate_uses_the_min_of_the_twin_target_critics():
    algo = _agency()
    obs, act = torch.zeros(2, 3), torch.zeros(2, 2)
    with torch.no_grad():
        algo.sac.qnet_target.q1[-1].bias.add_(5.0)  # target q1 above q2: the min is q2's
        algo.sac.qnet.q2[-1].bias.sub_(100.0)  # the online critics do not count
        q2 = algo.sac.qnet_target(obs, act)[1].numpy()
    np.testing.assert_allclose(algo.certificate_values(obs, act), q2, rtol=1e-6)


def test_executed_baseline_action_is_what_is_returned_for_the_buffer():
    algo = _agency()
    algo.arbitrator.start_episodes(slice(None), 0.0)
    algo.arbitrator.q_star[:] = np.inf  # nothing certifies, nothing relaxes: the baseline acts
    executed, authority = algo.act(np.zeros((2, 3), np.float32), lambda o: np.full((len(o), 2), 0.25), 0)
    assert not authority.any()
    np.testing.assert_array_equal(executed, np.full((2, 2), 0.25))


def test_agency_state_round_trips():
    a, b = _agency(), _agency()
    a.end_episodes(np.ones(2, bool), [7, 9], env_steps=30)
    a.arbitrator.decide(np.array([0.3, -0.2]), a.schedule.lam)
    b.load_state_dict(a.state_dict())
    assert b.schedule.state_dict() == a.schedule.state_dict()
    np.testing.assert_array_equal(b.arbitrator.q_star, a.arbitrator.q_star)
    assert b.arbitrator.rng.random() == a.arbitrator.rng.random()
    assert isinstance(b, AgencyTransfer)


def test_the_best_certified_pair_is_revalued_by_the_current_critic():
    # A critic whose value is one constant b for every (s, a); an update between two steps lifts it to b + 1. The
    # same state and action must not certify as an improvement: the stored Q* = b compared with the new critic's
    # b + 1 would (drift, not progress); the pair re-valued by the current critic gives Q* = b + 1.
    algo = _agency(num_envs=1)
    algo.arbitrator.start_episodes(slice(None), 0.0)  # no relax: only certificates grant the learner
    with torch.no_grad():
        for q in (algo.sac.qnet_target.q1, algo.sac.qnet_target.q2):
            q[-1].weight.zero_()
            q[-1].bias.fill_(0.5)
    obs = np.zeros((1, 3), np.float32)
    assert algo.act(obs, _raises, 0)[1].all()  # Q* = −inf: the first proposal certifies
    with torch.no_grad():
        for q in (algo.sac.qnet_target.q1, algo.sac.qnet_target.q2):
            q[-1].bias.add_(1.0)
    executed, authority = algo.act(obs, lambda o: np.full((len(o), 2), 0.25), 0)
    assert not authority.any() and algo.arbitrator.q_star[0] == pytest.approx(1.5)
    algo.end_episodes(np.ones(1, bool), [2], env_steps=2)  # a new episode: Q* = −inf again, nothing held
    assert not algo.held.any() and algo.act(obs, _raises, 2)[1].all()
