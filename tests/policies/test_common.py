"""Shared building blocks: the sinusoidal embedding's values and the residual MLP's layout."""

import math

import pytest
import torch

from policies.common import ResidualBlock, ResidualMLP, flatten_obs, sinusoidal_embedding


def test_sinusoidal_embedding_by_hand():
    # dim 4: frequencies exp(−j·ln(10000)/(2 − 1)) for j = 0, 1 → 1 and 1e-4; output [sin(t·f), cos(t·f)]
    emb = sinusoidal_embedding(torch.tensor([0.0, 2.0]), 4)
    expected = [[0.0, 0.0, 1.0, 1.0], [math.sin(2.0), math.sin(2e-4), math.cos(2.0), math.cos(2e-4)]]
    assert emb.flatten().tolist() == pytest.approx(sum(expected, []), abs=1e-6)


def test_residual_mlp_layout_matches_dppo_mlp_dims():
    m = ResidualMLP(39, (512, 512, 512), 12)  # DPPO's Hopper actor trunk: projection + one two-layer block
    assert len(m.blocks) == 1
    assert sum(p.numel() for p in m.parameters()) == 39 * 512 + 512 + 2 * (512 * 512 + 512) + 512 * 12 + 12
    with pytest.raises(ValueError, match="odd number of equal widths"):
        ResidualMLP(4, (8, 8), 2)


@torch.no_grad()
def test_residual_block_is_pre_activation_with_skip():
    torch.manual_seed(0)
    block = ResidualBlock(6, "relu")
    x = torch.randn(4, 6)
    expected = x + block.l2(torch.relu(block.l1(torch.relu(x))))
    assert torch.allclose(block(x), expected, atol=1e-6)


def test_flatten_obs_accepts_history_or_single_step():
    assert flatten_obs(torch.zeros(2, 3, 4), 3, 4).shape == (2, 12)
    assert flatten_obs(torch.zeros(2, 4), 1, 4).shape == (2, 4)
    with pytest.raises(ValueError, match=r"obs has shape \(2, 4\); policy expects \(B, 3, 4\) \[obs_steps, obs_dim\]$"):
        flatten_obs(torch.zeros(2, 4), 3, 4)
