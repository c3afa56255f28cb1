"""Container health check for docker/compose.yaml: healthy once a sensor_msgs/JointState arrives on a topic.

    python docker/healthcheck.py [TOPIC] [TIMEOUT_S]        (defaults: /joint_states, 5)

Exit 0 when a message arrived within the timeout, 1 otherwise. The sim robot is "healthy" when it publishes
joint_states, i.e. it is active: only then may the policy node start, since its activation checks the joint names.
Runs wherever rclpy imports (the ROS 2 PyPI wheels of the training image, or a sourced ROS install).
"""

from __future__ import annotations

import sys
import time


def wait_for_joint_states(topic: str, timeout_s: float) -> bool:
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import JointState

    rclpy.init()
    try:
        node = rclpy.create_node("r2s_healthcheck")
        received = []
        # Best effort subscribes to reliable and best-effort publishers alike.
        node.create_subscription(JointState, topic, received.append, qos_profile_sensor_data)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        node.destroy_node()
        return bool(received)
    finally:
        rclpy.try_shutdown()


def main(argv: list[str]) -> int:
    topic = argv[1] if len(argv) > 1 else "/joint_states"
    timeout_s = float(argv[2]) if len(argv) > 2 else 5.0
    return 0 if wait_for_joint_states(topic, timeout_s) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
