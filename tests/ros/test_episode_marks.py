"""Episodes on a real robot over DDS: the operator marks start, end, success and failure on the topic, through the
services and with the keyboard keys; the episode node turns them into episode events that the recorder stores; an
episode ended without an outcome is kept and counted by ``r2s logs info``; malformed marks, a flood of them
included, are dropped and counted and end no node; between episodes the safety node homes the arm along its limited
path and holds it at home until the next start; an episode open when the episode node dies ends, at the recorder's
stop, without an outcome."""

from __future__ import annotations

import io
import json
import signal
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402

from robots.so101 import HOME, SO101  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.common import set_stamp  # noqa: E402
from stack.ros.deploy import Graph  # noqa: E402
from stack.ros.keyboard_operator import publish_marks  # noqa: E402

Q0 = np.array([0.8, 0.4, -0.5, 0.0, 1.0, 0.5])
"""Where the arm is measured when an episode ends (about 1 rad from home on some joints)."""
KEYS = ("recorder", "safety", "episodes")


def _values(msg) -> tuple[str, dict[str, str]]:
    return msg.status[0].message, {kv.key: kv.value for kv in msg.status[0].values}


def test_operator_marks_episodes_the_recorder_stores_them_and_the_arm_homes_between(ros, tmp_path, capsys):
    from stack.cli import main
    from stack.data.logs import read_log

    js = ros.publisher(JointState, SO101.joint_states_topic)
    obs = ros.publisher(JointState, topics.OBSERVATION)
    marks = ros.publisher(String, topics.EPISODE_EVENT)
    q = {"now": Q0.copy()}

    def tick():  # the robot's joint_states, and a policy's observation of each step (the log's steps)
        now = time.time_ns()
        msg = JointState(name=list(SO101.joint_names), position=q["now"].tolist())
        set_stamp(msg.header.stamp, now)
        js.publish(msg)
        o = JointState(name=[f"joint_pos[{i}]" for i in range(6)], position=q["now"].tolist())
        set_stamp(o.header.stamp, now)
        obs.publish(o)

    timer = ros.node.create_timer(0.02, tick)
    episodes = ros.listen(DiagnosticArray, topics.EPISODE)
    status = ros.listen(String, topics.SAFETY_STATUS)
    hw = ros.listen(Float64MultiArray, SO101.command_topic)
    diags = ros.listen(DiagnosticArray, topics.DIAGNOSTICS)
    bag = tmp_path / "bag"
    graph = Graph({"recorder": {"robot": "so101", "output_dir": str(bag)},
                   "safety": {"robot": "so101", "home_between_episodes": True},
                   "episodes": {"robot": "so101", "task": "pick", "diagnostics_period_s": 0.2}}, log_dir=tmp_path)
    graph.start(KEYS)
    try:
        graph.up(KEYS, timeout_s=60)

        def expect(event, n, timeout=10.0):
            """The n-th episode event (1-based) has arrived and is ``event``; its values."""
            deadline = time.monotonic() + timeout
            while len(episodes.items) < n and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(episodes.items) >= n, f"event {n} did not arrive: {[_values(m) for _, m in episodes.items]}"
            got, values = _values(episodes.items[n - 1][1])
            assert got == event, (n, got, values)
            return values

        # Before the first start nothing commands the arm.
        status.wait_for(lambda m: m.data == "hold: between episodes", timeout=10)
        # Episode 0 by service, ended by a success on the topic (DDS discovery: the first mark may need a retry).
        reply = ros.call(Trigger, topics.EPISODE_SERVICES["start"])
        assert reply.success and reply.message == "episode 0 started"
        assert expect("start", 1)["source"] == "operator"
        time.sleep(0.3)
        t_end = time.monotonic()
        for _ in range(40):  # until the node's subscription has matched (a repeat after it did is refused)
            marks.publish(String(data="success: clean"))
            time.sleep(0.25)
            if len(episodes.items) >= 2:
                break
        end = expect("end", 2)
        assert end["outcome"] == "success" and end["note"] == "clean" and end["task"] == "pick"
        # Between episodes: homing along the limited path, then a hold at home.
        status.wait_for(lambda m: m.data == "hold: between episodes", timeout=10, since=t_end)
        t_home = time.monotonic()
        q["now"] = np.clip(HOME, *SO101.pos_limits)  # the arm got there
        # An outcome with no episode open is refused, with the reason.
        reply = ros.call(Trigger, topics.EPISODE_SERVICES["failure"])
        assert not reply.success and "no episode is open" in reply.message
        # Malformed marks, and a flood of them, are dropped and counted; the node lives on. (Most of the flood is
        # overwritten in the publisher's and subscriber's 10-deep queues before it is taken.)
        for text in ("jump!", "", "start end", "\x00" * 5000, "succes"):
            marks.publish(String(data=text))
        for k in range(300):
            marks.publish(String(data=f"garbage {k}"))
        diags.wait_for(lambda m: m.status[0].name.endswith(": episodes") and int(
            {kv.key: kv.value for kv in m.status[0].values}.get("dropped", "0")) >= 10, timeout=10)
        graph.check_alive()
        # Episode 1 on the topic, ended without an outcome by the service.
        marks.publish(String(data="start"))
        expect("start", 3)
        t_start = time.monotonic()
        status.wait_for(lambda m: m.data == "hold: no policy command", timeout=5, since=t_start)  # unparked
        reply = ros.call(Trigger, topics.EPISODE_SERVICES["end"])
        assert reply.success and "without an outcome" in reply.message
        assert "outcome" not in expect("end", 4)
        # Episode 2 by keyboard keys: s, then n (failure).
        publish_marks(io.StringIO("s\n"), lambda text: marks.publish(String(data=text)), err=io.StringIO())
        expect("start", 5)
        time.sleep(0.2)
        publish_marks(io.StringIO("n\n"), lambda text: marks.publish(String(data=text)), err=io.StringIO())
        assert expect("end", 6)["outcome"] == "failure"
        # Episode 3 is still open when the episode node dies (SIGKILL: no goodbye); the recorder ends it at the stop
        # without an outcome — not the sim's "timeout", which would be a failure label.
        marks.publish(String(data="START"))
        expect("start", 7)
        time.sleep(0.2)
        graph.nodes["episodes"].proc.send_signal(signal.SIGKILL)
        graph.nodes["episodes"].proc.wait(timeout=10)
    finally:
        ros.node.destroy_timer(timer)
        codes = graph.stop()
    assert codes == {"episodes": -signal.SIGKILL, "recorder": 0, "safety": 0}, codes

    # The homing after episode 0: from Q0 to home, within the velocity and acceleration limits.
    during = [m.data for ts, m in status.items if t_end <= ts <= t_home]
    assert during.count("homing") >= 3, during[:10]
    cmds = np.array([m.data for ts, m in hw.items if t_end <= ts <= t_home])
    period = SO101.control_period_s
    steps = np.diff(cmds, axis=0)
    assert np.abs(steps).max() <= 5.45 * period * 1.05 + 1e-9
    assert np.abs(np.diff(steps, axis=0)).max() <= 110.0 * period ** 2 * 1.05 + 1e-9
    np.testing.assert_allclose(cmds[-1], np.clip(HOME, *SO101.pos_limits), atol=1e-6)

    log = read_log(bag)
    assert [e.outcome for e in log.episodes] == ["success", None, "failure", None]
    assert all(e.length > 0 for e in log.episodes), [e.length for e in log.episodes]
    assert log.episodes[3].values["reason"] == "recording stopped"
    assert log.topics[topics.EPISODE_EVENT]["count"] >= 10  # the marks are in the bag as sent, malformed ones too
    assert main(["logs", "info", str(bag), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 4 and out["without_outcome"] == 2
    assert out["outcomes"] == {"success": 1, "failure": 1, "none": 2}
