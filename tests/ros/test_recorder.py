"""The recorder as a process: a SIGTERM loses no message sent before it; rotated files form one readable bag."""

from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from stack.ros.deploy import Graph  # noqa: E402

N = 400


def _wait_matched(pub, timeout=20.0):
    deadline = time.monotonic() + timeout
    while pub.get_subscription_count() == 0:
        assert time.monotonic() < deadline, "the recorder never subscribed"
        time.sleep(0.05)


def test_sigterm_loses_no_message_and_rotated_files_read_as_one_bag(ros, tmp_path):
    bag = tmp_path / "bag"
    graph = Graph({"recorder": {"output_dir": str(bag), "topics": ["/count_test/extra"],
                                "max_file_size_mb": 0.01, "discovery_period_s": 0.1}}, log_dir=tmp_path)
    graph.start(["recorder"])
    counted = ros.publisher(Float64MultiArray, "/r2s/count_test")
    extra = ros.publisher(String, "/count_test/extra")
    ignored = ros.publisher(String, "/not_recorded")
    try:
        graph.up(["recorder"], timeout_s=60)
        _wait_matched(counted)
        _wait_matched(extra)
        for i in range(N):  # a burst: faster than one message a millisecond
            counted.publish(Float64MultiArray(data=[float(i)] * 8))
            if i % 10 == 0:
                extra.publish(String(data=str(i)))
                ignored.publish(String(data="x"))
        graph.nodes["recorder"].proc.send_signal(signal.SIGTERM)  # right after the last publish
        assert graph.nodes["recorder"].proc.wait(timeout=30) == 0
    finally:
        graph.stop()

    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    assert (bag / "metadata.yaml").is_file()
    assert len(list(bag.glob("*.mcap"))) > 1, "10 kB files: the bag must have rotated"
    store = get_typestore(Stores.ROS2_KILTED)
    with Reader(bag) as reader:  # reads metadata.yaml and every file it lists
        topics = {c.topic for c in reader.connections}
        assert "/r2s/count_test" in topics and "/count_test/extra" in topics and "/not_recorded" not in topics
        values = [store.deserialize_cdr(raw, c.msgtype).data[0] for c, _, raw in reader.messages()
                  if c.topic == "/r2s/count_test"]
        extras = [c for c, _, _ in reader.messages() if c.topic == "/count_test/extra"]
    assert values == [float(i) for i in range(N)], f"{N - len(values)} message(s) lost or reordered"
    assert len(extras) == N // 10
