"""Multimodality from demonstrations (issue 5): behaviour-cloned on bimodal two-goal demos, the flow and diffusion
policies reach both goals from the same start; the Gaussian does not. A unimodal control shows the flow's spread comes
from the demos. ~40 s on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

from stack.bench.fpo import multimodality_bc


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_bc_flow_and_diffusion_cover_both_goals_the_gaussian_does_not(tmp_path):
    out = multimodality_bc(seed=1, runs_dir=str(tmp_path), episodes=100, finetune_steps=0)
    for kind in ("flow", "diffusion"):
        r = out[kind]
        assert r["covers_both"], (kind, r)  # ≥ 20 % of episodes at each goal, ≥ 20 % of first actions each side
        assert r["share_neither"] <= 0.1, (kind, r)
    # the Gaussian's mean is one deterministic trajectory: one goal (or neither), never both; sampled N(μ, σ) it
    # still commits to one side
    for key in ("gaussian_mean", "gaussian_sampled"):
        assert not out[key]["covers_both"], (key, out[key])
        assert out[key]["mode_coverage"] < 0.05, (key, out[key])
    assert out["gaussian_mean"]["first_middle"] == 1.0  # μ at the start lies between the demonstrated ±2


def test_unimodal_demos_give_a_unimodal_flow(tmp_path):
    out = multimodality_bc(seed=1, runs_dir=str(tmp_path), episodes=100, finetune_steps=0, goals=(1,),
                           policies=("flow",))
    assert out["flow"]["share_right"] >= 0.9 and out["flow"]["share_left"] == 0.0, out["flow"]
    assert not out["flow"]["covers_both"]
