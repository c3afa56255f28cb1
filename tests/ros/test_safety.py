"""The safety supervisor's decisions by hand (no ROS): hold, e-stop, mux, clamp, rate limit."""

import math

import numpy as np
import pytest

from robots.spec import JointSpec, RobotSpec
from stack.ros.safety import SafetySupervisor

ARM = RobotSpec(
    name="toy_arm",
    joints=(JointSpec("a", -1.0, 1.0, 2.0, 1.0), JointSpec("b", -0.5, 0.5, math.inf, 1.0)),
    control_mode="position",
    control_rate_hz=10.0,  # period 0.1 s: joint a may move 0.2 rad per period
    model_source="r2s:toy.xml",
)


def fresh(timeout=0.15, **kw):
    sup = SafetySupervisor(ARM, timeout_s=timeout, **kw)
    sup.measured([0.0, 0.0], t=0.0)
    return sup


def test_policy_command_is_clamped_and_rate_limited():
    sup = fresh()
    sup.command("policy", [0.9, 0.9], t=0.0, stamp_ns=7)
    d = sup.decide(0.0)
    # b is clamped to its limit 0.5 (no speed limit); a moves at most vel_max * period = 0.2 from the measured 0.
    np.testing.assert_allclose(d.command, [0.2, 0.5])
    assert d.status == "ok" and d.authority == "policy" and d.stamp_ns == 7 and d.limited
    np.testing.assert_array_equal(d.mask, [0.0, 0.0])
    sup.measured([0.2, 0.5], t=0.1)
    sup.command("policy", [0.9, 0.9], t=0.1, stamp_ns=8)
    np.testing.assert_allclose(sup.decide(0.1).command, [0.4, 0.5])  # 0.1 s later: another 0.2 rad


def test_rate_limit_uses_elapsed_time_capped_at_two_periods():
    sup = fresh(timeout=10.0)
    sup.command("policy", [1.0, 0.0], t=0.0, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(0.0).command[0], 0.2)
    sup.measured([0.2, 0.0], t=5.0)
    sup.command("policy", [1.0, 0.0], t=5.0, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(5.0).command[0], 0.6)  # a 5 s gap allows 2 periods (0.4), not 10 s


def test_stale_joint_states_hold_the_position_measured_when_the_hold_began():
    sup = fresh(timeout=0.15)
    sup.measured([0.1, 0.2], t=0.0)
    sup.command("policy", [0.1, 0.2], t=0.0, stamp_ns=0)
    assert sup.decide(0.05).status == "ok"
    sup.command("policy", [0.3, 0.2], t=0.16, stamp_ns=0)  # commands keep coming, joint_states stopped at t=0
    d = sup.decide(0.16)
    assert d.status.startswith("hold: joint_states stale")
    np.testing.assert_allclose(d.command, [0.1, 0.2])
    np.testing.assert_array_equal(d.mask, [1.0, 1.0])
    assert sup.holds == 1


def test_hold_target_stays_latched_while_the_arm_sags():
    sup = fresh(timeout=0.15)
    sup.command("policy", [0.0, 0.0], t=0.0, stamp_ns=0)
    sup.decide(0.0)
    sup.measured([0.3, 0.1], t=0.2)  # policy silent since t=0: hold at the position measured now
    np.testing.assert_allclose(sup.decide(0.2).command, [0.3, 0.1])
    sup.measured([0.25, 0.1], t=0.3)  # the arm sags; the hold target must not follow it down
    d = sup.decide(0.3)
    assert d.holding
    np.testing.assert_allclose(d.command, [0.3, 0.1])
    assert sup.holds == 1


def test_non_finite_inputs_are_refused_and_hold():
    sup = fresh()
    sup.measured([0.1, 0.0], t=0.0)
    assert not sup.measured([np.nan, 0.0], t=0.01)  # refused: the last finite reading stays
    sup.command("policy", [np.nan, 0.0], t=0.01, stamp_ns=0)
    d = sup.decide(0.01)
    assert d.status == "hold: non-finite policy command"
    np.testing.assert_allclose(d.command, [0.1, 0.0])
    assert np.all(np.isfinite(d.command))


def test_estop_latches_until_reset_then_waits_for_a_fresh_command():
    sup = fresh(timeout=0.15)
    sup.command("policy", [0.1, 0.1], t=0.0, stamp_ns=0)
    assert sup.decide(0.0).status == "ok"
    sup.estop()
    for t in (0.01, 0.05, 0.1):
        sup.measured([0.1, 0.1], t=t)
        sup.command("policy", [0.2, 0.2], t=t, stamp_ns=0)
        assert sup.decide(t).status == "hold: e-stop"
    sup.reset_estop()
    assert sup.decide(0.1).status == "ok"  # the policy command of t=0.1 is fresh
    sup.estop()
    sup.decide(0.2)
    sup.reset_estop()
    sup.measured([0.1, 0.1], t=0.4)
    assert sup.decide(0.4).status.startswith("hold: policy command stale")  # nothing fresh since the reset


def test_no_measurement_no_command():
    sup = SafetySupervisor(ARM, timeout_s=0.15)
    sup.command("policy", [0.1, 0.1], t=0.0, stamp_ns=0)
    assert sup.decide(0.0) is None
    assert sup.hold_reason == "no joint_states"


def test_human_takes_over_the_joints_it_commands():
    sup = fresh(timeout=0.15, teleop_timeout_s=0.5)
    sup.command("policy", [0.1, 0.1], t=0.0, stamp_ns=1)
    sup.command("human", [0.0, -0.1], t=0.0, stamp_ns=2, commanded=[False, True])
    sup.set_authority("human")
    d = sup.decide(0.0)
    assert d.authority == "human" and d.status == "ok" and d.stamp_ns == 2
    np.testing.assert_allclose(d.command, [0.1, -0.1])  # a stays with the policy, b is the human's
    np.testing.assert_array_equal(d.mask, [0.0, 1.0])
    # The human's input is watched with its own timeout; the policy's (for joint a) with the normal one.
    sup.measured([0.1, -0.1], t=0.3)
    sup.command("policy", [0.1, 0.1], t=0.3, stamp_ns=3)
    assert sup.decide(0.3).status == "ok"
    sup.measured([0.1, -0.1], t=0.6)
    sup.command("policy", [0.1, 0.1], t=0.6, stamp_ns=4)
    assert sup.decide(0.6).status.startswith("hold: human command stale")
    with pytest.raises(ValueError, match="authority"):
        sup.set_authority("robot")


def test_position_margin_shrinks_the_limits():
    sup = fresh(position_margin=0.1)
    sup.measured([0.95, 0.0], t=0.0)
    sup.command("policy", [1.0, -1.0], t=0.0, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(0.0).command, [0.9, -0.4])
    with pytest.raises(ValueError, match="position_margin"):
        SafetySupervisor(ARM, timeout_s=0.1, position_margin=0.6)
