"""A takeover through the real graph (policy → safety → sim robot over DDS, recorded by the recorder node) reads back
through ``stack.data.logs`` as the steps the safety node decided: human authority, the per-joint mask, the human's
command executed on its joints, the policy's proposal kept."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tests.ros.conftest import GOAL_TOPIC

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from robots.so101 import SO101  # noqa: E402
from stack.data.episodes import AUTHORITY  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.deploy import deploy  # noqa: E402

GOAL = np.array([0.4, -0.5, 0.6, 0.5, 0.3, 0.6])
HUMAN = {"elbow_flex": 0.5, "wrist_flex": 0.3}


@pytest.mark.slow  # ~15 s: the whole graph over DDS for 6 s
def test_a_takeover_of_two_joints_reads_back_step_by_step(ros, p_controller, tmp_path):
    from stack.data.logs import read_log, summary

    goal_pub = ros.publisher(Float64MultiArray, GOAL_TOPIC)
    teleop = ros.publisher(JointState, topics.TELEOP_COMMAND)
    request = ros.publisher(String, topics.AUTHORITY_REQUEST)
    timers = [ros.node.create_timer(0.01, lambda: goal_pub.publish(Float64MultiArray(data=GOAL.tolist()))),
              ros.node.create_timer(0.03, lambda: teleop.publish(JointState(name=list(HUMAN),
                                                                            position=list(HUMAN.values()))))]
    proposals = ros.listen(JointTrajectory, topics.PROPOSAL)
    stop = threading.Event()

    def operator():  # the policy alone for 1 s, then the human on two joints for ~1 s, then the policy again
        while not proposals.items and not stop.wait(0.05):
            pass
        for who in ("human", "policy"):
            if stop.wait(1.0):
                return
            for _ in range(3):  # a request is idempotent: repeated in case the first precedes DDS matching
                request.publish(String(data=who))
                time.sleep(0.01)

    thread = threading.Thread(target=operator, daemon=True)
    thread.start()
    bag = tmp_path / "bag"
    try:
        summary_ = deploy(p_controller, "so101", sim=True, task="", duration=6.0, bag_dir=str(bag),
                          log_dir=str(tmp_path / "logs"), status=False)
    finally:
        stop.set()
        for t in timers:
            ros.node.destroy_timer(t)
    assert summary_["exit_codes"]["recorder"] == 0, summary_
    log = read_log(bag)
    (episode,) = log.episodes  # no task: no episode events, one episode without an outcome
    s = episode.steps
    human = s["authority"] == AUTHORITY["human"]
    idx = [SO101.joint_names.index(n) for n in HUMAN]
    assert 12 <= human.sum() <= 28, human.sum()  # ~1 s at 20 Hz
    ok = s["safety_status"] == "ok"
    np.testing.assert_array_equal(s["intervention_mask"][human & ok], np.isin(np.arange(6), idx)[None].repeat(
        (human & ok).sum(), 0))
    assert not s["intervention_mask"][~human & ok].any()
    # Under the human: its joints get its command (within the rate limit, once reached), the others the policy's
    # proposal of that step or the one before it (the safety node mixes in the latest proposal it has).
    late = np.flatnonzero(human & ok)[-5:]
    np.testing.assert_allclose(s["executed"][late][:, idx], np.tile(list(HUMAN.values()), (5, 1)), atol=1e-6)
    assert (s["executed_stamp_ns"][human] != s["stamp_ns"][human]).all()  # teleop commands, not policy steps
    policy = (s["authority"] == AUTHORITY["policy"]) & ok
    assert (s["executed_stamp_ns"][policy] == s["stamp_ns"][policy]).mean() > 0.9
    assert np.isfinite(s["proposal"][human]).all()  # the proposal is kept under the human
    info = summary(log)
    assert info["interventions"] == 1 and info["intervened_episodes"] == 1
    assert info["human_dim_share"] == pytest.approx(info["human_share"] * 2 / 6, rel=0.05)
    assert episode.policy_version == "p-controller-v1"
