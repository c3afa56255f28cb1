"""The recorder as a process: a SIGTERM loses no message sent before it and records none after it, a SIGKILL loses at
most the flush period; rotated files form one readable bag."""

from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from std_msgs.msg import Float64MultiArray, String  # noqa: E402

from stack.ros.deploy import Graph  # noqa: E402

N = 400
MARGIN_S = 0.1
"""Scheduling slack on this shared 2-core machine, added to the timing bounds."""


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


class _Stream:
    """Publishes Float64MultiArray [i] on ``topic`` every ``period_s`` from a thread, noting for each message the
    time just before ``publish`` and the time it returned (``time.time_ns()``, the clock DDS stamps with)."""

    def __init__(self, pub, period_s: float):
        import threading

        self.pub, self.period_s = pub, period_s
        self.sent: list[tuple[int, int]] = []
        self._run = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        i, next_t = 0, time.monotonic()
        while self._run:
            before = time.time_ns()
            self.pub.publish(Float64MultiArray(data=[float(i)]))
            self.sent.append((before, time.time_ns()))
            i += 1
            next_t += self.period_s
            time.sleep(max(0.0, next_t - time.monotonic()))

    def stop(self) -> None:
        self._run = False
        self._thread.join(timeout=5)


def _recorded(bag) -> list[int]:
    from stack.ros.bag import read_bag

    return [int(m.data[0]) for _, m in read_bag(bag).get("/r2s/stream_test", [])]


def _start_streaming_recorder(ros, tmp_path, period_s: float):
    bag = tmp_path / "bag"
    graph = Graph({"recorder": {"output_dir": str(bag), "discovery_period_s": 0.1}}, log_dir=tmp_path)
    graph.start(["recorder"])
    pub = ros.publisher(Float64MultiArray, "/r2s/stream_test")
    graph.up(["recorder"], timeout_s=60)
    _wait_matched(pub)
    return bag, graph, _Stream(pub, period_s)


def test_sigkill_loses_at_most_the_flush_period(ros, tmp_path):
    """A recorder killed with SIGKILL mid-recording: the unfinished bag reads back (with a warning) and holds every
    message sent up to flush_period_s (100 ms, + scheduling slack) before the kill, in order, none missing."""
    from stack.ros.bag import BagRecoveryWarning
    from stack.ros.recorder_node import PARAMS

    bound_s = PARAMS["flush_period_s"][0] + MARGIN_S
    bag, graph, stream = _start_streaming_recorder(ros, tmp_path, period_s=0.002)
    try:
        time.sleep(1.5)
        t_kill = time.time_ns()
        graph.nodes["recorder"].proc.kill()
        graph.nodes["recorder"].proc.wait(timeout=10)
        time.sleep(0.1)
    finally:
        stream.stop()
        graph.stop()
    assert (bag / "metadata.yaml").is_file(), "metadata.yaml must be written when the bag starts"
    with pytest.warns(BagRecoveryWarning, match="unfinished"):
        values = _recorded(bag)
    assert values == list(range(len(values))), "messages missing or reordered in the recovered bag"
    must_have = sum(after < t_kill - bound_s * 1e9 for _, after in stream.sent)
    lost_ms = (t_kill - stream.sent[len(values) - 1][1]) / 1e6 if values else float("inf")
    assert len(values) >= must_have > 100, (
        f"{must_have - len(values)} message(s) sent more than {bound_s * 1e3:.0f} ms before the kill are lost "
        f"(the last recorded one was sent {lost_ms:.0f} ms before it)")


def test_sigterm_stops_within_a_second_with_everything_before_it_and_nothing_after(ros, tmp_path):
    """Messages keep coming through and after the SIGTERM (1 kHz): the bag holds every one whose publish returned
    before the signal and none sent after the recorder's stop time (stopped_at_ns in metadata.yaml), which is the
    moment the signal arrived; the process is gone within a second."""
    import yaml

    bag, graph, stream = _start_streaming_recorder(ros, tmp_path, period_s=0.001)
    proc = graph.nodes["recorder"].proc
    try:
        time.sleep(1.0)
        t_signal = time.time_ns()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        exit_s = (time.time_ns() - t_signal) / 1e9
        time.sleep(0.2)  # still publishing: none of it may land in the bag
    finally:
        stream.stop()
        graph.stop()
    assert rc == 0
    assert exit_s < 1.0, f"the recorder took {exit_s:.2f} s to exit after SIGTERM"
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    stopped_at = int(info["custom_data"]["stopped_at_ns"])
    assert info["custom_data"]["stop_reason"] == "signal"
    assert 0 <= stopped_at - t_signal < MARGIN_S * 1e9, "the stop time is the signal's arrival"
    values = _recorded(bag)  # a closed bag: no recovery warning (pytest's filterwarnings would not hide one)
    before = sum(after < t_signal for _, after in stream.sent)
    assert values[:before] == list(range(before)), "a message sent before the signal is missing"
    late = [i for i in values if stream.sent[i][0] > stopped_at]
    assert not late, f"{len(late)} message(s) sent after the stop were recorded (first: {late[0]})"
    assert len(stream.sent) > len(values) + 100, "the stream went on after the stop"
