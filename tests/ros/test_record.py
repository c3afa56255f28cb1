"""``r2s record`` over real DDS: the policy, safety, sim robot, recorder and scripted operator as processes; the bag
holds takeovers (human authority, full intervention masks) and replays into a fine-tuned, re-exported policy."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")


def test_record_with_the_scripted_operator_then_replay(ros_env, tmp_path):
    from stack.bench.habc import Budget, ensure_start
    from stack.data.logs import read_log
    from stack.export import export_run
    from stack.log_replay import ReplayConfig, replay
    from stack.ros.record import operator_params, record

    budget = Budget(demo_episodes=2, pretrain_steps=5, rounds=1, rollouts_per_round=1, bc_steps=1, critic_steps=1,
                    eval_episodes=1)
    run, _ = ensure_start(1, budget, tmp_path / "runs")
    version = export_run(run)["content_hash"]
    # a barely trained policy stalls at once: the operator takes over after 5 steps, for 10
    out = record(run / "policy.onnx", "push", episodes=1, bag_dir=tmp_path / "bag", seed=3, status=False,
                 operator=operator_params(stall_steps=5, takeover_steps=10, max_takeovers=2))
    assert set(out["exit_codes"].values()) == {0}
    log = read_log(out["bag"])
    (ep,) = log.episodes
    assert ep.policy_version == version and ep.outcome in ("success", "timeout", "failure")
    human = ep.steps["authority"] == 1
    assert human.sum() >= 5 and out["log"]["interventions"] >= 1
    assert np.all(ep.steps["intervention_mask"][human]) and not ep.steps["intervention_mask"][~human].any()
    report = replay([out["bag"]], ReplayConfig(runs_dir=str(tmp_path / "runs"), out_dir=str(tmp_path / "new"),
                                               bc_steps=3, critic_steps=3, eval_episodes=1))
    assert report["init_version"] == version and report["new_version"] != version
    assert report["episodes_used"] == 1 and report["interventions_used"] >= 1
