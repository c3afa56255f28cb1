"""The safety supervisor's decisions by hand (no ROS): hold, e-stop, mux, clamp, velocity and acceleration limits,
implausible and stale inputs, homing."""

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
ACC_ARM = RobotSpec(
    name="toy_arm_acc",
    joints=(JointSpec("a", -3.0, 3.0, 2.0, 1.0, 10.0),),  # 2 rad/s, 10 rad/s²: speed changes 1 rad/s per period
    control_mode="position",
    control_rate_hz=10.0,
    model_source="r2s:toy.xml",
)


def fresh(timeout=0.15, spec=ARM, q0=None, **kw):
    sup = SafetySupervisor(spec, timeout_s=timeout, **kw)
    sup.measured(np.zeros(spec.num_joints) if q0 is None else q0, t=0.0)
    return sup


def drive(sup, target, t0, steps, dt=0.1, measured=None):
    """Fresh policy commands (and readings: ``measured`` or the last command) every ``dt``; the commands sent."""
    out = []
    for k in range(steps):
        t = t0 + k * dt
        sup.measured(out[-1] if measured is None and out else (measured if measured is not None
                                                               else sup._measured), t=t)
        sup.command("policy", target, t=t, stamp_ns=int(t * 1e9))
        out.append(sup.decide(t).command)
    return out


def test_policy_command_is_clamped_and_rate_limited():
    sup = fresh()
    sup.command("policy", [0.9, 0.9], t=0.0, stamp_ns=7)
    d = sup.decide(0.0)
    # b is clamped to its limit 0.5 (no speed limit); a moves at most vel_max * period = 0.2 from the measured 0.
    np.testing.assert_allclose(d.command, [0.2, 0.5])
    assert d.status == "ok" and d.authority == "policy" and d.stamp_ns == 7 and d.limited
    np.testing.assert_array_equal(d.mask, [0.0, 0.0])
    sup.measured([0.2, 0.5], t=0.1)
    sup.command("policy", [0.9, 0.9], t=0.1, stamp_ns=int(0.1e9))
    np.testing.assert_allclose(sup.decide(0.1).command, [0.4, 0.5])  # 0.1 s later: another 0.2 rad


def test_a_late_command_never_allows_more_than_one_nominal_period_of_motion():
    sup = fresh(timeout=10.0)
    sup.command("policy", [1.0, 0.0], t=0.0, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(0.0).command[0], 0.2)
    sup.measured([0.2, 0.0], t=5.0)
    sup.command("policy", [1.0, 0.0], t=5.0, stamp_ns=0)
    # 5 s later: one period's step (0.2), not 5 s worth, nor two periods — a bench counts steps per nominal period.
    np.testing.assert_allclose(sup.decide(5.0).command[0], 0.4)
    sup.command("policy", [1.0, 0.0], t=5.01, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(5.01).command[0], 0.42)  # 10 ms later: 10 ms worth


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


def test_hold_ramps_from_the_last_command_and_ignores_a_glitched_reading():
    # The case: the command is at 0.6 while the arm lags at 0.3; one joint_states sample glitches to +2.7;
    # an e-stop 3 ms later. Before the fix the hold commanded the glitch (clipped to the limit) in one period.
    sup = fresh(timeout=0.5, q0=[0.3, 0.0])
    cmds = drive(sup, [0.6, 0.0], 0.0, 3, measured=[0.3, 0.0])  # 0.5, 0.6, 0.6
    np.testing.assert_allclose(cmds[-1], [0.6, 0.0])
    assert sup.measured([2.7, 0.0], t=0.21) is not None  # refused: 2.4 rad in 10 ms
    assert sup.implausible == 1
    sup.estop()
    d = sup.decide(0.213)
    assert d.status == "hold: e-stop"
    # Towards the last plausible reading (0.3), at most 2 rad/s × 13 ms from the last command (0.6).
    np.testing.assert_allclose(d.command[0], 0.6 - 2.0 * 0.013)
    for k in range(1, 5):
        d = sup.decide(0.213 + 0.1 * k)
        assert d.status == "hold: e-stop"
        assert 0.3 - 1e-9 <= d.command[0] <= 0.6  # never towards the glitch
    np.testing.assert_allclose(d.command[0], 0.3)  # arrived at the hold target and stays


