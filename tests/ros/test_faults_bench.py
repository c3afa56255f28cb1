"""``r2s bench faults`` in small: two of its cases against the real policy and safety nodes, to keep the harness
and its JSON (the acceptance interface of issue 11) working. The full run is the benchmark's, not the suite's."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

KEYS = {"cases": list, "unsafe_commands": int, "ok_on_stale": int, "max_hold_latency_ms": float, "nodes_died": list,
        "max_step_rad_over_rate_limit": float, "per_case": dict}


def test_two_cases_give_the_acceptance_keys(ros_env, tmp_path):
    from stack.bench import faults

    result = faults.run(quick=True, cases=["estop_service", "malformed_baseline"], work_dir=str(tmp_path))
    json.loads(json.dumps(result))  # what the CLI prints must be JSON
    for key, kind in KEYS.items():
        assert isinstance(result[key], kind), (key, result[key])
    assert result["cases"] == ["estop_service", "malformed_baseline"]
    assert result["commands"] > 20, "the safety node's commands must reach the harness robot"
    # Each topic's reader–writer pair is matched on its own: a command at the very start or end may lack its status.
    assert result["unpaired_commands"] <= 2
    estop = result["per_case"]["estop_service"]
    assert estop["expects_hold"] and estop["held"] and estop["hold_reasons"].get("e-stop", 0) > 0
    assert estop["statuses_before_reset"] == ["hold: e-stop"], "the e-stop stays latched until the reset"
    assert set(result["per_case"]["malformed_baseline"]) >= {"unsafe_commands", "ok_on_stale", "nodes_alive",
                                                              "max_step_ratio_during", "passed", "failures"}


def test_unknown_case_names_are_refused():
    from stack.bench import faults

    with pytest.raises(ValueError, match="unknown \\['nope'\\]"):
        faults.run(quick=True, cases=["nope"])
