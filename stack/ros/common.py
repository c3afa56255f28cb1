"""What every r2s node shares: robot lookup, QoS, stamps, joint matching by name, the subscription loop, parameters
and the process entry point (signals, spin, clean shutdown).

Latency: rclpy's executor rebuilds its wait set from every entity of the node on each wake-up (a lifecycle node has
a dozen services), which costs about a millisecond per message on this class of machine. The few latency-critical
subscriptions (joint_states into the policy, proposals into the safety node, commands into the sim robot, everything
the recorder takes) therefore run in a ``SubscriptionLoop``: a thread waiting on just those subscriptions. Their
callbacks run in that thread, beside the executor's (services, timers, slow topics) in the main thread, so a node
guards the state both touch with a lock.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.callback_groups import CallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions

from robots.spec import RobotSpec

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

QOS_STATE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
"""Subscribing to sensor streams (joint_states, task observations): matches reliable and best-effort publishers."""
QOS_RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""Commands and per-step records (what ros2_control's controllers use: the system default, reliable)."""
QOS_LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""State a late joiner must still receive (policy info, e-stop state)."""


# ---- robots, stamps, joints ---------------------------------------------------------------------------------------
def load_robot(name: str, control_rate_hz: float = 0.0) -> RobotSpec:
    """The registered robot ``name``; ``control_rate_hz`` > 0 replaces the spec's rate (a benchmark exports its
    policy for the rate under test; the runtime still refuses a model whose rate differs from the one used)."""
    import robots

    spec = robots.get_robot(name)
    if control_rate_hz and control_rate_hz > 0 and control_rate_hz != spec.control_rate_hz:
        spec = replace(spec, control_rate_hz=float(control_rate_hz))
    return spec


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def set_stamp(stamp, ns: int) -> None:
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)


class JointNameError(ValueError):
    """A JointState does not name the joints the robot spec expects; the message lists missing and extra names."""

    def __init__(self, missing: list[str], extra: list[str], expected: tuple[str, ...], topic: str = "joint_states"):
        self.missing, self.extra = missing, extra
        super().__init__(
            f"{topic}: joint names do not match the robot: missing {missing}, extra {extra} "
            f"(expected {list(expected)}; joints are matched by name, never by order)"
        )


class JointMatcher:
    """Reads JointState arrays in the robot's joint order, matching by name (a message's own order is not trusted).

    The index is cached per distinct name list, so the hot path is one list comparison and one fancy index.
    """

    def __init__(self, joint_names: tuple[str, ...], topic: str = "joint_states", strict: bool = False):
        self.joint_names = tuple(joint_names)
        self.topic = topic
        self.strict = strict
        """Refuse extra names too (by default a message may carry joints the robot spec does not list)."""
        self._names: list[str] | None = None
        self._index: np.ndarray | None = None

    def check(self, names) -> tuple[list[str], list[str]]:
        """(missing, extra) joint names of a message."""
        names = list(names)
        have = set(names)
        missing = [n for n in self.joint_names if n not in have]
        extra = [n for n in names if n not in set(self.joint_names)]
        return missing, extra

    def index(self, names) -> np.ndarray:
        if self._names is not None and names == self._names:
            return self._index
        names = list(names)
        missing, extra = self.check(names)
        if missing or (self.strict and extra):
            raise JointNameError(missing, extra, self.joint_names, self.topic)
        self._index = np.array([names.index(n) for n in self.joint_names], dtype=np.intp)
        self._names = names
        return self._index

    def read(self, msg, field: str = "position") -> np.ndarray:
        """``msg.<field>`` in spec order (float64); ``JointNameError`` for missing names, ``ValueError`` when the
        field does not have one value per name."""
        idx = self.index(msg.name)
        values = np.asarray(getattr(msg, field), dtype=np.float64)
        if values.shape[0] != len(msg.name):
            raise ValueError(f"{self.topic}: {field} has {values.shape[0]} values for {len(msg.name)} names")
        return values[idx]


# ---- the subscription loop ----------------------------------------------------------------------------------------
class _OutsideExecutors(CallbackGroup):
    """A callback group no executor will run: its entities belong to a ``SubscriptionLoop``."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


