"""The policy and safety nodes as processes, with this test process playing the robot (joint_states at 100 Hz) and
the operator (e-stop, teleop): watchdog, NaN, e-stop latch, teleop takeover — over real DDS."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tests.ros.conftest import GOAL_TOPIC

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Bool, Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from robots.so101 import SO101  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.common import QOS_LATCHED  # noqa: E402
from stack.ros.deploy import Graph  # noqa: E402

PERIOD = SO101.control_period_s  # 50 ms
MARGIN_S = 0.15
"""Scheduling slack on this shared 2-core machine, added to every timing bound."""
Q0 = np.array([0.1, -0.2, 0.3, 0.4, 0.0, 0.2])
GOAL = np.array([0.2, -0.1, 0.35, 0.45, 0.1, 0.25])


class FakeRobot:
    """Publishes joint_states and the policy's goal topic at 100 Hz (names settable, NaN allowed)."""

    def __init__(self, ros):
        self.q = Q0.copy()
        self.names = list(SO101.joint_names)
        self.publishing = True
        self.goal_on = True
        self.last_goal = 0.0
        self.last_publish_ns = 0
        self._js = ros.publisher(JointState, SO101.joint_states_topic)
        self._goal = ros.publisher(Float64MultiArray, GOAL_TOPIC)
        self._timers = [ros.node.create_timer(0.01, self._tick), ros.node.create_timer(0.01, self._tick_goal)]

    def _tick(self):
        if not self.publishing:
            return
        msg = JointState(name=self.names, position=self.q.tolist(), velocity=[0.0] * len(self.names))
        t = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1_000_000_000)
        self._js.publish(msg)
        self.last_publish_ns = t

    def _tick_goal(self):
        if self.goal_on:
            self._goal.publish(Float64MultiArray(data=GOAL.tolist()))
            self.last_goal = time.monotonic()


@pytest.fixture(scope="module")
def arm(ros, p_controller, tmp_path_factory):
    robot = FakeRobot(ros)
    inbox = {
        "hw": ros.listen(Float64MultiArray, SO101.command_topic),
        "executed": ros.listen(JointTrajectory, topics.EXECUTED),
        "status": ros.listen(String, topics.SAFETY_STATUS),
        "authority": ros.listen(String, topics.AUTHORITY),
        "mask": ros.listen(Float64MultiArray, topics.INTERVENTION_MASK),
        "proposal": ros.listen(JointTrajectory, topics.PROPOSAL),
    }
    graph = Graph({"policy": {"robot": "so101", "policy_path": p_controller}, "safety": {"robot": "so101"}},
                  log_dir=tmp_path_factory.mktemp("arm_logs"))
    graph.start(["safety", "policy"])
    try:
        graph.up(["safety", "policy"], timeout_s=60)
        inbox["status"].wait_for(lambda m: m.data == "ok", timeout=20)
        yield robot, inbox, graph, ros
    finally:
        codes = graph.stop()
        for t in robot._timers:
            ros.node.destroy_timer(t)
    assert codes == {"policy": 0, "safety": 0}, codes


def _settle(inbox, timeout=10.0):
    """Wait for normal operation (status ok) and return the time it was seen."""
    t, _ = inbox["status"].wait_for(lambda m: m.data == "ok", timeout=timeout, since=time.monotonic())
    return t


def test_policy_commands_pass_through_safety(arm):
    robot, inbox, _, _ = arm
    _settle(inbox)
    t = time.monotonic()
    time.sleep(0.5)
    props = inbox["proposal"].since(t)
    assert len(props) >= 4, "the policy should step at ~20 Hz"
    expected = Q0 + 0.3 * (GOAL - Q0)  # the P-controller of the fixture policy
    np.testing.assert_allclose(props[-1].points[0].positions, expected, atol=1e-5)
    hw = inbox["hw"].since(t)
    assert hw and all(np.all(np.isfinite(m.data)) for m in hw)
    np.testing.assert_allclose(hw[-1].data, expected, atol=1e-5)  # within limits, within the rate limit
    assert inbox["authority"].last().data == "policy"
    np.testing.assert_array_equal(inbox["mask"].last().data, np.zeros(6))


def test_watchdog_holds_within_two_control_periods_when_joint_states_stop(arm):
    robot, inbox, _, _ = arm
    _settle(inbox)
    robot.publishing = False
    t_stop = time.monotonic()
    time.sleep(0.05)
    last_js_ns = robot.last_publish_ns
    inbox["status"].wait_for(lambda m: m.data.startswith("hold:"), timeout=5, since=t_stop)
    # The hold (the measured Q0, where the policy commanded Q0 + k·(goal − Q0)) is stamped when it was decided:
    # at most 2 control periods after the last joint_states.
    _, first_hold = inbox["executed"].wait_for(lambda m: np.allclose(m.points[0].positions, Q0), since=t_stop)
    delay = (first_hold.header.stamp.sec * 1e9 + first_hold.header.stamp.nanosec - last_js_ns) / 1e9
    assert delay <= 2 * PERIOD + MARGIN_S, f"hold began {delay * 1e3:.0f} ms after the last joint_states"
    # It holds the measured position, and keeps re-sending it (the forward controller would not time out).
    time.sleep(4 * PERIOD)
    late = inbox["hw"].since(time.monotonic() - 3 * PERIOD)
    assert late, "the hold must be re-published every control period"
    for m in late:
        np.testing.assert_allclose(m.data, Q0, atol=1e-9)
    robot.publishing = True
    _settle(inbox)