def test_implausible_reading_is_held_through_until_a_plausible_one():
    sup = fresh(timeout=0.5)
    drive(sup, [0.0, 0.0], 0.0, 2)
    reason = sup.measured([0.0, 0.0], t=0.2) or sup.measured([1.0, 0.0], t=0.21)  # 1 rad in 10 ms: a glitch
    assert reason.startswith("implausible joint_states: a jumped +1.000 rad in 10 ms")
    sup.command("policy", [0.0, 0.0], t=0.21, stamp_ns=int(0.21e9))
    d = sup.decide(0.21)
    assert d.status == f"hold: {reason}"
    np.testing.assert_allclose(d.command, [0.0, 0.0])  # the last plausible reading, not the glitch
    assert sup.measured([0.01, 0.0], t=0.22) is None  # back where it was: the fault clears
    sup.command("policy", [0.0, 0.0], t=0.22, stamp_ns=int(0.22e9))
    assert sup.decide(0.22).status == "ok"


def test_consistent_readings_at_a_new_place_are_accepted_after_confirm_samples():
    sup = fresh(timeout=0.5, confirm_samples=3)
    drive(sup, [0.0, 0.0], 0.0, 2)
    assert sup.measured([0.8, 0.0], t=0.20) is not None
    assert sup.measured([0.8, 0.0], t=0.21) is not None
    assert sup.measured([0.8, 0.0], t=0.22) is None  # the third agreeing reading: the robot really is there
    sup.command("policy", [0.8, 0.0], t=0.22, stamp_ns=int(0.22e9))
    d = sup.decide(0.22)
    assert d.status == "ok"
    assert abs(d.command[0] - 0.0) <= 2.0 * 0.1 + 1e-12  # and still no jump of the command


@pytest.mark.parametrize("order", ["reset_first", "reading_first"])
def test_resync_accepts_an_episode_reset_jump_and_restarts_from_the_measurement(order):
    sup = fresh(timeout=0.5)
    drive(sup, [0.0, 0.0], 0.0, 2)
    if order == "reset_first":
        sup.resync(0.2)
        assert sup.measured([0.9, 0.1], t=0.21) is None
    else:
        assert sup.measured([0.9, 0.1], t=0.21) is not None
        sup.resync(0.21)
    sup.command("policy", [0.9, 0.1], t=0.22, stamp_ns=int(0.22e9))
    d = sup.decide(0.22)
    assert d.status == "ok"
    np.testing.assert_allclose(d.command, [0.9, 0.1])  # from where the reset put the robot
    # The window closes: a later jump is a glitch again.
    assert sup.measured([0.9, 0.1], t=1.99) is None
    assert sup.measured([0.1, 0.1], t=2.0) is not None


def test_hold_target_stays_latched_while_the_arm_sags():
    sup = fresh(timeout=0.15)
    sup.command("policy", [0.0, 0.0], t=0.0, stamp_ns=0)
    sup.decide(0.0)
    sup.measured([0.3, 0.1], t=0.2)  # policy silent since t=0: hold at the position measured now
    d = sup.decide(0.2)
    assert d.holding
    np.testing.assert_allclose(d.command, [0.2, 0.1])  # ramping there from the last command (0), 0.2 a period
    np.testing.assert_allclose(sup.decide(0.3).command, [0.3, 0.1])
    sup.measured([0.25, 0.1], t=0.35)  # the arm sags; the hold target must not follow it down
    d = sup.decide(0.4)
    assert d.holding
    np.testing.assert_allclose(d.command, [0.3, 0.1])
    assert sup.holds == 1


def test_non_finite_inputs_are_refused_and_hold():
    sup = fresh()
    sup.measured([0.1, 0.0], t=0.0)
    assert sup.measured([np.nan, 0.0], t=0.01) == "non-finite joint_states position"  # the last finite one stays
    sup.command("policy", [np.nan, 0.0], t=0.01, stamp_ns=int(0.01e9))
    d = sup.decide(0.01)
    assert d.status == "hold: non-finite policy command"
    np.testing.assert_allclose(d.command, [0.1, 0.0])
    assert np.all(np.isfinite(d.command))


