"""Homing over real DDS (issue 11.9): with ``home_on_activate`` / ``home_on_deactivate`` the safety node moves the
arm to the home pose along a rate- and acceleration-limited path at activation and at deactivation, never a jump,
and its last command is a hold at home."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from robots.so101 import HOME, SO101  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.common import set_stamp  # noqa: E402
from stack.ros.deploy import Graph  # noqa: E402

Q0 = np.array([0.8, 0.4, -0.5, 0.0, 1.0, 0.5])
"""Where the arm is measured: about 1 rad from home on some joints (several periods of motion)."""


def test_homing_on_activate_and_deactivate_follows_a_limited_path(ros, tmp_path):
    js = ros.publisher(JointState, SO101.joint_states_topic)

    def tick():
        msg = JointState(name=list(SO101.joint_names), position=Q0.tolist())
        set_stamp(msg.header.stamp, time.time_ns())
        js.publish(msg)

    timer = ros.node.create_timer(0.01, tick)
    hw = ros.listen(Float64MultiArray, SO101.command_topic)
    status = ros.listen(String, topics.SAFETY_STATUS)
    graph = Graph({"safety": {"robot": "so101", "home_on_activate": True, "home_on_deactivate": True}},
                  log_dir=tmp_path)
    graph.start(["safety"])
    try:
        graph.up(["safety"], timeout_s=60)
        status.wait_for(lambda m: m.data == "hold: no policy command", timeout=20)  # homed, waiting for the policy
        t = time.monotonic()
        proc = graph.nodes["safety"].proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        time.sleep(0.3)
    finally:
        ros.node.destroy_timer(timer)
        graph.stop()
    statuses = [m.data for _, m in status.items]
    assert statuses.count("homing") >= 3, "about 1 rad at 5.45 rad/s: several periods of homing"
    cmds = np.array([m.data for _, m in hw.items])
    limit = 5.45 * SO101.control_period_s * 1.05 + 1e-9
    assert np.abs(cmds[0] - Q0).max() <= limit  # one step from where the arm is
    steps = np.abs(np.diff(cmds, axis=0))
    assert steps.max() <= limit, steps.max()
    speeds = np.diff(cmds, axis=0)
    assert np.abs(np.diff(speeds, axis=0)).max() <= 110.0 * SO101.control_period_s ** 2 * 1.05 + 1e-9
    # Deactivation homed again (the measured arm never moved: hold target = home) and ended with a hold at home.
    after = [m.data for m in status.since(t)]
    assert after and after[-1] == "hold: deactivated", after[-5:]
    np.testing.assert_allclose(cmds[-1], np.clip(HOME, *SO101.pos_limits), atol=1e-6)
