"""``r2s bench agency``: the first-10 % training goal rate counts exactly the rows it should, and a tiny real run of
the benchmark (every method on zone, a few hundred env steps, 2 evaluation episodes) prints the acceptance interface
with figures in range."""

import json
import math

import pytest

from stack.bench import agency


def _rows():
    # a row at env step s covers the episodes that ended since the previous row
    return [
        {"env_steps": 1000.0, "episodes": 10.0, "train_success": 1.0},
        {"env_steps": 2000.0, "episodes": 30.0, "train_success": 0.5},  # exactly 10 % of 20k: counted
        {"env_steps": 3000.0, "episodes": 40.0, "train_success": 0.0},  # past it: not counted
        {"env_steps": 4000.0, "alpha": 0.1},  # a row without episodes
    ]


def test_first_10pct_goal_rate_weights_rows_by_episodes_and_includes_the_boundary_row():
    rate = agency.first_fraction_goal_rate(_rows(), total_steps=20_000)
    assert rate == pytest.approx((10 * 1.0 + 30 * 0.5) / 40)  # 0.625; < instead of <= gives 1.0, one row more 0.3125


def test_first_10pct_goal_rate_is_nan_before_any_episode_ended():
    assert math.isnan(agency.first_fraction_goal_rate(_rows(), total_steps=9_000))
    assert agency.goal_rate_until(_rows(), math.inf) == pytest.approx(25 / 80)


def test_worst_10pct_goal_rate_is_the_lowest_span_with_right_closed_spans():
    # spans of 2k: (0, 2k] holds the rows 1000 and 2000 (0.625), (2k, 4k] the row 3000 (0.0); with spans [lo, hi)
    # the row 2000 would move to the second span (15 / 70) and the minimum would not be 0
    assert agency.worst_fraction_goal_rate(_rows(), total_steps=20_000) == 0.0
    assert agency.worst_fraction_goal_rate(_rows()[:2], total_steps=20_000) == pytest.approx(0.625)
    assert agency.goal_rate_between(_rows(), 1000, 3000) == pytest.approx(15 / 70)


def test_a_steps_override_keeps_a_row_on_the_first_10pct_boundary():
    b = agency.with_steps(agency.FULL, 30_000)
    assert b.env_steps == 30_000 and b.log_every == 1000  # the budget's row cadence where it already fits
    small = agency.with_steps(agency.FULL, 6_000)
    assert small.log_every % 4 == 0 and (0.1 * 6_000) % small.log_every == 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        agency.train_config("td3", "zone", 1, agency.QUICK, "runs")


def test_the_ppo_learners_share_the_ppo_preset_and_their_own_budget():
    cfgs = [agency.train_config(m, "reach", 3, agency.QUICK, "runs") for m in agency.PPO_LEARNERS]
    assert [c.algo for c in cfgs] == ["agency_ppo", "ppo"]
    assert cfgs[0].ppo == cfgs[1].ppo and cfgs[0].agency == cfgs[1].agency
    assert all(c.total_env_steps == agency.QUICK.on_policy_steps != agency.QUICK.env_steps for c in cfgs)
    assert all(c.env.task == "reach" and c.env.task_kwargs == agency.TASK_KWARGS and c.seed == 3 for c in cfgs)


def test_the_learner_of_the_acceptance_keys_is_agency_on_ppo_else_on_sac():
    result = {"task": "zone", "agency_ppo_goal_rate": 0.9, "agency_goal_rate": 0.3, "agency_ppo_return": -1.0}
    assert agency.acceptance(result)["learner_goal_rate"] == 0.9
    assert agency.acceptance(result)["learner_return"] == -1.0
    del result["agency_ppo_goal_rate"]
    assert agency.acceptance(result)["learner_goal_rate"] == 0.3


def test_every_sac_learner_shares_the_sac_settings_and_the_task():
    cfgs = [agency.train_config(m, "push", 2, agency.QUICK, "runs") for m in agency.SAC_LEARNERS]
    assert [c.algo for c in cfgs] == list(agency.SAC_LEARNERS)
    assert all(c.sac == cfgs[0].sac and c.total_env_steps == agency.QUICK.env_steps for c in cfgs)
    assert all(c.env.task == "push" and c.env.task_kwargs == agency.TASK_KWARGS and c.seed == 2 for c in cfgs)
    assert cfgs[0].sac.replay_ratio == agency.QUICK.replay_ratio


def test_a_tiny_run_prints_the_acceptance_interface(tmp_path):
    tiny = agency.Budget(env_steps=400, on_policy_steps=2048, replay_ratio=0.25, eval_episodes=2, log_every=40,
                         curve_evals=0, curve_eval_episodes=2)
    out = agency.run(quick=True, budget=tiny, out_dir=tmp_path)
    line = json.loads(json.dumps(out, allow_nan=False))  # strict JSON: no NaN
    assert list(line)[-len(agency.KEYS):] == list(agency.KEYS)  # the acceptance keys last, in order
    assert line["task"] == "zone" and line["seeds"] == [1]
    assert line["baseline_goal_rate"] == 1.0 and line["baseline_avoidance"] == 1.0  # safe, always reaches
    assert 20 <= line["baseline_steps_to_goal"] <= 35  # slow: 26.9 steps over 50 seeds
    for key in ("learner_goal_rate", "residual_goal_rate", "sac_goal_rate", "ppo_goal_rate",
                "agency_ppo_train_goal_rate", "agency_ppo_train_goal_rate_worst_10pct"):
        assert 0.0 <= line[key] <= 1.0
    rate = line["train_goal_rate_first_10pct"]
    assert rate is None or 0.0 <= rate <= 1.0
    for key in ("learner_return", "baseline_return", "residual_return", "sac_return"):
        assert -200.0 < line[key] < 10.0
    steps = line["learner_steps_to_goal"]
    assert steps is None or 1 <= steps <= 100
    assert (tmp_path / "curves.png").stat().st_size > 0 and (tmp_path / "bench.json").exists()