def test_a_proposal_on_an_old_observation_holds_even_when_it_arrives_fresh():
    # Issue 11.4: stamps 2 s old arrived as fresh messages and 60 "ok" commands went out on them.
    sup = fresh(timeout=0.075, max_obs_age_s=0.07)
    for t in (0.0, 0.05):
        sup.measured([0.0, 0.0], t=t, stamp_ns=int(t * 1e9))
    sup.command("policy", [0.0, 0.0], t=0.05, stamp_ns=int(0.04e9))  # observation 10 ms old
    assert sup.decide(0.05, new_command=True).status == "ok"
    sup.command("policy", [0.0, 0.0], t=0.06, stamp_ns=int((0.06 - 2.0) * 1e9))
    assert sup.decide(0.06, new_command=True).status == "hold: policy observation stale (2000 ms by stamp)"
    assert not sup.due(0.07)  # a stale proposal holds once; the next fresh one resumes
    sup.command("policy", [0.0, 0.0], t=0.07, stamp_ns=int(0.07e9))
    assert sup.decide(0.07, new_command=True).status == "ok"
    sup.measured([0.0, 0.0], t=0.13, stamp_ns=int(0.13e9))
    # While a command is in force its observation ages: only silence (arrival age) makes the watchdog hold.
    assert sup.check(0.07 + 0.071) is None
    assert sup.check(0.07 + 0.076).startswith("policy command stale")


def test_joint_states_are_stale_by_stamp_and_a_clock_stepping_back_holds():
    sup = fresh(timeout=0.075)
    sup.measured([0.0, 0.0], t=10.0, stamp_ns=int(9.0e9))  # arrives now, stamped 1 s ago
    sup.command("policy", [0.0, 0.0], t=10.0, stamp_ns=int(9.0e9))
    assert sup.check(10.0) == "joint_states stale (1000 ms by stamp)"
    sup.measured([0.0, 0.0], t=10.01, stamp_ns=int(10.01e9))
    sup.command("policy", [0.0, 0.0], t=10.01, stamp_ns=int(10.01e9))
    assert sup.check(10.02) is None
    # The node's clock steps back 2 s: every input now looks 2 s in the future — not fresh.
    assert sup.check(8.02) == "joint_states from the future (1990 ms: did the clock step back?)"


def test_estop_latches_and_its_reset_returns_to_the_reset_authority_with_no_old_command():
    sup = fresh(timeout=0.15, reset_authority="policy")
    sup.command("policy", [0.1, 0.1], t=0.0, stamp_ns=0)
    sup.command("baseline", [0.0, 0.0], t=0.0, stamp_ns=0)
    assert sup.decide(0.0).status == "ok"
    sup.estop()
    for t in (0.01, 0.05, 0.1):
        sup.measured([0.1, 0.1], t=t)
        sup.command("policy", [0.2, 0.2], t=t, stamp_ns=int(t * 1e9))
        assert sup.decide(t).status == "hold: e-stop"
    # Issue 11.6: an authority change sent while latched must not survive the reset.
    with pytest.raises(ValueError, match="refused: the e-stop is latched"):
        sup.set_authority("baseline")
    assert sup.reset_estop() is True
    assert sup.authority == "policy"
    assert sup.decide(0.1).status == "hold: no policy command"  # the command of t=0.1 predates the reset
    sup.command("policy", [0.2, 0.2], t=0.12, stamp_ns=int(0.12e9))
    assert sup.decide(0.12).status == "ok"
    sup.set_authority("baseline")
    sup.estop()
    sup.reset_estop()
    assert sup.authority == "policy"  # back to the stated safe authority, not the one before the e-stop
    assert sup.reset_estop() is False


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
    sup.command("policy", [0.1, 0.1], t=0.3, stamp_ns=int(0.3e9))
    assert sup.decide(0.3).status == "ok"
    sup.measured([0.1, -0.1], t=0.6)
    sup.command("policy", [0.1, 0.1], t=0.6, stamp_ns=int(0.6e9))
    assert sup.decide(0.6).status.startswith("hold: human command stale")
    with pytest.raises(ValueError, match="authority"):
        sup.set_authority("robot")


