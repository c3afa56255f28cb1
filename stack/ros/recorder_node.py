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
recording stops gets an ``end`` event with reason ``recording stopped`` and outcome ``timeout`` (none for an episode the
operator marks, ``episode_node``).

Files: one bag per activation (``output_dir``; a suffix is added if it exists), rotated into a new MCAP file at
``max_file_size_mb`` or ``max_file_duration_s``; ``metadata.yaml`` is written at the start, at every rotation and
at the end (``stack.ros.bag``).

Messages are taken in the recorder's own receive thread (not the executor, not ``SubscriptionLoop``: it needs each
message's DDS reception and source times), at most ``_TAKE_BATCH`` per topic per wake-up so one flooded topic cannot
starve the others or the flush; ``log_time`` = reception time, ``publish_time`` = the sender's source time.

What a crash loses: at most ``flush_period_s`` (default 100 ms) of messages — the chunk in memory; everything older
has been handed to the OS and survives a SIGKILL. ``read_bag`` reads the unfinished file back.

Stopping (SIGINT/SIGTERM, or deactivation): the stop time is taken when the signal arrives (a wake-up fd read by a
watcher thread, not when the main thread next runs Python), and from then on only messages received or sent
before it are recorded: messages still in flight get ``drain_s`` to arrive, the queues are emptied of what came
before the stop, and the bag is closed (MCAP summary + ``metadata.yaml``) — all within ``drain_s`` + the close,
well under a second, before the node's lifecycle even notices the signal.

Run: ``python -m stack.ros.recorder_node --ros-args -p output_dir:=logs/run1 -p robot:=so101``
(console script ``r2s-recorder-node``).
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from datetime import datetime, UTC
from pathlib import Path

from rclpy.callback_groups import CallbackGroup
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from stack.ros import topics
from stack.ros.bag import BagWriter
from stack.ros.common import SUCCESS, R2sNode, declare_parameters, load_robot, run_node
from stack.ros.episode_tracker import operator_marked

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
    "flush_period_s": (0.1, "longest a recorded message stays in memory before it is written (what a crash loses)"),
    "drain_s": (0.1, "at a stop, how long messages sent before it may still arrive and be recorded"),
}
_TAKE_BATCH = 500
"""Messages taken from one topic per wake-up of the receive thread (a flood of one topic cannot starve the rest)."""


