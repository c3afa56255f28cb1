"""``recorder_node``: every step and every episode of a deployment into a rosbag2 MCAP bag (``stack.ros.bag``).

What it records: every topic whose name starts with one of ``topic_prefixes`` (default ``/r2s/``: observations,
proposals, executed commands, authority, intervention masks, safety status, rewards, success flags, episodes,
policy info, e-stop state, teleop, task observations …) plus ``topics`` (default: ``/joint_states``,
``/diagnostics`` and the robot's hardware command topics when ``robot`` is set) — found by graph discovery every
``discovery_period_s``, subscribed with the QoS its publishers offer (reliable only if all are; transient local only
if all are, so latched state is recorded too). The r2s topics (``stack.ros.topics.TYPES``), ``/diagnostics`` and the
robot's command topics are subscribed at activation (reliable), before their publishers exist, so nothing published
early (latched policy info, a first episode, the first commands) is missed. Messages are written as they arrived
(serialized, never decoded), ``log_time`` = arrival time; ``stack.ros.topics`` documents each topic's standard
message type.

Episodes: each ``/r2s/episode`` event (start/end with robot, task, outcome …) is written with the policy version
(the ONNX content hash) and run id added from the latched ``/r2s/policy/info``; an episode still open when
recording stops gets an ``end`` event with outcome ``timeout`` and reason ``recording stopped``.

Files: one bag per activation (``output_dir``; a suffix is added if it exists), rotated into a new MCAP file at
``max_file_size_mb`` or ``max_file_duration_s``. Nothing is lost on shutdown: SIGINT/SIGTERM deactivate the node,
which stops taking messages in its thread, then keeps draining the subscriptions' queues in the caller until they
stay empty for ``drain_s``, and closes the bag (MCAP summary + ``metadata.yaml``).

Run: ``python -m stack.ros.recorder_node --ros-args -p output_dir:=logs/run1 -p robot:=so101``
(console script ``r2s-recorder-node``).
"""

from __future__ import annotations

import importlib
import threading
import time
from datetime import datetime, UTC
from pathlib import Path

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from stack.ros import topics
from stack.ros.bag import BagWriter
from stack.ros.common import SUCCESS, R2sNode, declare_parameters, load_robot, run_node

PARAMS = {
    "output_dir": ("", "bag directory to create (empty: r2s_bag_<UTC time> in the working directory)"),
    "robot": ("", "robot name: its hardware command topics are recorded and it is noted in the bag's custom_data"),
    "task": ("", "task name, noted in the bag's custom_data"),
    "topics": (["/joint_states", topics.DIAGNOSTICS], "topics recorded beside the prefixed ones"),
    "topic_prefixes": (["/r2s/"], "record every topic whose name starts with one of these"),
    "max_file_size_mb": (256.0, "start a new MCAP file at this size (0: never)"),
    "max_file_duration_s": (600.0, "start a new MCAP file after this long (0: never)"),
    "compression": ("zstd", "MCAP chunk compression: none | zstd | lz4"),
    "discovery_period_s": (0.25, "how often the graph is searched for new topics"),
    "queue_depth": (1000, "per-topic receive queue (messages) between takes"),
    "drain_s": (0.3, "at shutdown, drain until the queues stay empty this long"),
}


