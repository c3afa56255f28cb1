"""The policy node refuses what it must not run: joint_states with other joint names, a model for another robot."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402

from stack.ros.deploy import Graph  # noqa: E402
from tests.ros.conftest import so101_policy  # noqa: E402


def test_wrong_joint_names_refuse_activation_naming_them(ros, p_controller, tmp_path):
    # joint_states of a differently named arm (as a mislabelled ros2_control config would publish them).
    wrong = ["Rotation", "Pitch", "Elbow", "Wrist_Pitch", "Wrist_Roll", "Jaw"]
    pub = ros.publisher(JointState, "/wrong_arm/joint_states")
    timer = ros.node.create_timer(0.02, lambda: pub.publish(JointState(name=wrong, position=[0.0] * 6)))
    graph = Graph({"policy": {"policy_path": p_controller, "joint_states_topic": "/wrong_arm/joint_states",
                              "activation_timeout_s": 10.0}}, log_dir=tmp_path)
    graph.start(["policy"])
    try:
        assert graph.client.transition("r2s_policy", "configure", 60)
        t = time.monotonic()
        assert not graph.client.transition("r2s_policy", "activate", 60), "activation must be refused"
        assert time.monotonic() - t < 10.0, "refused on the names, not by timing out"
        log = graph.nodes["policy"].log_tail(50)
        assert "refused" in log
        assert "missing ['shoulder_pan', 'shoulder_lift', 'elbow_flex', 'wrist_flex', 'wrist_roll', 'gripper']" in log
        assert "extra ['Rotation', 'Pitch', 'Elbow', 'Wrist_Pitch', 'Wrist_Roll', 'Jaw']" in log
    finally:
        ros.node.destroy_timer(timer)
        codes = graph.stop()
    assert codes == {"policy": 0}


def test_model_for_another_robot_is_refused_at_configure(ros, tmp_path):
    # The runtime's toy-arm model (tests/stack/test_runtime.py) loaded for the SO-101.
    from tests.stack.test_runtime import linear_chunk_model

    toy = linear_chunk_model(tmp_path / "toy.onnx", np.zeros((4, 3, 2), np.float32))
    graph = Graph({"policy": {"policy_path": str(toy), "robot": "so101"}}, log_dir=tmp_path)
    graph.start(["policy"])
    try:
        assert not graph.client.transition("r2s_policy", "configure", 60)
        log = graph.nodes["policy"].log_tail(20)
        assert "SpecMismatch" in log and "robot: model was exported for 'toy_arm'" in log, log
    finally:
        codes = graph.stop()
    assert codes == {"policy": 0}


def test_observation_layout_the_node_cannot_read_is_refused(ros, tmp_path):
    from robots.spec import ObsSegment

    layout = (ObsSegment("joint_pos", 6, "joint_states.position"), ObsSegment("image", 6, "camera:/front"))
    path = so101_policy(tmp_path / "cam.onnx", np.zeros((1, 12, 6), np.float32), layout)
    graph = Graph({"policy": {"policy_path": path}}, log_dir=tmp_path)
    graph.start(["policy"])
    try:
        assert not graph.client.transition("r2s_policy", "configure", 60)
        assert "segment image has source 'camera:/front'" in graph.nodes["policy"].log_tail(20)
    finally:
        graph.stop()


def test_a_model_that_cannot_run_is_refused_saying_why_in_the_log_and_in_deploy(ros, p_controller, tmp_path):
    # Issue 11.5: a truncated file was refused with an empty log and `r2s deploy` printed only "configure failed:".
    from pathlib import Path

    from stack.ros.deploy import DeployError

    whole = Path(p_controller).read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(whole[: len(whole) // 2])
    graph = Graph({"policy": {"policy_path": str(truncated), "robot": "so101"}}, log_dir=tmp_path)
    graph.start(["policy"])
    try:
        with pytest.raises(DeployError) as info:
            graph.up(["policy"], timeout_s=60)
    finally:
        codes = graph.stop()
    first_line = str(info.value).splitlines()[0]
    assert first_line.startswith("r2s_policy: configure failed: configure: cannot load"), first_line
    assert "ModelError" in first_line and "onnxruntime cannot load it" in first_line, first_line
    assert codes == {"policy": 0}


def test_a_restarted_policy_node_answers_its_first_configure_request(ros, p_controller, tmp_path):
    """Issue 11.8: after kill -9 the dead node stays known to DDS; a request sent to it is never answered."""
    graph = Graph({"policy": {"policy_path": p_controller}}, log_dir=tmp_path)
    graph.start(["policy"])
    try:
        assert graph.client.transition("r2s_policy", "configure", 60)
        graph.nodes["policy"].proc.kill()
        graph.nodes["policy"].proc.wait()
        graph.start(["policy"])  # the same name, while the killed one is still in the DDS graph
        t = time.monotonic()
        assert graph.client.transition("r2s_policy", "configure", 30)
        assert graph.client.requests_sent == 1, "the first request must reach the live node, not the dead one"
        assert time.monotonic() - t < 30
    finally:
        codes = graph.stop()
    assert codes == {"policy": 0}