def test_position_margin_shrinks_the_limits():
    sup = fresh(position_margin=0.1, q0=[0.85, 0.0])
    sup.command("policy", [1.0, -1.0], t=0.0, stamp_ns=0)
    np.testing.assert_allclose(sup.decide(0.0).command, [0.9, -0.4])
    with pytest.raises(ValueError, match="position_margin"):
        SafetySupervisor(ARM, timeout_s=0.1, position_margin=0.6)


# ---- acceleration -------------------------------------------------------------------------------------------------
def test_acceleration_limit_ramps_speed_up_and_brakes_to_stop_at_the_target():
    sup = fresh(spec=ACC_ARM, timeout=10.0, q0=[0.0])
    cmds = [c[0] for c in drive(sup, [1.5], 0.0, 14)]
    steps = np.diff([0.0, *cmds])
    # Speed 1 rad/s after one period, then 2 (the velocity limit): steps 0.1, 0.2, 0.2 …
    np.testing.assert_allclose(steps[:3], [0.1, 0.2, 0.2], atol=1e-9)
    assert np.all(np.abs(np.diff(steps)) <= 10.0 * 0.1 * 0.1 + 1e-9), "speed changed by more than a·dt a period"
    assert np.all(np.array(cmds) <= 1.5 + 1e-9), "braking must not overshoot the target"
    np.testing.assert_allclose(cmds[-1], 1.5)


def test_an_estop_at_full_speed_decelerates_within_the_limit_and_returns_to_the_hold_target():
    sup = fresh(spec=ACC_ARM, timeout=10.0, q0=[0.0], jump_tolerance=1.0)
    cmds = [c[0] for c in drive(sup, [3.0], 0.0, 5)]  # at 2 rad/s, command 0.7 at t = 0.4
    sup.measured([0.5], t=0.41)  # the arm lags the command
    sup.estop()
    prev, prev_step = cmds[-1], cmds[-1] - cmds[-2]
    out = []
    for k in range(1, 15):
        d = sup.decide(0.4 + 0.1 * k)
        step = d.command[0] - prev
        assert abs(step) <= 0.2 + 1e-9 and abs(step - prev_step) <= 0.1 + 1e-9
        prev, prev_step = d.command[0], step
        out.append(d.command[0])
    assert max(out) <= cmds[-1] + 0.2 + 1e-9  # stops within a short braking distance …
    np.testing.assert_allclose(out[-1], 0.5)  # … then returns to where the arm was measured when it latched


def test_random_faults_never_produce_an_unsafe_command():
    """Fuzz: glitches, NaN, stale and future stamps, e-stops, authority changes, resets, gaps; every command stays
    within the limits, steps at most one period of vel_max and (away from the limits) changes speed by at most
    acc_max·dt."""
    rng = np.random.default_rng(0)
    spec = RobotSpec("fuzz", (JointSpec("a", -1.0, 1.0, 2.0, 1.0, 15.0), JointSpec("b", -2.0, 0.5, 3.0, 1.0, 40.0)),
                     "position", 20.0, "r2s:toy.xml")
    sup = SafetySupervisor(spec, timeout_s=0.075, teleop_timeout_s=0.3, position_margin=0.02)
    vmax, amax, period = spec.vel_limits, spec.acc_limits, spec.control_period_s
    q = np.zeros(2)
    t, last, last_t, last_v = 0.0, None, None, np.zeros(2)
    for _ in range(4000):
        t += rng.choice([0.001, 0.01, 0.05, 0.2], p=[0.2, 0.5, 0.28, 0.02])
        ev = rng.random()
        if ev < 0.4:
            reading = q + rng.normal(0, 0.01, 2)
            if rng.random() < 0.05:
                reading = rng.uniform(-4, 4, 2)  # glitch
            if rng.random() < 0.02:
                reading[0] = np.nan
            stamp = t + rng.choice([0.0, -0.01, -2.0, 5.0], p=[0.8, 0.15, 0.03, 0.02])
            sup.measured(reading, t, int(stamp * 1e9))
        elif ev < 0.8:
            src = rng.choice(["policy", "human", "baseline"], p=[0.8, 0.1, 0.1])
            values = rng.uniform(-3, 3, 2) if rng.random() < 0.3 else q + rng.normal(0, 0.3, 2)
            if rng.random() < 0.03:
                values[1] = np.inf
            stamp = t + rng.choice([0.0, -0.01, -1.0, 3.0], p=[0.8, 0.15, 0.03, 0.02])
            sup.command(str(src), values, t, int(stamp * 1e9), commanded=rng.random(2) < 0.7 if src == "human"
                        else None)
        elif ev < 0.83:
            sup.estop()
        elif ev < 0.86:
            sup.reset_estop()
        elif ev < 0.88:
            try:
                sup.set_authority(str(rng.choice(["policy", "human", "baseline"])))
            except ValueError:
                pass
        elif ev < 0.885:
            sup.start_homing(rng.uniform(-1, 0.5, 2))
        d = sup.decide(t)
        if d is None:
            continue
        c = d.command
        assert np.all(np.isfinite(c))
        assert np.all(c >= sup.lo - 1e-12) and np.all(c <= sup.hi + 1e-12)
        if last is not None:
            dt = min(t - last_t, period)
            step = c - last
            assert np.all(np.abs(step) <= vmax * period + 1e-9), (step, d.status)
            if dt > 0:
                v = step / dt
                # Position limits beat the acceleration limit: a command clamped at a limit may stop harder.
                inside = (c > sup.lo + 1e-12) & (c < sup.hi - 1e-12)
                assert np.all(np.abs(v - last_v)[inside] <= amax[inside] * dt + 1e-6), (v, last_v, d.status)
                last_v = v
        last, last_t = c, t
        q = q + 0.5 * (c - q)  # the arm follows the command