class SubscriptionLoop:
    """Takes the messages of a few subscriptions in a dedicated thread, outside the node's executor.

    ``clear`` stops the thread and destroys the subscriptions. Callbacks get the
    message (bytes for a raw subscription) and run in the loop's thread, one at a time, in arrival order per
    subscription. An exception in a callback is logged (the first few, then every 100th) and the loop goes on.
    """

    def __init__(self, node, name: str = "io"):
        self._node = node
        self._name = name
        self._group = _OutsideExecutors()
        self._entries: list[tuple[Any, Callable]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = node.create_guard_condition(lambda: None, callback_group=self._group)
        self._tick: tuple[float, Callable[[], None]] | None = None
        self.callback_errors = 0

    def every(self, period_s: float | None, callback: Callable[[], None] | None = None) -> None:
        """Also call ``callback`` every ``period_s`` in the loop's thread (None: no more); a watchdog placed here
        costs no executor wake-ups and never waits behind the executor's callbacks."""
        running = self._thread is not None
        self.stop()
        self._tick = (period_s, callback) if period_s else None
        if running:
            self.start()

    def subscribe(self, msg_type, topic: str, callback: Callable, qos: QoSProfile, raw: bool = False):
        """Add a subscription (a running loop restarts to include it; nothing queued is lost)."""
        running = self._thread is not None
        self.stop()
        sub = self._node.create_subscription(msg_type, topic, lambda _msg: None, qos,
                                             callback_group=self._group, raw=raw)
        self._entries.append((sub, callback))
        if running:
            self.start()
        return sub

    @property
    def subscriptions(self) -> list:
        return [sub for sub, _ in self._entries]

    def start(self) -> None:
        if self._thread is not None or not (self._entries or self._tick):
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"{self._node.get_name()}-{self._name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._guard.trigger()
        self._thread.join(timeout=5.0)
        self._thread = None

    def clear(self) -> None:
        self.stop()
        for sub, _ in self._entries:
            self._node.destroy_subscription(sub)
        self._entries = []

    def poll(self) -> int:
        """Take and dispatch whatever is waiting now, in the caller's thread (the loop must be stopped); returns the
        number of messages taken. The recorder drains its queues with it at shutdown."""
        n = 0
        for sub, callback in self._entries:
            n += self._take_all(sub, callback)
        return n

    def _take_all(self, sub, callback) -> int:
        n = 0
        while True:
            try:
                taken = sub.handle.take_message(sub.msg_type, sub.raw)
            except Exception:  # a destroyed handle during shutdown
                return n
            if taken is None:
                return n
            n += 1
            try:
                callback(taken[0])
            except Exception:
                self.callback_errors += 1
                if self.callback_errors <= 5 or self.callback_errors % 100 == 0:
                    self._node.get_logger().error(
                        f"callback for {sub.topic_name} failed ({self.callback_errors} so far):\n"
                        f"{traceback.format_exc()}")

    def _run(self) -> None:
        ctx = self._node.context
        entries = list(self._entries)
        period, tick = self._tick if self._tick else (None, None)
        next_tick = time.monotonic() + period if period else None
        ws = _rclpy.WaitSet(len(entries), 1, 0, 0, 0, 0, ctx.handle)
        with ExitStack() as stack:
            for sub, _ in entries:
                stack.enter_context(sub.handle)
            stack.enter_context(self._guard.handle)
            while not self._stop.is_set() and ctx.ok():
                ws.clear_entities()
                for sub, _ in entries:
                    ws.add_subscription(sub.handle)
                ws.add_guard_condition(self._guard.handle)
                ws.wait(-1 if next_tick is None else max(0, int((next_tick - time.monotonic()) * 1e9)))
                if self._stop.is_set():
                    break
                ready = ws.get_ready_entities("subscription")
                for sub, callback in entries:
                    if sub.handle.pointer in ready:
                        self._take_all(sub, callback)
                if next_tick is not None and time.monotonic() >= next_tick:
                    next_tick += period
                    if next_tick < time.monotonic():  # fell behind (a stall): no burst of catch-up ticks
                        next_tick = time.monotonic() + period
                    try:
                        tick()
                    except Exception:
                        self.callback_errors += 1
                        self._node.get_logger().error(f"periodic callback failed:\n{traceback.format_exc()}")


# ---- parameters ---------------------------------------------------------------------------------------------------
def declare_parameters(node, params: dict[str, tuple[Any, str]]) -> SimpleNamespace:
    """Declare ``{name: (default, description)}`` and return their values (YAML / ``-p`` overrides applied).
    An empty list default declares a string array."""
    values = {}
    for name, (default, description) in params.items():
        desc = ParameterDescriptor(description=description)
        if isinstance(default, list) and not default:
            desc.type = ParameterType.PARAMETER_STRING_ARRAY
        node.declare_parameter(name, default, desc)
        values[name] = node.get_parameter(name).value
    return SimpleNamespace(**values)


# ---- the lifecycle node base and the process entry point ----------------------------------------------------------
def status_array(stamp_ns: int, name: str, message: str, hardware_id: str, values: dict[str, str],
                 level: bytes | None = None) -> DiagnosticArray:
    """One ``DiagnosticStatus`` (level OK unless given) in a stamped ``DiagnosticArray``: the form of every
    diagnostics, policy-info and episode message of the r2s nodes."""
    arr = DiagnosticArray()
    set_stamp(arr.header.stamp, stamp_ns)
    arr.status = [DiagnosticStatus(level=DiagnosticStatus.OK if level is None else level, name=name, message=message,
                                   hardware_id=hardware_id,
                                   values=[KeyValue(key=k, value=v) for k, v in values.items()])]
    return arr


class R2sNode(LifecycleNode):
    """A lifecycle node with a ``SubscriptionLoop`` and a throttled logger for the hot path.

    Subclasses implement ``on_configure``/``on_activate``/…; at process shutdown an active node is deactivated,
    then shut down (``run_node``)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("autostart", False, ParameterDescriptor(
            description="configure and activate at start-up (for ros2 run / a launch file without lifecycle events)"))
        self.io = SubscriptionLoop(self)
        self.active = False
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self._throttle: dict[str, float] = {}

    def on_activate(self, state):
        # Objects alive now (models, messages, buffers) leave the garbage collector's generations, so its pauses in
        # the control loop stay short.
        gc.collect()
        gc.freeze()
        return super().on_activate(state)

    def log_throttled(self, key: str, text: str, period_s: float = 2.0, level: str = "warn") -> None:
        now = time.monotonic()
        if now - self._throttle.get(key, -1e9) >= period_s:
            self._throttle[key] = now
            getattr(self.get_logger(), level)(text)

    def fail(self, text: str) -> TransitionCallbackReturn:
        """Log why a transition is refused and refuse it."""
        self.get_logger().error(text)
        return FAILURE

    def now_ns(self) -> int:
        """The node's clock (ROS time) in ns. Without sim time that is the system clock, read directly: rclpy's
        ``get_clock().now()`` costs ~30 µs, and the hot path reads the time on every message."""
        if self._sim_time:
            return self.get_clock().now().nanoseconds
        return time.time_ns()


RT_PRIORITY_ENV = "R2S_RT_PRIORITY"


def set_realtime_priority() -> str | None:
    """``$R2S_RT_PRIORITY`` = N > 0: run this process under SCHED_FIFO priority N (before rclpy starts its threads,
    so DDS's receive threads and the nodes' loops inherit it) — what a robot's control processes usually get.
    Returns a warning if it could not be set (no CAP_SYS_NICE), else None."""
    prio = int(os.environ.get(RT_PRIORITY_ENV, "0") or 0)
    if prio <= 0:
        return None
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(prio))
    except (OSError, AttributeError) as e:
        return f"{RT_PRIORITY_ENV}={prio}: could not set SCHED_FIFO ({e}); running with normal priority"
    return None


def node_help(node_cls: type[R2sNode]) -> str:
    """Usage of a node's console script: how to pass parameters, and every parameter with its default."""
    params = getattr(sys.modules[node_cls.__module__], "PARAMS", {})
    doc = (sys.modules[node_cls.__module__].__doc__ or "").strip().splitlines()
    lines = [doc[0] if doc else node_cls.__name__, "",
             "usage: <script> [--ros-args -p NAME:=VALUE ... --params-file FILE.yaml]",
             "A lifecycle node: configure and activate it through its lifecycle services (r2s deploy does), or set "
             "autostart:=true.", "", "parameters:"]
    for name, (default, text) in params.items():
        lines.append(f"  {name} (default {default!r}): {text}")
    return "\n".join(lines)


def run_node(node_cls: type[R2sNode], argv: list[str] | None = None) -> int:
    """Process entry point of a node: SIGINT/SIGTERM end the spin loop, then the node is deactivated (if active) and
    shut down (lifecycle ``shutdown`` transition), so a node never dies half-way through a callback and the
    recorder closes its bag."""
    args = list(sys.argv if argv is None else argv)
    own = args[1:args.index("--ros-args")] if "--ros-args" in args else args[1:]
    if "-h" in own or "--help" in own:
        print(node_help(node_cls))
        return 0
    rt_warning = set_realtime_priority()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node = node_cls()
    if rt_warning:
        node.get_logger().warn(rt_warning)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    rc = 0
    try:
        if node.get_parameter("autostart").value:
            if node.trigger_configure() != SUCCESS or node.trigger_activate() != SUCCESS:
                node.get_logger().error("autostart: configure/activate failed (see above)")
                rc = 1
        while rc == 0 and not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.25)  # the timeout only bounds how late a signal is noticed
    except KeyboardInterrupt:
        pass
    finally:
        try:
            if node.active:
                node.trigger_deactivate()
            node.trigger_shutdown()
        except Exception:
            traceback.print_exc()
        node.io.clear()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return rc