def _msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(R2sNode):
    def __init__(self):
        super().__init__(topics.RECORDER_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.bag: BagWriter | None = None
        self._tmrs = []
        self.policy_info: dict[str, str] = {}
        self.open_episode: dict[str, str] | None = None

    def on_configure(self, state):
        p = self.p
        wanted = list(p.topics)
        if p.robot:
            try:
                spec = load_robot(p.robot)
            except KeyError as e:
                return self.fail(f"configure: {e}")
            wanted = [spec.joint_states_topic if t == "/joint_states" else t for t in wanted]
            wanted += [spec.command_topic, spec.trajectory_topic]
        self.wanted = list(dict.fromkeys(wanted))
        # Topics whose type is known before they appear (joint_states is left to discovery: its QoS is the robot's).
        self.known = {**topics.TYPES, topics.DIAGNOSTICS: ("diagnostic_msgs/msg/DiagnosticArray", False)}
        if p.robot:
            self.known[spec.command_topic] = ("std_msgs/msg/Float64MultiArray", False)
            self.known[spec.trajectory_topic] = ("trajectory_msgs/msg/JointTrajectory", False)
        self.prefixes = tuple(x for x in p.topic_prefixes if x)
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)  # decodes/encodes the episode events it enriches
        return SUCCESS

    def on_activate(self, state):
        p = self.p
        path = Path(p.output_dir or f"r2s_bag_{datetime.now(UTC):%Y%m%d_%H%M%S}")
        base, k = path, 1
        while path.exists() and any(path.iterdir()):
            k += 1
            path = base.with_name(f"{base.name}_{k}")
        custom = {"recorder": "r2s", "robot": p.robot, "task": p.task}
        self.bag = BagWriter(path, max_bytes=int(p.max_file_size_mb * 1e6), max_duration_s=p.max_file_duration_s,
                             compression="" if p.compression == "none" else p.compression,
                             custom_data={k: v for k, v in custom.items() if v})
        self.subscribed: dict[str, str] = {}
        self.active = True
        for name, (msgtype, latched) in self.known.items():  # subscribed before they appear
            if name in self.wanted or name.startswith(self.prefixes):
                self._subscribe(name, msgtype, reliable=True, latched=latched)
        self._discover()
        self.io.start()
        self._tmrs = [self.create_timer(p.discovery_period_s, self._discover)]
        self.get_logger().info(f"recording to {path}")
        return super().on_activate(state)

    def on_deactivate(self, state):
        for t in self._tmrs:
            self.destroy_timer(t)
        self._tmrs = []
        self.io.stop()
        self._drain()
        self.active = False
        with self._lock:
            if self.open_episode is not None:
                self._write_episode_end()
            if self.policy_info.get("policy_version"):
                self.bag.custom_data["policy_version"] = self.policy_info["policy_version"]
            self.bag.close()
        self.io.clear()
        counts = {t.name: t.count for t in self.bag.topics.values()}
        self.get_logger().info(f"closed {self.bag.path}: {self.bag.message_count} messages in "
                               f"{len(self.bag.files)} file(s); {counts}")
        return super().on_deactivate(state)

    def on_shutdown(self, state):
        return SUCCESS

    # ---- discovery and writing ------------------------------------------------------------------------------------
    def _discover(self) -> None:
        if not self.active:
            return
        for name, types in self.get_topic_names_and_types():
            if name in self.subscribed or not (name in self.wanted or name.startswith(self.prefixes)):
                continue
            if len(types) != 1:
                self.log_throttled(name, f"{name}: several types {types}; not recorded", level="error")
                continue
            pubs = self.get_publishers_info_by_topic(name)
            if not pubs:
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in pubs)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in pubs)
            self._subscribe(name, types[0], reliable, latched)

    def _subscribe(self, name: str, msgtype: str, reliable: bool, latched: bool) -> None:
        try:
            cls = _msg_class(msgtype)
            self.bag.add_topic(name, msgtype)
        except Exception as e:
            self.log_throttled(name, f"{name}: cannot record {msgtype}: {e}", level="error")
            return
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p.queue_depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        self.io.subscribe(cls, name, self._writer_for(name), qos, raw=True)
        self.subscribed[name] = msgtype
        self.get_logger().info(f"recording {name} [{msgtype}]")

    def _writer_for(self, topic: str):
        if topic == topics.EPISODE:
            return self._on_episode
        if topic == topics.POLICY_INFO:
            def on_info(data: bytes) -> None:
                msg = self.store.deserialize_cdr(data, "diagnostic_msgs/msg/DiagnosticArray")
                if msg.status:
                    self.policy_info = {kv.key: kv.value for kv in msg.status[0].values}
                self._write(topic, data)
            return on_info
        return lambda data: self._write(topic, data)

    def _write(self, topic: str, data: bytes) -> None:
        with self._lock:
            self.bag.write(topic, data, time.time_ns())

    def _on_episode(self, data: bytes) -> None:
        """Write the event with the policy version added (re-encoded; the event's own fields are kept as sent)."""
        store = self.store
        msg = store.deserialize_cdr(data, "diagnostic_msgs/msg/DiagnosticArray")
        if msg.status:
            status = msg.status[0]
            have = {kv.key for kv in status.values}
            kv_cls = store.types["diagnostic_msgs/msg/KeyValue"]
            for key in ("policy_version", "run_id"):
                if key not in have and key in self.policy_info:
                    status.values.append(kv_cls(key=key, value=self.policy_info[key]))
            values = {kv.key: kv.value for kv in status.values}
            self.open_episode = values if status.message == "start" else None
            data = bytes(store.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticArray"))
        self._write(topics.EPISODE, data)

    def _write_episode_end(self) -> None:
        """An episode still open when recording stops: record its end (outcome timeout)."""
        s = self.store.types
        values = {**self.open_episode, "outcome": "timeout", "reason": "recording stopped"}
        now = time.time_ns()
        msg = s["diagnostic_msgs/msg/DiagnosticArray"](
            header=s["std_msgs/msg/Header"](stamp=s["builtin_interfaces/msg/Time"](sec=now // 10**9,
                                                                                   nanosec=now % 10**9), frame_id=""),
            status=[s["diagnostic_msgs/msg/DiagnosticStatus"](
                level=0, name="episode", message="end", hardware_id=values.get("robot", ""),
                values=[s["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in values.items()])])
        self.bag.add_topic(topics.EPISODE, "diagnostic_msgs/msg/DiagnosticArray")
        self.bag.write(topics.EPISODE, bytes(self.store.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticArray")),
                       now)
        self.open_episode = None

    def _drain(self) -> None:
        quiet_since = time.monotonic()
        deadline = quiet_since + max(10 * self.p.drain_s, 2.0)
        while time.monotonic() < deadline:
            if self.io.poll():
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since >= self.p.drain_s:
                return
            time.sleep(0.01)


def main(argv: list[str] | None = None) -> int:
    return run_node(RecorderNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
