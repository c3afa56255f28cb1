"""HABC rounds (stack.runners.habc): simulated operator, mux, the stored log, data assembly, the bench's JSON."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from robots.so101 import SO101
from stack.algos.bc import build_policy
from stack.algos.habc import AUTO_FAILURE, AUTO_SUCCESS, DEMO, INTERVENTION, UNATTRIBUTED, HABCConfig
from stack.config import BCConfig
from stack.controller import PolicyController
from stack.data import EpisodeDataset
from stack.data.episodes import AUTHORITY, AUTHORITY_KEY, IS_INTERVENTION, MASK, PROPOSAL
from stack.normalize import ObsNormalizer
from stack.rollout import ActionScaler
from stack.runners.habc import (HABCRoundsConfig, OperatorConfig, OperatorMux, SimulatedOperator, build_data,
                                collect_round)


def test_operator_takes_over_when_progress_stalls_and_hands_back():
    op = SimulatedOperator(OperatorConfig(stall_steps=3, stall_eps=0.01, takeover_steps=2, max_takeovers=1))
    # progress for 4 steps: no takeover; then 3 steps without 1 cm of progress: takeover for 2 steps
    active = [op.active(d, success=False) for d in (0.20, 0.18, 0.16, 0.14, 0.139, 0.138, 0.137, 0.2, 0.2)]
    assert active == [False] * 6 + [True, True, False]
    # max_takeovers reached: a further stall is left to the policy
    assert not any(op.active(0.3, success=False) for _ in range(10))
    op.reset()
    assert not any(op.active(0.1, success=True) for _ in range(10))  # success: never


def test_mux_gives_the_operator_only_its_dimensions():
    mux = OperatorMux(SO101)
    q = np.zeros(6)
    policy, operator = np.full(6, 0.1), np.full(6, -0.2)
    dims = np.array([True, True, False, False, False, False])
    cmd, who, mask = mux.decide(q, policy, operator, dims)
    assert who == "human" and mask.tolist() == dims.tolist()
    assert cmd[:2] == pytest.approx([-0.2, -0.2]) and cmd[2:] == pytest.approx([0.1] * 4)
    cmd, who, mask = mux.decide(cmd, policy, None, dims)
    assert who == "policy" and not mask.any() and cmd == pytest.approx(policy)


def _tiny_controller(task_env, seed=0):
    torch.manual_seed(seed)
    bc = BCConfig(horizon=2, act_steps=1, policy_kwargs={"hidden": [16, 16]})
    obs_dim, act_dim = task_env.observation_space.shape[0], task_env.action_space.shape[0]
    policy = build_policy(bc, "flow", obs_dim, act_dim)
    norm = ObsNormalizer(obs_dim)
    scaler = ActionScaler(task_env.action_space.low, task_env.action_space.high, "minmax")
    return PolicyController(policy, norm, scaler, {"zero_noise": True}), norm, scaler


@pytest.fixture(scope="module")
def round_dir(tmp_path_factory):
    from sim.pool import resolve_task

    kwargs = {"action_mode": "delta", "max_episode_steps": 40}
    env = resolve_task("push")(**kwargs)
    controller, norm, scaler = _tiny_controller(env)
    env.close()
    cfg = HABCRoundsConfig(task_kwargs=kwargs, rollouts_per_round=2,
                           operator=OperatorConfig(stall_steps=5, takeover_steps=10, dims=(0, 1, 2, 3)))
    path, stats = collect_round(controller, cfg, tmp_path_factory.mktemp("habc") / "round-0", seed=3,
                                policy_version=4)
    return path, stats, cfg, norm, scaler


def test_rounds_store_the_fields_a_robot_log_converts_to(round_dir):
    path, stats, *_ = round_dir
    ds = EpisodeDataset(path)
    cols = ds.frames(["action", PROPOSAL, AUTHORITY_KEY, MASK, IS_INTERVENTION])
    human = cols[AUTHORITY_KEY] == AUTHORITY["human"]
    assert stats["human_frames"] == int(human.sum()) > 0  # a random policy stalls: the operator takes over
    assert (cols[AUTHORITY_KEY][~human] == AUTHORITY["policy"]).all()
    assert (cols[MASK][human][:, :4]).all() and not cols[MASK][:, 4:].any()  # only the operator's dimensions
    assert (cols[IS_INTERVENTION] == human).all()
    policy_frames = ~human
    assert np.array_equal(cols["action"][policy_frames], cols[PROPOSAL][policy_frames])
    assert not np.allclose(cols["action"][human][:, :4], cols[PROPOSAL][human][:, :4])
    assert np.array_equal(cols["action"][human][:, 4:], cols[PROPOSAL][human][:, 4:])  # the policy keeps dims 4, 5
    for ep in ds.episodes:
        assert ep["policy_version"] == "4" and ep["outcome"] in ("success", "failure", "timeout")
        assert "success_step" in ep


def test_build_data_credits_and_drops_stale_rollouts(round_dir):
    path, stats, cfg, norm, scaler = round_dir
    cfg = dataclasses.replace(cfg, habc=HABCConfig(window=10, intervention_threshold=2, max_policy_lag=1))
    data = build_data([], [path], norm, scaler, 1, 2, cfg, current_version=5, device="cpu")
    assert data.stale_episodes == 0 and len(data.obs) == stats["frames"]
    source = data.source.numpy()
    assert not (source == DEMO).any()
    assert set(np.unique(source)) <= {AUTO_SUCCESS, AUTO_FAILURE, INTERVENTION, UNATTRIBUTED}
    assert (source[data.human.numpy()] != AUTO_FAILURE).all()  # human frames never carry the outcome
    assert np.isnan(data.label.numpy()[np.isin(source, [INTERVENTION, UNATTRIBUTED])]).all()
    with pytest.raises(ValueError, match="all 2 rollout episodes are more than max_policy_lag=1"):
        build_data([], [path], norm, scaler, 1, 2, cfg, current_version=6, device="cpu")


def test_bench_habc_prints_the_acceptance_keys(tmp_path):
    from stack.bench import habc as bench

    budget = bench.Budget(demo_episodes=2, pretrain_steps=10, rounds=1, rollouts_per_round=2, bc_steps=3,
                          critic_steps=3, eval_episodes=2)
    out = bench.run(quick=True, seeds=[1], runs_dir=tmp_path, out_dir=tmp_path / "out", budget=budget)
    assert list(out)[-len(bench.KEYS):] == list(bench.KEYS)
    assert all(0.0 <= out[k] <= 1.0 for k in bench.KEYS)
    assert (tmp_path / "out" / "habc_weights_s1.png").exists()
