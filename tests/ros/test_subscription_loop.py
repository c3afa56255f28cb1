"""The subscription loop and the ticker under a flood, in this process over real DDS: bounded work per wake-up, the
newest message kept, and a ticker that fires on time whatever the input load (issue 11.3: a watchdog sharing the
input thread stalled for 368 ms under a 10 kHz joint_states flood)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402

from stack.ros.common import QOS_RELIABLE, QOS_STATE, SubscriptionLoop, Ticker  # noqa: E402

TOPIC = "/r2s_test/flood"


def test_a_flood_with_slow_callbacks_neither_starves_the_ticker_nor_queues_old_messages(ros):
    node = ros.node
    seen: list[int] = []
    ticks: list[float] = []

    def slow(msg: JointState) -> None:  # 2 ms of work a message: a flood far faster than this can be handled
        seen.append(int(msg.position[0]))
        end = time.perf_counter() + 0.002
        while time.perf_counter() < end:
            pass

    loop = SubscriptionLoop(node, "flood-test")
    loop.subscribe(JointState, TOPIC, slow, QOS_STATE, latest_only=True)
    ticker = Ticker(node, 1.0 / 80.0, lambda: ticks.append(time.monotonic()), "flood-watchdog")
    pub = node.create_publisher(JointState, TOPIC, QOS_RELIABLE)
    loop.start()
    deadline = time.monotonic() + 10
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    sent = [0]

    def flood():
        msg = JointState(name=["j"], position=[0.0])
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            sent[0] += 1
            msg.position = [float(sent[0])]
            pub.publish(msg)

    ticker.start()
    t0 = time.monotonic()
    thread = threading.Thread(target=flood)
    thread.start()
    thread.join()
    elapsed = time.monotonic() - t0
    time.sleep(0.2)
    ticker.stop()
    loop.clear()
    node.destroy_publisher(pub)
    rate = sent[0] / elapsed
    assert rate > 2000, f"the flood reached only {rate:.0f} Hz"
    assert len(seen) < 0.5 * sent[0], "latest-only: most of the flood is skipped, not queued for callbacks"
    assert seen[-1] == sent[0], "the newest message is the one handled"
    window = [t for t in ticks if t0 + 0.1 <= t <= t0 + elapsed]
    gaps = np.diff(window)
    assert len(window) >= 0.7 * 80 * (elapsed - 0.1), f"{len(window)} ticks in {elapsed - 0.1:.1f} s at 80 Hz"
    assert gaps.max() < 0.1, f"the ticker stalled {gaps.max() * 1e3:.0f} ms under the flood"  # (before: > 1 s)


def test_node_base_tracks_its_entities_and_no_callback_ends_it(ros):
    from rclpy.executors import SingleThreadedExecutor
    from std_msgs.msg import String
    from std_srvs.srv import Trigger

    from stack.ros.common import BadMessage, R2sNode

    calls = []

    def on_msg(msg: String) -> None:
        calls.append(msg.data)
        if msg.data == "bad":
            raise BadMessage("/r2s_test/base: a malformed message")
        if msg.data == "bug":
            raise IndexError("list index out of range")

    node = R2sNode("r2s_test_base")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        before = (len(list(node.publishers)), len(list(node.subscriptions)), len(list(node.services)))
        node.add_publisher(String, "/r2s_test/base_out", QOS_RELIABLE)
        node.add_publisher(String, "/r2s_test/base_latched", QOS_RELIABLE, lifecycle=False)
        node.add_subscription(String, "/r2s_test/base", on_msg, QOS_RELIABLE)
        node.add_service(Trigger, "/r2s_test/base_srv", lambda req, resp: resp)
        node.add_timer(10.0, lambda: None)
        assert len(list(node.timers)) == 1
        pub = ros.publisher(String, "/r2s_test/base")
        deadline = time.monotonic() + 10
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        for data in ("bad", "bug", "good"):
            pub.publish(String(data=data))
        deadline = time.monotonic() + 10
        while len(calls) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)  # an escaping exception would raise here
        assert calls == ["bad", "bug", "good"]
        assert node.dropped == {"/r2s_test/base": 1} and node.callback_errors == 1
        assert node.health_values()["dropped:/r2s_test/base"] == "1"
        node.release("deactivate")
        assert len(list(node.timers)) == 0
        node.release("cleanup")
        after = (len(list(node.publishers)), len(list(node.subscriptions)), len(list(node.services)))
        assert after == before
    finally:
        executor.remove_node(node)
        node.destroy_node()
