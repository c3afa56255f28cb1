"""Fixtures of the ROS 2 tests: an isolated DDS domain, an rclpy harness in the test process, small ONNX policies.

Nodes under test run as separate processes (``stack.ros.deploy.Graph``) and talk to the test process over real DDS.
Each test session picks its own ``ROS_DOMAIN_ID`` (1–100, from the pid) and keeps discovery on this host, so test
runs on a shared machine never hear each other.
"""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest

from robots.spec import ObsSegment, obs_layout_to_json

GOAL_TOPIC = "/r2s/test_goal"
P_GAIN = 0.3


def _rclpy_or_skip():
    return pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")


@pytest.fixture(scope="session")
def ros_env():
    """This session's DDS domain, set before any rclpy context exists; children inherit it."""
    os.environ["ROS_DOMAIN_ID"] = str(1 + os.getpid() % 100)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    return os.environ["ROS_DOMAIN_ID"]


class Inbox:
    """Messages of one topic with their arrival times (``time.monotonic()``), filled by the harness's thread."""

    def __init__(self):
        self.items: list[tuple[float, object]] = []

    def __call__(self, msg) -> None:
        self.items.append((time.monotonic(), msg))

    def since(self, t: float) -> list:
        return [m for ts, m in list(self.items) if ts >= t]

    def last(self):
        items = self.items
        return items[-1][1] if items else None

    def wait_for(self, predicate, timeout: float = 10.0, since: float = 0.0):
        """The first message (arriving after ``since``) for which ``predicate`` holds; fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            items = list(self.items)
            for ts, m in items[seen:]:
                if ts >= since and predicate(m):
                    return ts, m
            seen = len(items)
            time.sleep(0.01)
        last = self.last()
        raise AssertionError(f"no matching message within {timeout} s; last: {last}")


class Harness:
    """rclpy in the test process: one node spun by a background thread; publishers, inboxes, service calls."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"r2s_test_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running:
            self.executor.spin_once(timeout_sec=0.05)

    def listen(self, msg_type, topic: str, qos=None) -> Inbox:
        from stack.ros.common import QOS_RELIABLE

        inbox = Inbox()
        self.node.create_subscription(msg_type, topic, inbox, qos or QOS_RELIABLE)
        return inbox

    def publisher(self, msg_type, topic: str, qos=None):
        from stack.ros.common import QOS_RELIABLE

        return self.node.create_publisher(msg_type, topic, qos or QOS_RELIABLE)

    def call(self, srv_type, name: str, request=None, timeout: float = 10.0):
        client = self.node.create_client(srv_type, name)
        try:
            assert client.wait_for_service(timeout_sec=timeout), f"service {name} not available"
            future = client.call_async(request if request is not None else srv_type.Request())
            deadline = time.monotonic() + timeout
            while not future.done():
                assert time.monotonic() < deadline, f"service {name} did not answer within {timeout} s"
                time.sleep(0.01)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.rclpy.try_shutdown()


@pytest.fixture(scope="session")
def ros(ros_env):
    _rclpy_or_skip()
    h = Harness()
    yield h
    h.close()


# ---- policies -----------------------------------------------------------------------------------------------------
def so101_policy(path, weight: np.ndarray, layout: tuple[ObsSegment, ...], **meta) -> str:
    """A linear ONNX policy for the SO-101 (``tests.stack.test_runtime.linear_chunk_model``): action = obs @ W."""
    from robots.so101 import SO101
    from tests.stack.test_runtime import linear_chunk_model

    fields = {**SO101.to_metadata(), "obs_layout": obs_layout_to_json(layout),
              "action_names": json.dumps(list(SO101.joint_names)), **meta}
    return str(linear_chunk_model(path, weight, horizon=1, act_steps=1, **fields))


@pytest.fixture(scope="session")
def p_controller(tmp_path_factory) -> str:
    """target = joint_pos + k·(goal − joint_pos): obs = joint_pos[6] (joint_states) + goal[6] (``GOAL_TOPIC``)."""
    n = 6
    w = np.zeros((1, 2 * n, n), np.float32)
    w[0, :n] = (1.0 - P_GAIN) * np.eye(n)
    w[0, n:] = P_GAIN * np.eye(n)
    layout = (ObsSegment("joint_pos", n, "joint_states.position"), ObsSegment("goal", n, f"topic:{GOAL_TOPIC}"))
    return so101_policy(tmp_path_factory.mktemp("policy") / "p_controller.onnx", w, layout,
                        content_hash="p-controller-v1")
