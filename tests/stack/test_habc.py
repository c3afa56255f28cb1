"""HABC (stack.algos.habc): credit assignment, the gate, the weights, the refusals and the stale-policy cutoff."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stack.algos.bc import BC, build_policy
from stack.algos.habc import (AUTO_FAILURE, AUTO_SUCCESS, DEMO, HABC, INTERVENTION, UNATTRIBUTED, HABCConfig,
                              advantages, assign_credit, efficiency_target, gate, intervention_windows,
                              normalise_weights, peer_weights,
                              raw_weights, require_habc_fields, stale)
from stack.config import BCConfig
from stack.data import EpisodeDataset
from stack.data.lerobot_v3 import DatasetError

HILSERL = Path(__file__).parent / "fixtures" / "lerobot_v30" / "hilserl_toy"
A, F, I, U = AUTO_SUCCESS, AUTO_FAILURE, INTERVENTION, UNATTRIBUTED  # noqa: E741 (the sources' initials)


def _human(n: int, frames) -> np.ndarray:
    h = np.zeros(n, bool)
    h[list(frames)] = True
    return h


def test_autonomous_episodes_label_every_frame_with_the_outcome():
    source, label = assign_credit(np.zeros(8, bool), success=True, window=5, threshold=2)
    assert source.tolist() == [A] * 8 and label.tolist() == [1.0] * 8
    source, label = assign_credit(np.zeros(8, bool), success=False, window=5, threshold=2)
    assert source.tolist() == [F] * 8 and label.tolist() == [0.0] * 8


def test_only_the_segment_after_the_last_intervention_gets_the_outcome():
    # human frames 6..9 of 20; window 5 ([t, t + 5)), threshold 2: from t = 3 to t = 8 it holds ≥ 2 human frames
    source, label = assign_credit(_human(20, range(6, 10)), success=False, window=5, threshold=2)
    assert source.tolist() == [U] * 3 + [I] * 6 + [U] + [F] * 10
    assert np.isnan(label[:10]).all() and label[10:].tolist() == [0.0] * 10
    # an earlier intervention too: the policy frames between the two get no label
    source, label = assign_credit(_human(20, [0, 1, 12, 13]), success=True, window=5, threshold=2)
    assert source.tolist() == [I] + [U] * 8 + [I] * 4 + [U] + [A] * 6
    assert np.isnan(label[:14]).all() and (label[14:] == 1.0).all()


def test_intervention_window_threshold_is_a_fraction_of_a_clipped_window():
    # window 4 at t = 4 of 6 is clipped to [4, 6): 1 human frame of 2 ≥ 2/4; at t = 3, [3, 6): 1 of 3 < 2/4
    assert intervention_windows(_human(6, [5]), window=4, threshold=2).tolist() == [False] * 4 + [True] * 2
    # the default, ≥ 10 of 50: 9 human frames never make an intervention window; 10 do for every frame
    # whose window [t, t + 50) holds all of them (t ≤ 40; after frame 49 the outcome labels them)
    source, _ = assign_credit(_human(120, range(40, 49)), success=True)
    assert not (source == I).any() and (source[:49] == U).all() and (source[49:] == A).all()
    source, _ = assign_credit(_human(120, range(40, 50)), success=True)
    assert (source[:41] == I).all() and (source[41:50] == U).all() and (source[50:] == A).all()
    # the preset's window: the policy's 4-step chunk, ≥ 1 human step
    source, _ = assign_credit(_human(12, [5, 6]), success=True, window=4, threshold=1)
    assert source.tolist() == [U, U, I, I, I, I, I] + [A] * 5


def test_weights_of_a_hand_built_batch():
    cfg = HABCConfig(warmup_steps=500)
    source = torch.tensor([DEMO, A, A, F, I, U])
    g = torch.tensor([1.7, 1.5, 0.5, 1.9, 0.2, 1.9])
    assert raw_weights(source, g, cfg, step=10).tolist() == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]  # warm-up: g = 1
    raw = raw_weights(source, g, cfg, step=500)
    assert raw.tolist() == pytest.approx([1.0, 1.5, 0.5, 0.0, 1.0, 0.0])
    w = normalise_weights(raw, source == DEMO)
    assert w[0] == 1.0  # demonstrations are not normalised
    assert w[1:].mean() == pytest.approx(1.0) and w[1:].tolist() == pytest.approx([2.5, 5 / 6, 0, 5 / 3, 0])
    reweighted = raw_weights(source, g, HABCConfig(reweight_interventions=True), step=500)
    assert reweighted[4] == pytest.approx(0.2)


def test_failed_autonomous_samples_get_weight_zero_whatever_the_gate():
    source = torch.full((4,), F)
    g = torch.tensor([1.99, 1.5, 1.0, 0.01])
    for step in (0, 10_000):
        assert (raw_weights(source, g, HABCConfig(reweight_interventions=True), step) == 0).all()
    assert (normalise_weights(raw_weights(source, g, HABCConfig(), 10_000), source == DEMO) == 0).all()


def test_gate_stays_in_the_open_interval():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(10_000, generator=gen) * 50
    a_v, a_e = torch.randn(10_000, generator=gen) * 1e3, torch.randn(10_000, generator=gen) * 1e3
    for viability_only in (False, True):
        g = gate(z, a_v, a_e, viability_only)
        assert torch.all(g > 0) and torch.all(g < 2)


def test_higher_advantage_gets_the_larger_weight():
    """Flipping the sign of either advantage (or of the gate) fails this test."""
    gamma = 1.0
    k = torch.ones(2)
    # low viability: the gate follows A_v = z(s') − z(s); sample 0 gains viability, sample 1 loses it
    z, z_next = torch.tensor([-6.0, -6.0]), torch.tensor([-5.0, -7.0])
    v = v_next = torch.zeros(2)
    a_v, a_e = advantages(z, z_next, v, v_next, k, gamma)
    assert a_v.tolist() == [1.0, -1.0]
    g = gate(z, a_v, a_e)
    assert g[0] > 1.0 > g[1]
    # high viability: the gate follows A_e = −1 + V(s') − V(s); one step closer to success is A_e = 0, g = 1
    z = z_next = torch.tensor([8.0, 8.0, 8.0])
    v, v_next = torch.tensor([-10.0, -10.0, -10.0]), torch.tensor([-9.0, -7.0, -12.0])
    a_v, a_e = advantages(z, z_next, v, v_next, torch.ones(3), gamma)
    assert a_e.tolist() == [0.0, 2.0, -3.0]
    g = gate(z, a_v, a_e)
    assert g[0] == pytest.approx(1.0, abs=1e-3) and g[1] > g[0] > g[2]
    raw = raw_weights(torch.full((3,), A), g, HABCConfig(warmup_steps=0), 0)
    w = normalise_weights(raw, torch.zeros(3, dtype=torch.bool))
    assert w[1] > w[0] > w[2]


def test_k_step_advantage_and_efficiency_target():
    a_v, a_e = advantages(torch.zeros(1), torch.zeros(1), torch.tensor([-4.0]), torch.tensor([-2.0]),
                          torch.tensor([2]), gamma=0.5)
    assert a_e.item() == pytest.approx(-(1 + 0.5) + 0.25 * -2.0 + 4.0)
    y = efficiency_target(torch.tensor([-3.0, -3.0]), torch.tensor([True, False]), gamma=0.9)
    assert y.tolist() == pytest.approx([0.0, -1.0 - 2.7])


def test_peer_weights():
    source = torch.tensor([DEMO, A, F, I, U])
    success = torch.tensor([True, True, False, False, True])
    human = torch.tensor([False, False, False, True, False])
    assert peer_weights("uniform", source, success, human).tolist() == [1, 1, 1, 1, 1]
    assert peer_weights("filtered", source, success, human).tolist() == [1, 1, 0, 0, 1]
    assert peer_weights("interventions", source, success, human).tolist() == [1, 0, 0, 1, 0]


def test_a_log_without_authority_flags_is_refused():
    ds = EpisodeDataset(HILSERL)  # LeRobot's HIL-SERL log: is_intervention, but no authority
    with pytest.raises(DatasetError, match="complementary_info.authority"):
        require_habc_fields(ds.features, ds.episodes, str(HILSERL))
    features = ["complementary_info.authority", "complementary_info.intervention_mask",
                "complementary_info.is_intervention"]
    with pytest.raises(DatasetError, match="policy_version"):
        require_habc_fields(features, [{"outcome": "success", "success_step": 3}])


def _habc(cfg: HABCConfig) -> HABC:
    torch.manual_seed(0)
    bc_cfg = BCConfig(horizon=2, act_steps=1, policy_kwargs={"hidden": [16, 16]})
    return HABC(BC(build_policy(bc_cfg, "flow", 3, 2), bc_cfg, 100), obs_dim=3, cfg=cfg)


def _batch(n: int, version: int):
    return dict(obs=torch.randn(n, 1, 3), actions=torch.rand(n, 2, 2) * 2 - 1, source=torch.full((n,), A),
                g=torch.ones(n), episode_success=torch.ones(n, dtype=torch.bool),
                human=torch.zeros(n, dtype=torch.bool), policy_version=torch.full((n,), version))


def test_a_batch_of_a_too_old_policy_is_dropped_and_counted():
    habc = _habc(HABCConfig(max_policy_lag=1))
    habc.policy_version = 5
    before = [p.detach().clone() for p in habc.bc.policy.parameters()]
    loss, w = habc.weighted_bc_step(**_batch(8, version=3))
    assert loss is None and w is None
    assert habc.stale_batches == 1 and habc.stale_samples == 8 and habc.bc_steps == 0
    assert all(torch.equal(a, b) for a, b in zip(before, habc.bc.policy.parameters()))
    # one version behind is fresh enough; a mixed batch keeps its fresh samples and counts the others
    batch = _batch(8, version=4)
    batch["policy_version"][:3] = 1
    loss, w = habc.weighted_bc_step(**batch)
    assert loss is not None and len(w) == 5 and habc.stale_samples == 11 and habc.stale_batches == 1
    assert stale(torch.tensor([-1, 0]), current=9, max_lag=1).tolist() == [False, True]  # demos: never stale


def test_weighted_bc_loss_is_the_weighted_mean_of_the_per_sample_loss():
    habc = _habc(HABCConfig())
    b = _batch(6, version=0)
    w = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 1.0])
    torch.manual_seed(3)
    weighted = habc.bc.loss(b["obs"], b["actions"], w)
    torch.manual_seed(3)
    per_sample = habc.bc.per_sample_loss(b["obs"], b["actions"])
    assert weighted.item() == pytest.approx((w * per_sample).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="weights have shape"):
        habc.bc.loss(b["obs"], b["actions"], w[:3])


def test_critic_learns_viability_and_steps_to_success():
    habc = _habc(HABCConfig(gamma=1.0, critic_lr=3e-3))
    # a chain of 6 states of one successful episode (x = t/5) and failing states (x = −1)
    x = torch.linspace(0, 1, 6).reshape(-1, 1).repeat(1, 3)
    fail = -torch.ones(6, 3)
    obs, label = torch.cat([x, fail]), torch.cat([torch.ones(6), torch.zeros(6)])
    terminal = torch.tensor([False] * 5 + [True])
    nxt = torch.cat([x[1:], x[-1:]])
    for _ in range(600):
        habc.critic_step(obs, label, x, nxt, terminal)
    z, v = habc.critic(obs)
    assert (torch.sigmoid(z[:6]) > 0.9).all() and (torch.sigmoid(z[6:]) < 0.1).all()
    assert v[:6].tolist() == pytest.approx([-5, -4, -3, -2, -1, 0], abs=0.3)
