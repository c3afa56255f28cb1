"""``r2s bench variance``: the return-to-go each batch's Q̂ is, and a tiny real run of the bench (the arm, a few
batches of two episodes) that prints the acceptance interface."""

import dataclasses
import json

import numpy as np
import pytest

from stack.algos.action_baseline import FitBudget
from stack.bench import variance

TINY = variance.Budget(tasks=("reach",), checkpoint_steps={"reach": 0}, batches=6, envs={"reach": 2},
                       horizon={"reach": 100}, fit_batches=2, fit=FitBudget(steps=40))


def test_returns_to_go_stop_at_each_episode_end_and_at_the_rollout_cut():
    rewards = np.array([[1.0, 1.0], [2.0, 1.0], [4.0, 1.0]])
    ends = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # env 0's episode ends at t = 1; env 1 runs past the cut
    g = variance.returns_to_go(rewards, ends, gamma=0.5)
    # env 0: t=1 is its episode's last step (2), t=0 adds half of it; t=2 starts a new episode cut at the rollout end
    np.testing.assert_allclose(g[:, 0], [1.0 + 0.5 * 2.0, 2.0, 4.0])
    np.testing.assert_allclose(g[:, 1], [1.0 + 0.5 + 0.25, 1.5, 1.0])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return variance.run(seeds=[1], budget=TINY, runs_dir=str(tmp_path_factory.mktemp("runs")))


def test_a_tiny_run_prints_the_acceptance_interface(tiny):
    out = json.loads(json.dumps(tiny))  # what the CLI prints as its last line
    for key in ("grad_var_state_baseline", "grad_var_action_baseline", "variance_ratio"):
        assert isinstance(out[key], float) and out[key] > 0, (key, out[key])
    assert out["variance_ratio"] == pytest.approx(out["grad_var_action_baseline"] / out["grad_var_state_baseline"])
    assert isinstance(out["unbiased"], bool)
    assert (out["batches"], out["batch_size"]) == (6, 200)
    assert out["task"] == "reach" and out["act_dim"] == 6
    assert "no training" in out["checkpoint"]
    # no baseline at all: Q̂ ≈ −(2…5) on every step, a far noisier gradient than with either baseline
    assert out["grad_var_no_baseline"] > out["grad_var_state_baseline"]


def test_two_seeds_average_the_variances_and_take_the_ratio_of_the_means(tmp_path):
    budget = dataclasses.replace(TINY, batches=3)
    out = variance.run(seeds=[1, 2], budget=budget, runs_dir=str(tmp_path))
    reach = out["per_task"]["reach"]
    per_seed = reach["per_seed"]
    assert [r["seed"] for r in per_seed] == [1, 2]
    assert per_seed[0]["grad_var_state_baseline"] != per_seed[1]["grad_var_state_baseline"]
    assert out["grad_var_state_baseline"] == pytest.approx(np.mean([r["grad_var_state_baseline"] for r in per_seed]))
    assert out["variance_ratio"] == pytest.approx(out["grad_var_action_baseline"] / out["grad_var_state_baseline"])
    assert out["unbiased"] == all(r["unbiased"] for r in per_seed)