# ---- homing, deactivation, the watchdog --------------------------------------------------------------------------
def test_homing_moves_along_the_limited_path_then_the_policy_takes_over():
    sup = fresh(spec=ACC_ARM, timeout=10.0, q0=[1.0])
    sup.command("policy", [2.0], t=0.0, stamp_ns=0)
    sup.start_homing([0.0])
    statuses, cmds = [], []
    for k in range(12):
        t = 0.1 * k
        sup.measured(cmds[-1] if cmds else [1.0], t=t)
        d = sup.decide(t)
        statuses.append(d.status)
        cmds.append(d.command)
        if not sup.homing:
            break
    assert statuses[:-1] == ["homing"] * (len(statuses) - 1) and statuses[-1] == "homing"
    np.testing.assert_allclose(cmds[-1], [0.0])
    assert np.all(np.abs(np.diff([1.0, *[c[0] for c in cmds]])) <= 0.2 + 1e-9)
    sup.command("policy", [0.05], t=1.3, stamp_ns=int(1.3e9))
    sup.measured([0.0], t=1.3)
    assert sup.decide(1.3).status == "ok"


def test_estop_cancels_homing():
    sup = fresh(timeout=10.0, q0=[0.5, 0.0])
    sup.start_homing([0.0, 0.0])
    assert sup.decide(0.0).status == "homing"
    sup.estop()
    assert sup.decide(0.1).status == "hold: e-stop"
    sup.reset_estop()
    assert not sup.homing


def test_deactivate_holds_and_the_final_command_is_a_hold_without_a_step():
    sup = fresh(timeout=10.0)
    cmds = drive(sup, [0.6, 0.0], 0.0, 2, measured=[0.0, 0.0])  # 0.2, 0.4
    sup.deactivate()
    sup.command("policy", [0.6, 0.0], t=0.2, stamp_ns=int(0.2e9))
    d = sup.decide(0.2)
    assert d.status == "hold: deactivated"
    np.testing.assert_allclose(d.command, [0.2, 0.0])  # ramping back towards the measured 0
    f = sup.final(0.21, "deactivated")
    assert f.status == "hold: deactivated"
    np.testing.assert_allclose(f.command, d.command)
    assert cmds


def test_watchdog_is_due_when_a_hold_begins_and_once_a_period_during_a_hold():
    sup = fresh(timeout=0.15)
    sup.command("policy", [0.0, 0.0], t=0.0, stamp_ns=0)
    sup.decide(0.0)
    assert not sup.due(0.1)  # ok: the policy's commands are the output
    assert sup.due(0.16)  # stale: a hold begins now
    sup.decide(0.16)
    assert not sup.due(0.2)
    assert sup.due(0.16 + 0.095)
