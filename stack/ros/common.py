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

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.callback_groups import CallbackGroup
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions

from robots.spec import RobotSpec
from stack.ros.messages import BadMessage, JointMatcher, JointNameError, set_stamp, stamp_ns

__all__ = [  # the messages' names are re-exported: nodes and tests import them from here
    "FAILURE", "QOS_LATCHED", "QOS_RELIABLE", "QOS_STATE", "SUCCESS", "BadMessage", "JointMatcher", "JointNameError",
    "R2sNode", "SubscriptionLoop", "Ticker", "declare_parameters", "load_robot", "run_node", "set_stamp",
    "stamp_ns", "status_array",
]

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE

QOS_STATE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
"""Subscribing to sensor streams (joint_states, task observations): matches reliable and best-effort publishers."""
QOS_RELIABLE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.RELIABLE)
"""Commands and per-step records (what ros2_control's controllers use: the system default, reliable)."""
QOS_LATCHED = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""State a late joiner must still receive (policy info, e-stop state)."""


# ---- robots -------------------------------------------------------------------------------------------------------
def load_robot(name: str, control_rate_hz: float = 0.0) -> RobotSpec:
    """The registered robot ``name``; ``control_rate_hz`` > 0 replaces the spec's rate (a benchmark exports its
    policy for the rate under test; the runtime still refuses a model whose rate differs from the one used)."""
    import robots

    spec = robots.get_robot(name)
    if control_rate_hz and control_rate_hz > 0 and control_rate_hz != spec.control_rate_hz:
        spec = replace(spec, control_rate_hz=float(control_rate_hz))
    return spec


# ---- the subscription loop and the ticker -------------------------------------------------------------------------
TAKE_BATCH = 64
"""Messages taken from one subscription per wake-up: a flood on one topic cannot starve the others."""


class _OutsideExecutors(CallbackGroup):
    """A callback group no executor will run: its entities belong to a ``SubscriptionLoop``."""

    def can_execute(self, entity) -> bool:
        return False

    def beginning_execution(self, entity) -> bool:
        return False

    def ending_execution(self, entity) -> None:
        pass


def _report(node, topic: str, exc: Exception) -> None:
    """Hand a callback's exception to the node (``R2sNode.callback_failed``), or log it; never raises, so a
    failure while reporting cannot end the thread that called it."""
    try:
        handler = getattr(node, "callback_failed", None)
        if handler is not None:
            handler(topic, exc)
        else:
            node.get_logger().error(f"callback for {topic} failed: {type(exc).__name__}: {exc}")
    except Exception as e:
        print(f"[r2s] callback for {topic} failed ({type(exc).__name__}: {exc}); reporting it failed too: {e!r}",
              file=sys.stderr, flush=True)


class SubscriptionLoop:
    """Takes the messages of a few subscriptions in a dedicated thread, outside the node's executor.

    Callbacks get the message (bytes for a raw subscription) and run in the loop's thread, one at a time, in arrival
    order per subscription. Work per wake-up is bounded: at most ``TAKE_BATCH`` messages per subscription, and a
    ``latest_only`` subscription takes what is queued as bytes and deserializes and dispatches only the newest — a
    10 kHz flood costs a copy per message, not a callback. An exception in a callback goes to the node
    (``R2sNode.callback_failed``: counted, logged throttled) and the loop goes on. ``clear`` stops the thread and
    destroys the subscriptions.
    """

    def __init__(self, node, name: str = "io"):
        self._node = node
        self._name = name
        self._group = _OutsideExecutors()
        self._entries: list[tuple[Any, Callable, bool]] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._guard = node.create_guard_condition(lambda: None, callback_group=self._group)

    def subscribe(self, msg_type, topic: str, callback: Callable, qos: QoSProfile, raw: bool = False,
                  latest_only: bool = False):
        """Add a subscription (a running loop restarts to include it; nothing queued is lost). ``latest_only``:
        dispatch only the newest of the messages waiting at each wake-up (state streams, where older is useless)."""
        running = self._thread is not None
        self.stop()
        sub = self._node.create_subscription(msg_type, topic, lambda _msg: None, qos,
                                             callback_group=self._group, raw=raw)
        self._entries.append((sub, callback, latest_only))
        if running:
            self.start()
        return sub

    @property
    def subscriptions(self) -> list:
        return [sub for sub, _, _ in self._entries]

    def start(self) -> None:
        if self._thread is not None or not self._entries:
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
        for sub, _, _ in self._entries:
            self._node.destroy_subscription(sub)
        self._entries = []

    def poll(self) -> int:
        """Take and dispatch whatever is waiting now, in the caller's thread (the loop must be stopped); returns the
        number of messages taken."""
        n = 0
        for sub, callback, latest_only in self._entries:
            n += self._take(sub, callback, latest_only, limit=None)
        return n

    def _take(self, sub, callback, latest_only: bool, limit: int | None = TAKE_BATCH) -> int:
        n = 0
        newest = None
        while limit is None or n < limit:
            try:
                taken = sub.handle.take_message(sub.msg_type, sub.raw or latest_only)
            except Exception as e:  # a destroyed handle during shutdown, or a sample that does not deserialize
                if not self._stop.is_set():
                    _report(self._node, sub.topic_name, e)
                break
            if taken is None:
                break
            n += 1
            if latest_only:
                newest = taken[0]
                continue
            self._dispatch(sub, callback, taken[0])
        if newest is not None:
            try:
                msg = newest if sub.raw else deserialize_message(newest, sub.msg_type)
            except Exception as e:
                _report(self._node, sub.topic_name, e)
                return n
            self._dispatch(sub, callback, msg)
        return n

    def _dispatch(self, sub, callback, msg) -> None:
        try:
            callback(msg)
        except Exception as e:
            _report(self._node, sub.topic_name, e)

    def _run(self) -> None:
        ctx = self._node.context
        entries = list(self._entries)
        ws = _rclpy.WaitSet(len(entries), 1, 0, 0, 0, 0, ctx.handle)
        with ExitStack() as stack:
            for sub, _, _ in entries:
                stack.enter_context(sub.handle)
            stack.enter_context(self._guard.handle)
            while not self._stop.is_set() and ctx.ok():
                try:
                    ws.clear_entities()
                    for sub, _, _ in entries:
                        ws.add_subscription(sub.handle)
                    ws.add_guard_condition(self._guard.handle)
                    ws.wait(-1)
                    if self._stop.is_set():
                        break
                    ready = ws.get_ready_entities("subscription")
                    for sub, callback, latest_only in entries:
                        if sub.handle.pointer in ready:
                            self._take(sub, callback, latest_only)
                except Exception as e:  # nothing may end this thread while the node runs
                    if self._stop.is_set() or not ctx.ok():
                        break
                    _report(self._node, f"{self._name} loop", e)
                    time.sleep(0.001)


class Ticker:
    """Calls ``callback`` every ``period_s`` in its own thread — a watchdog that fires whatever the input load, since
    no subscription shares its thread. An exception goes to the node like a callback's; the ticker goes on. After a
    stall it resumes at the period (no burst of catch-up ticks)."""

    def __init__(self, node, period_s: float, callback: Callable[[], None], name: str = "tick"):
        self._node, self.period_s, self._callback, self._name = node, float(period_s), callback, name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"{self._node.get_name()}-{self._name}",
                                            daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=5.0)
            self._thread = None

    def _run(self) -> None:
        period = self.period_s
        next_tick = time.monotonic() + period
        while not self._stop.wait(max(0.0, next_tick - time.monotonic())):
            try:
                self._callback()
            except Exception as e:
                _report(self._node, self._name, e)
            next_tick += period
            now = time.monotonic()
            if next_tick < now:
                next_tick = now + period


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
    """A lifecycle node with a ``SubscriptionLoop``, entity bookkeeping, message-drop accounting and a throttled
    logger for the hot path.

    Entities made with ``add_publisher`` / ``add_subscription`` / ``add_service`` (destroyed at cleanup) and
    ``add_timer`` (destroyed at deactivation) are tracked, so a subclass's transitions only create what it needs;
    ``on_deactivate`` / ``on_cleanup`` / ``on_shutdown`` here destroy them (subclasses call ``super()``).

    Nothing a message does may end the node: a callback's exception (in the executor, the subscription loop or a
    ticker) goes to ``callback_failed`` — a ``BadMessage`` is a dropped message, counted per topic (``dropped``,
    in the nodes' diagnostics) and warned about (throttled), anything else a callback error, logged with its
    traceback (throttled) — and the node goes on. A transition callback's exception, which rclpy would swallow
    silently, is logged with its traceback before the transition fails. At process shutdown an active node is
    deactivated, then shut down (``run_node``); if that fails, ``last_words`` still runs.
    """

    def __init__(self, name: str, **kwargs):
        super().__init__(name, **kwargs)
        self.declare_parameter("autostart", False, ParameterDescriptor(
            description="configure and activate at start-up (for ros2 run / a launch file without lifecycle events)"))
        self.io = SubscriptionLoop(self)
        self.active = False
        self._sim_time = bool(self.get_parameter("use_sim_time").value)
        self._throttle: dict[str, float] = {}
        self._entities: dict[str, list[tuple[str, Any]]] = {"cleanup": [], "deactivate": []}
        self.dropped: dict[str, int] = {}
        """Messages refused where they arrived, per topic."""
        self.callback_errors = 0
        # rclpy turns an exception in a transition callback into a failed transition without a word: say why.
        for state_id, callback in list(self._callbacks.items()):
            self._callbacks[state_id] = self._logged_transition(callback)

    # ---- entities -------------------------------------------------------------------------------------------------
    def _track(self, kind: str, entity, until: str):
        self._entities[until].append((kind, entity))
        return entity

    def add_publisher(self, msg_type, topic: str, qos, lifecycle: bool = True):
        """A publisher, destroyed at cleanup; ``lifecycle``: it publishes only while the node is active."""
        if lifecycle:
            return self._track("lifecycle_publisher", self.create_lifecycle_publisher(msg_type, topic, qos), "cleanup")
        return self._track("publisher", self.create_publisher(msg_type, topic, qos), "cleanup")

    def add_subscription(self, msg_type, topic: str, callback: Callable, qos):
        """An executor subscription, destroyed at cleanup; its callback's exceptions go to ``callback_failed``."""
        def guarded(msg):
            try:
                callback(msg)
            except Exception as e:
                self.callback_failed(topic, e)

        return self._track("subscription", self.create_subscription(msg_type, topic, guarded, qos), "cleanup")

    def add_service(self, srv_type, name: str, callback: Callable):
        """A service, destroyed at cleanup; an exception in its callback is logged and answered with the default
        response (``success`` False for a Trigger), never left unanswered."""
        def guarded(request, response):
            try:
                return callback(request, response)
            except Exception as e:
                self.callback_failed(name, e)
                if hasattr(response, "message"):
                    response.message = f"{type(e).__name__}: {e}"
                return response

        return self._track("service", self.create_service(srv_type, name, guarded), "cleanup")

    def add_timer(self, period_s: float, callback: Callable):
        """An executor timer, destroyed at deactivation."""
        def guarded():
            try:
                callback()
            except Exception as e:
                self.callback_failed("timer", e)

        return self._track("timer", self.create_timer(period_s, guarded), "deactivate")

    def release(self, until: str) -> None:
        """Destroy the tracked entities of one lifetime (``deactivate`` or ``cleanup``), newest first."""
        entities, self._entities[until] = self._entities[until], []
        for kind, entity in reversed(entities):
            try:
                getattr(self, f"destroy_{kind}")(entity)
            except Exception as e:  # already gone with the node
                self.get_logger().debug(f"destroy_{kind}: {e}")

    # ---- failures -------------------------------------------------------------------------------------------------
    def callback_failed(self, topic: str, exc: Exception) -> None:
        """A callback raised: a ``BadMessage`` is a dropped message, anything else a callback error. Never raises."""
        try:
            if isinstance(exc, BadMessage):
                self.drop(topic, str(exc))
                return
            self.callback_errors += 1
            self.log_throttled(f"error:{topic}", f"callback for {topic} failed ({self.callback_errors} so far): "
                               f"{type(exc).__name__}: {exc}\n{''.join(traceback.format_exception(exc))}",
                               level="error")
        except Exception as e:  # a logging failure must not end the thread that reports
            print(f"[r2s] callback for {topic} failed ({type(exc).__name__}: {exc}); logging it failed: {e!r}",
                  file=sys.stderr, flush=True)

    def drop(self, topic: str, reason: str) -> None:
        """Count a message refused where it arrived and warn (throttled per topic)."""
        n = self.dropped.get(topic, 0) + 1
        self.dropped[topic] = n
        self.log_throttled(f"drop:{topic}", f"dropped a message on {topic} ({n} so far): {reason}")

    def health_values(self) -> dict[str, str]:
        """Diagnostics values every node publishes: ``dropped`` (total), ``dropped:<topic>`` and
        ``callback_errors``."""
        values = {"dropped": str(sum(self.dropped.values())), "callback_errors": str(self.callback_errors)}
        values.update({f"dropped:{t}": str(n) for t, n in sorted(self.dropped.items())})
        return values

    def _logged_transition(self, callback):
        def transition(state):
            try:
                return callback(state)
            except Exception as e:
                self.get_logger().error(f"{callback.__name__} failed: {type(e).__name__}: {e}\n"
                                        f"{''.join(traceback.format_exception(e))}")
                raise
        transition.__name__ = callback.__name__
        return transition

    def last_words(self, reason: str) -> None:
        """Called when the node leaves ``active`` abnormally (a failed deactivation or transition): a subclass
        makes its outputs safe here (the safety node sends a hold)."""

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_activate(self, state):
        # Objects alive now (models, messages, buffers) leave the garbage collector's generations, so its pauses in
        # the control loop stay short.
        gc.collect()
        gc.freeze()
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.active = False
        self.release("deactivate")
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.io.clear()
        self.release("cleanup")
        return SUCCESS

    def on_shutdown(self, state):
        self.io.clear()
        self.release("deactivate")
        self.release("cleanup")
        return SUCCESS

    def on_error(self, state):
        """A transition raised: make the outputs safe, drop what was created, and return to unconfigured."""
        try:
            if self.active:
                self.last_words("error")
        finally:
            self.active = False
            self.io.clear()
            self.release("deactivate")
            self.release("cleanup")
        return SUCCESS

    # ---- helpers --------------------------------------------------------------------------------------------------
    def log_throttled(self, key: str, text: str, period_s: float = 2.0, level: str = "warning") -> None:
        now = time.monotonic()
        if now - self._throttle.get(key, -1e9) >= period_s:
            self._throttle[key] = now
            logger = self.get_logger()  # one call site per severity: rclpy refuses a site that changes it
            if level == "error":
                logger.error(text)
            elif level == "info":
                logger.info(text)
            else:
                logger.warning(text)

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
    recorder closes its bag. An exception out of the executor (a callback, a sample that does not deserialize) is
    logged and the loop goes on: no message ends a node."""
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
            try:
                executor.spin_once(timeout_sec=0.25)  # the timeout only bounds how late a signal is noticed
            except KeyboardInterrupt:
                break
            except Exception as e:  # a message that does not deserialize, an rclpy error: the node stays up
                if not rclpy.ok():
                    break
                node.callback_failed("executor", e)
    finally:
        try:
            if node.active and node.trigger_deactivate() != SUCCESS:
                node.last_words("deactivation failed")
            node.trigger_shutdown()
        except Exception:
            traceback.print_exc()
            node.last_words("shutdown failed")
        node.io.clear()
        executor.remove_node(node)
        node.destroy_node()
        rclpy.try_shutdown()
    return rc
