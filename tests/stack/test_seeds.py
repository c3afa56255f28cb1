"""Seeds as an axis: the standard error by hand, and benchmarks aggregated over seeds."""

import math

import pytest

from stack.bench import over_seeds
from stack.seeds import mean_se


def test_mean_and_standard_error_by_hand():
    mean, se = mean_se([1.0, 2.0, 6.0])
    assert mean == 3.0
    assert se == pytest.approx(math.sqrt(((1 - 3) ** 2 + (2 - 3) ** 2 + (6 - 3) ** 2) / 2) / math.sqrt(3))
    assert math.isnan(mean_se([4.0])[1]) and mean_se([4.0])[0] == 4.0  # one seed: an anecdote, no error bar
    assert all(math.isnan(x) for x in mean_se([]))


def test_a_benchmark_over_seeds_reports_means_and_standard_errors():
    def fake(seed, task):
        return {"task": task, "seed": seed, "final_return": 10.0 * seed, "ok": True, "curve": [seed]}

    out = over_seeds(fake, [1, 2, 3], task="hopper")
    assert out["seeds"] == [1, 2, 3] and out["n_seeds"] == 3 and out["task"] == "hopper"
    assert out["final_return"] == 20.0 and out["final_return_se"] == pytest.approx(10.0 / math.sqrt(3))
    assert [r["seed"] for r in out["per_seed"]] == [1, 2, 3]
    one = over_seeds(fake, [5], task="hopper")
    assert one["final_return"] == 50.0 and one["seeds"] == [5] and "final_return_se" not in one