def test_nan_in_joint_states_gives_hold_out(arm):
    robot, inbox, _, _ = arm
    _settle(inbox)
    t = time.monotonic()
    robot.q = Q0.copy()
    robot.q[2] = math.nan
    _, status = inbox["status"].wait_for(lambda m: m.data.startswith("hold:"), timeout=5, since=t)
    time.sleep(0.3)
    for m in inbox["hw"].since(t):
        assert np.all(np.isfinite(m.data)), "a non-finite command reached the hardware topic"
    for m in inbox["hw"].since(time.monotonic() - 0.15):
        np.testing.assert_allclose(m.data, Q0, atol=1e-9)  # holding the last finite measurement
    refused = [p for p in inbox["proposal"].since(t) if not np.all(np.isfinite(p.points[0].positions))]
    assert refused, "the policy should mark refused steps with a NaN proposal"
    robot.q = Q0.copy()
    _settle(inbox)


def test_a_silent_task_topic_holds_and_no_ok_goes_out_on_its_last_value(arm):
    # Issue 11.4: /r2s/goal stopped for 3 s and 60 "ok" commands went out on its last value.
    robot, inbox, _, _ = arm
    _settle(inbox)
    robot.goal_on = False
    time.sleep(0.02)
    t_last = robot.last_goal
    t_hold, _ = inbox["status"].wait_for(lambda m: m.data.startswith("hold:"), timeout=5, since=t_last)
    time.sleep(1.0)
    t_resume = time.monotonic()
    robot.goal_on = True
    timeout = 1.5 * PERIOD
    late_ok = [m.data for ts, m in list(inbox["status"].items)
               if t_last + timeout + MARGIN_S < ts < t_resume and m.data == "ok"]
    assert not late_ok, f"{len(late_ok)} ok command(s) on a goal older than {timeout * 1e3:.0f} ms"
    assert t_hold - t_last <= timeout + PERIOD + MARGIN_S, f"hold {(t_hold - t_last) * 1e3:.0f} ms after the goal"
    _settle(inbox)


def test_estop_latches_until_reset(arm):
    robot, inbox, graph, ros = arm
    estop_state = ros.listen(Bool, topics.ESTOP_STATE, qos=QOS_LATCHED)
    _settle(inbox)
    t = time.monotonic()
    assert ros.call(Trigger, topics.ESTOP_SERVICE).success
    inbox["status"].wait_for(lambda m: m.data == "hold: e-stop", timeout=5, since=t)
    estop_state.wait_for(lambda m: m.data, timeout=5)
    ros.publisher(Bool, topics.ESTOP).publish(Bool(data=False))  # "false" does not release it
    time.sleep(0.5)
    recent = [m.data for m in inbox["status"].since(time.monotonic() - 0.3)]
    assert recent and set(recent) == {"hold: e-stop"}, recent
    for m in inbox["hw"].since(time.monotonic() - 0.3):
        np.testing.assert_allclose(m.data, Q0, atol=1e-9)
    t = time.monotonic()
    assert ros.call(Trigger, topics.RESET_ESTOP_SERVICE).success
    inbox["status"].wait_for(lambda m: m.data == "ok", timeout=5, since=t)
    estop_state.wait_for(lambda m: not m.data, timeout=5, since=t)
    # The e-stop topic latches too.
    t = time.monotonic()
    ros.publisher(Bool, topics.ESTOP).publish(Bool(data=True))
    inbox["status"].wait_for(lambda m: m.data == "hold: e-stop", timeout=5, since=t)
    assert ros.call(Trigger, topics.RESET_ESTOP_SERVICE).success
    _settle(inbox)


def test_teleop_takeover_flips_authority_and_executes_the_human_command(arm):
    robot, inbox, graph, ros = arm
    _settle(inbox)
    teleop = ros.publisher(JointState, topics.TELEOP_COMMAND)
    request = ros.publisher(String, topics.AUTHORITY_REQUEST)
    human = {"elbow_flex": 0.5, "wrist_flex": 0.3}  # a subset of the joints, within one rate-limit step of Q0
    timer = ros.node.create_timer(0.05, lambda: teleop.publish(
        JointState(name=list(human), position=list(human.values()))))
    try:
        time.sleep(0.2)
        t = time.monotonic()
        request.publish(String(data="human"))
        inbox["authority"].wait_for(lambda m: m.data == "human", timeout=5, since=t)
        time.sleep(0.4)
        cmd = np.asarray(inbox["executed"].last().points[0].positions)
        policy_cmd = Q0 + 0.3 * (GOAL - Q0)
        idx = [SO101.joint_names.index(n) for n in human]
        np.testing.assert_allclose(cmd[idx], list(human.values()), atol=1e-9)
        others = [i for i in range(6) if i not in idx]
        np.testing.assert_allclose(cmd[others], policy_cmd[others], atol=1e-5)
        mask = np.asarray(inbox["mask"].last().data)
        np.testing.assert_array_equal(mask, [1.0 if i in idx else 0.0 for i in range(6)])
        assert inbox["status"].last().data == "ok"
        t = time.monotonic()
        request.publish(String(data="policy"))
        inbox["authority"].wait_for(lambda m: m.data == "policy", timeout=5, since=t)
    finally:
        ros.node.destroy_timer(timer)
    time.sleep(0.3)
    np.testing.assert_array_equal(inbox["mask"].last().data, np.zeros(6))
    np.testing.assert_allclose(inbox["hw"].last().data, Q0 + 0.3 * (GOAL - Q0), atol=1e-5)
