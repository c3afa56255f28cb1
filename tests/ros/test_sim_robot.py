"""The sim robot as a process: sim time on /clock off real time, both command interfaces, command latency."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint  # noqa: E402

from robots.so101 import HOME, SO101  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.deploy import Graph  # noqa: E402

LATENCY_S = 0.2


def _stamp(m) -> float:
    return m.header.stamp.sec + m.header.stamp.nanosec * 1e-9


def test_sim_time_command_interfaces_and_latency(ros, tmp_path):
    clock = ros.listen(Clock, topics.CLOCK)
    js = ros.listen(JointState, SO101.joint_states_topic)
    graph = Graph({"sim": {"robot": "so101", "real_time_factor": 4.0, "command_latency_s": LATENCY_S,
                           "sim_rate_hz": 100.0}}, log_dir=tmp_path)
    graph.start(["sim"])
    try:
        graph.up(["sim"], timeout_s=60)
        js.wait_for(lambda m: True, timeout=10)
        t_wall = time.monotonic()
        t_sim = clock.wait_for(lambda m: True, timeout=10)[1].clock
        time.sleep(1.0)
        advanced = clock.last().clock.sec + clock.last().clock.nanosec * 1e-9 - (t_sim.sec + t_sim.nanosec * 1e-9)
        elapsed = time.monotonic() - t_wall
        assert 2.0 * elapsed < advanced < 6.0 * elapsed, f"sim time {advanced:.2f} s in {elapsed:.2f} s of wall time"
        assert abs(_stamp(js.last()) - (clock.last().clock.sec + clock.last().clock.nanosec * 1e-9)) < 0.5

        # Forward controller: a position command takes effect LATENCY_S (sim time) after it arrives.
        home = np.array(HOME)
        target = home.copy()
        target[0] += 0.3
        fwd = ros.publisher(Float64MultiArray, SO101.command_topic)
        t0 = time.monotonic()
        fwd.publish(Float64MultiArray(data=target.tolist()))
        t_cmd = clock.wait_for(lambda m: True, since=t0, timeout=5)[1].clock
        t_cmd = t_cmd.sec + t_cmd.nanosec * 1e-9
        _, moved = js.wait_for(lambda m: m.position[0] > home[0] + 0.01, since=t0, timeout=10)
        assert _stamp(moved) >= t_cmd + LATENCY_S - 0.05, f"moved {_stamp(moved) - t_cmd:.3f} s after the command"
        js.wait_for(lambda m: abs(m.position[0] - target[0]) < 0.03, since=t0, timeout=10)

        # Trajectory controller: joints by name, in any order, interpolated over time_from_start.
        names = list(reversed(SO101.joint_names))
        goal = home.copy()
        goal[2] += 0.4
        traj = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(positions=goal[::-1].tolist())])
        traj.points[0].time_from_start.sec = 1
        t0 = time.monotonic()
        ros.publisher(JointTrajectory, SO101.trajectory_topic).publish(traj)
        _, mid = js.wait_for(lambda m: m.position[2] > home[2] + 0.05, since=t0, timeout=10)
        assert mid.position[2] < goal[2] - 0.05, "a 1 s trajectory is followed gradually, not jumped to"
        js.wait_for(lambda m: abs(m.position[2] - goal[2]) < 0.03, since=t0, timeout=10)
        assert abs(js.last().position[0] - home[0]) < 0.03, "matched by name: joint 0 follows its own entry (home)"

        # Reset: back to the home pose.
        assert ros.call(Trigger, topics.RESET_SERVICE).success
        t0 = time.monotonic()
        js.wait_for(lambda m: np.allclose(m.position, home, atol=0.02), since=t0, timeout=10)
    finally:
        codes = graph.stop()
    assert codes == {"sim": 0}