class _NotForExecutors(CallbackGroup):
    """The recorder's subscriptions and guard: waited on by its receive thread only, never by an executor."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


def _msg_class(msgtype: str):
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


class RecorderNode(R2sNode):
    def __init__(self):
        super().__init__(topics.RECORDER_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        """Guards the bag: written by the receive thread, topics added by discovery, closed by the stop."""
        self._stop_lock = threading.Lock()
        self.bag: BagWriter | None = None
        self._tmrs = []
        self.policy_info: dict[str, str] = {}
        self.open_episode: dict[str, str] | None = None
        self._deferred_start: tuple[bytes, int, int] | None = None
        """An episode start that arrived before the policy's latched info (discovery races the sim's first reset):
        written, with its own times, once the info arrives, or as it came at the next event or the stop."""
        self._group = _NotForExecutors()
        self._guard = self.create_guard_condition(lambda: None, callback_group=self._group)
        self._entries: list[tuple[object, Callable]] = []
        self._entries_version = 0
        self._thread: threading.Thread | None = None
        self._quit = threading.Event()
        self._stop_ns: int | None = None
        self._recording = False
        self.after_stop = 0
        self._watch_stop_signals()

    # ---- the stop signal ------------------------------------------------------------------------------------------
    def _watch_stop_signals(self) -> None:
        """Stop recording the moment SIGINT/SIGTERM arrives. Python runs a signal handler only when the main thread
        next executes bytecode (the executor may be waiting up to its spin timeout), but the C-level handler writes
        the signal number to the wake-up fd at once: a thread reading it takes the stop time then."""
        if threading.current_thread() is not threading.main_thread():
            return  # set_wakeup_fd is main-thread only; deactivation still stops the recording
        r, w = os.pipe()
        os.set_blocking(w, False)
        old = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
        if old != -1:  # someone else's: leave it
            signal.set_wakeup_fd(old)
            os.close(r)
            os.close(w)
            return
        stops = {int(signal.SIGINT), int(signal.SIGTERM)}

        def watch() -> None:
            while True:
                data = os.read(r, 64)
                if not data:
                    return
                if stops & set(data):
                    t = time.time_ns()
                    try:
                        self._stop_recording(t, "signal")
                    except Exception:
                        self.get_logger().error(f"stopping the recording failed:\n{traceback.format_exc()}")

        threading.Thread(target=watch, name="recorder-signals", daemon=True).start()

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        if p.flush_period_s < 0 or p.drain_s < 0:
            return self.fail(f"flush_period_s {p.flush_period_s} / drain_s {p.drain_s}: expected >= 0")
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
                             custom_data={k: v for k, v in custom.items() if v}, flush_period_s=p.flush_period_s)
        self.subscribed: dict[str, str] = {}
        self._stop_ns = None
        self.after_stop = 0
        self._recording = self.active = True
        for name, (msgtype, latched) in self.known.items():  # subscribed before they appear
            if name in self.wanted or name.startswith(self.prefixes):
                self._subscribe(name, msgtype, reliable=True, latched=latched)
        self._discover()
        self._quit.clear()
        self._thread = threading.Thread(target=self._receive, name="recorder-receive", daemon=True)
        self._thread.start()
        self._tmrs = [self.create_timer(p.discovery_period_s, self._discover)]
        # deploy reads the bag's path from this line: the path is its last word
        self.get_logger().info(f"at most {p.flush_period_s * 1e3:.0f} ms in memory; recording to {path}")
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._stop_recording(time.time_ns(), "deactivate")
        for t in self._tmrs:
            self.destroy_timer(t)
        self._tmrs = []
        with self._lock:
            entries, self._entries = self._entries, []
            self._entries_version += 1
        for sub, _ in entries:
            self.destroy_subscription(sub)
        return super().on_deactivate(state)

    def on_shutdown(self, state):
        self._stop_recording(time.time_ns(), "shutdown")  # or wait for the signal watcher to finish closing
        return super().on_shutdown(state)

    def _stop_recording(self, stop_ns: int, why: str) -> None:
        """Record what was received or sent before ``stop_ns``, nothing after, and close the bag (idempotent)."""
        with self._stop_lock:
            if self.bag is None or self.bag.closed:
                return
            self._stop_ns = stop_ns  # from now on the receive thread drops what came after
            self._recording = False
            time.sleep(self.p.drain_s)  # messages sent before the stop, still in flight
            self._quit.set()
            self._guard.trigger()
            if self._thread is not None:
                self._thread.join(timeout=5.0)
                self._thread = None
            with self._lock:
                entries = list(self._entries)
            horizon = stop_ns + int(self.p.drain_s * 1e9)
            for sub, callback in entries:  # what is still queued from before the stop
                self._take(sub, callback, limit=None, until_ns=horizon)
            self._flush_deferred_start()
            with self._lock:
                if self.open_episode is not None:
                    self._write_episode_end(stop_ns)
                if self.policy_info.get("policy_version"):
                    self.bag.custom_data["policy_version"] = self.policy_info["policy_version"]
                # When and why it stopped: nothing received or sent after stopped_at_ns is in the bag.
                self.bag.custom_data.update(stopped_at_ns=str(stop_ns), stop_reason=why)
                self.bag.close()
            counts = {t.name: t.count for t in self.bag.topics.values()}
            self.get_logger().info(
                f"closed {self.bag.path} ({why}) {(time.time_ns() - stop_ns) / 1e6:.0f} ms after the stop: "
                f"{self.bag.message_count} messages in {len(self.bag.files)} file(s), {self.after_stop} after the "
                f"stop not recorded, {self.callback_errors} failed; {counts}")

    # ---- discovery ------------------------------------------------------------------------------------------------
    def _discover(self) -> None:
        if not self._recording:
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
            with self._lock:
                self.bag.add_topic(name, msgtype)
        except Exception as e:
            self.log_throttled(name, f"{name}: cannot record {msgtype}: {e}", level="error")
            return
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=self.p.queue_depth,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        sub = self.create_subscription(cls, name, lambda _msg: None, qos, callback_group=self._group, raw=True)
        with self._lock:
            self._entries.append((sub, self._writer_for(name)))
            self._entries_version += 1
        self._guard.trigger()  # the receive thread waits on it from now on
        self.subscribed[name] = msgtype
        self.get_logger().info(f"recording {name} [{msgtype}]")

    # ---- the receive thread ---------------------------------------------------------------------------------------
    def _receive(self) -> None:
        ctx = self.context
        version, entries, ws = -1, [], None
        held = ExitStack()
        try:
            while not self._quit.is_set() and ctx.ok():
                with self._lock:
                    if self._entries_version != version:
                        version, entries = self._entries_version, list(self._entries)
                        held.close()
                        held = ExitStack()
                        for sub, _ in entries:
                            held.enter_context(sub.handle)
                        held.enter_context(self._guard.handle)
                        ws = _rclpy.WaitSet(len(entries), 1, 0, 0, 0, 0, ctx.handle)
                    due = self.bag.flush_due_in()
                ws.clear_entities()
                for sub, _ in entries:
                    ws.add_subscription(sub.handle)
                ws.add_guard_condition(self._guard.handle)
                ws.wait(-1 if due is None else int(due * 1e9))
                if self._quit.is_set():
                    break
                ready = ws.get_ready_entities("subscription")
                for sub, callback in entries:
                    if sub.handle.pointer in ready:
                        self._take(sub, callback, limit=_TAKE_BATCH)
                with self._lock:
                    if not self.bag.closed:
                        self.bag.maybe_flush()
        finally:
            held.close()

    def _take(self, sub, callback, limit: int | None, until_ns: int | None = None) -> None:
        """Take up to ``limit`` queued messages of ``sub`` and record each (``until_ns``: stop at the first one
        received after it)."""
        n = 0
        while limit is None or n < limit:
            try:
                taken = sub.handle.take_message(sub.msg_type, True)
            except Exception:  # a destroyed handle during shutdown
                return
            if taken is None:
                return
            n += 1
            data, info = taken
            received = info.get("received_timestamp") or time.time_ns()
            source = info.get("source_timestamp") or received
            stop = self._stop_ns
            if stop is not None and received > stop and source > stop:
                self.after_stop += 1
                if until_ns is not None and received > until_ns:
                    return
                continue
            try:
                callback(data, received, source)
            except Exception as e:  # no message, however malformed, ends the recording (counted, warned)
                self.callback_failed(sub.topic_name, e)

    # ---- writing --------------------------------------------------------------------------------------------------
    def _writer_for(self, topic: str):
        if topic == topics.EPISODE:
            return self._on_episode
        if topic == topics.POLICY_INFO:
            def on_info(data: bytes, received: int, source: int) -> None:
                self._write(topic, data, received, source)
                msg = self.store.deserialize_cdr(data, "diagnostic_msgs/msg/DiagnosticArray")
                if msg.status:
                    self.policy_info = {kv.key: kv.value for kv in msg.status[0].values}
                self._flush_deferred_start()
            return on_info
        return lambda data, received, source: self._write(topic, data, received, source)

    def _write(self, topic: str, data: bytes, received: int, source: int) -> None:
        with self._lock:
            if not self.bag.closed:
                self.bag.write(topic, data, received, source)

    def _flush_deferred_start(self) -> None:
        if self._deferred_start is not None:
            data, received, source = self._deferred_start
            self._deferred_start = None
            self._on_episode(data, received, source, may_defer=False)

    def _policy_info_pending(self) -> bool:
        """A policy publishes its info (latched) but it has not reached this node yet."""
        try:
            return not self.policy_info and self.count_publishers(topics.POLICY_INFO) > 0
        except Exception:  # a context shutting down
            return False

    def _on_episode(self, data: bytes, received: int, source: int, may_defer: bool = True) -> None:
        """Write the event with the policy version added (re-encoded; the event's own fields are kept as sent). An
        event that does not decode is recorded as it came. A start that would lack the version only because the
        policy's info is still in transit waits for it (``_deferred_start``)."""
        if may_defer:
            self._flush_deferred_start()
        store = self.store
        try:
            msg = store.deserialize_cdr(data, "diagnostic_msgs/msg/DiagnosticArray")
        except Exception:
            self._write(topics.EPISODE, data, received, source)
            raise
        if msg.status:
            status = msg.status[0]
            have = {kv.key for kv in status.values}
            if may_defer and status.message == "start" and "policy_version" not in have and \
                    self._policy_info_pending():
                self._deferred_start = (data, received, source)
                self.open_episode = {kv.key: kv.value for kv in status.values}
                return
            kv_cls = store.types["diagnostic_msgs/msg/KeyValue"]
            for key in ("policy_version", "run_id"):
                if key not in have and key in self.policy_info:
                    status.values.append(kv_cls(key=key, value=self.policy_info[key]))
            values = {kv.key: kv.value for kv in status.values}
            self.open_episode = values if status.message == "start" else None
            data = bytes(store.serialize_cdr(msg, "diagnostic_msgs/msg/DiagnosticArray"))
        self._write(topics.EPISODE, data, received, source)

    def _write_episode_end(self, now: int) -> None:
        """An episode still open when recording stops: record its end — outcome timeout for the sim's, none for one
        the operator marks (``source`` operator: only they can tell how it went; kept, excluded from outcome
        labels)."""
        s = self.store.types
        values = {**self.open_episode, "reason": "recording stopped"}
        if not operator_marked(values):
            values["outcome"] = "timeout"
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


def main(argv: list[str] | None = None) -> int:
    return run_node(RecorderNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
