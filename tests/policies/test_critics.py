"""Critics: output shapes, flattening of observation history / action chunks, the two HABC heads."""

import pytest
import torch

from policies import QNet, ValueNet, ViabilityEfficiencyCritic
from policies.common import ResidualBlock

torch.set_num_threads(1)


def test_value_net_plain_and_residual():
    obs = torch.randn(5, 2, 3)  # obs_steps = 2, obs_dim = 3 → built with obs_dim = 6
    for residual in (False, True):
        v = ValueNet(6, hidden=(16, 16, 16), activation="tanh" if not residual else "mish", residual=residual)
        assert v(obs).shape == (5,)
        assert any(isinstance(m, ResidualBlock) for m in v.modules()) == residual
    with pytest.raises(ValueError, match=r"obs has shape \(5, 4\); critic expects \(B, 6\)"):
        ValueNet(6)(torch.zeros(5, 4))


def test_twin_q_heads_are_independent():
    q = QNet(4, 6, hidden=(16, 16))
    obs, chunk = torch.randn(3, 4), torch.randn(3, 3, 2)  # a chunk of H·act_dim = 6 values
    q1, q2 = q(obs, chunk)
    assert q1.shape == q2.shape == (3,)
    assert not torch.allclose(q1, q2)
    assert torch.equal(q.min_q(obs, chunk), torch.minimum(q1, q2))


def test_viability_efficiency_heads_share_one_encoder():
    c = ViabilityEfficiencyCritic(4, hidden=(16,))
    obs = torch.randn(3, 4)
    z_v, v_e = c(obs)
    assert z_v.shape == v_e.shape == (3,)
    assert torch.allclose(c.viability(obs), torch.sigmoid(z_v))
    (z_v.sum()).backward()
    assert c.encoder[0].weight.grad is not None and c.efficiency_head.weight.grad is None
    with pytest.raises(ValueError, match="state-only"):
        c(obs, torch.zeros(3, 2))
    qc = ViabilityEfficiencyCritic(4, act_dim=2, hidden=(16,))
    assert qc(obs, torch.zeros(3, 2))[0].shape == (3,)
    with pytest.raises(ValueError, match="pass an action"):
        qc(obs)
