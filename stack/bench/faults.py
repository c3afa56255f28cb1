"""``r2s bench faults [--quick]``: fault injection against the real policy and safety nodes over DDS.

``run(quick=False, cases=None)`` returns a dict (the CLI prints it as JSON, last line). The nodes under test are the
real ``r2s-policy-node`` and ``r2s-safety-node`` processes (``python -m stack.ros.<node>``, started and driven
through their lifecycles by ``stack.ros.deploy.Graph``) with the parameters of ``launch/so101.yaml``. This process
plays everything around them:

* **the robot**: an SO-101 whose joints follow the hardware commands within the velocity limits, publishing
  stamped ``joint_states`` at ``JS_RATE_HZ`` (100 Hz, a joint_state_broadcaster's rate) and the policy's task
  topics ``/r2s/ee_pos`` (a stand-in for forward kinematics) and ``/r2s/goal`` (a slow sweep with a step every
  few seconds, so the rate limiter works in normal operation too) beside them; it records every hardware command
  with its DDS reception time;
* **the faulty or hostile publisher**: each case corrupts, silences, floods or kills something for a while, then
  the run waits for normal operation ("ok" commands) before the next case. The 10 kHz flood comes from a child
  process of its own, so this one keeps playing the robot on time.

The policy is a small linear ONNX graph (``obs = joint_pos[6] + ee_pos[3] + goal[3]`` → the next joint target,
``horizon = act_steps = 1``) with the metadata the runtime checks; the bad models are variants of it.

**What is measured, per case** (``per_case``) and over the run:

* ``hold_latency_ms``: from the fault's onset (the first faulty message published, the kill, the e-stop request) to
  the departure of the first hold command from the safety node: its DDS source timestamp, written by the safety
  node's ``publish`` (same host, same clock), not its arrival here. A case that should hold and never does reports
  the length of its fault window as a lower bound (``held: false``).
* ``max_step_ratio_during`` / ``_after``: the largest per-joint change between consecutive hardware commands,
  divided by the per-period rate limit ``vel_max · velocity_scale · control period`` (launch/so101.yaml,
  robots/so101.py), during the fault and after it. ``unsafe_commands``: commands outside the position limits,
  non-finite, or stepping more than 1.05 × that limit from the previous command.
* ``ok_on_stale``: "ok" commands whose observation was older than ``watchdog_timeout_s`` when the command left the
  safety node (its DDS source timestamp, as above). The observation's time is the executed command's
  ``header.stamp`` (the stamp of the step's observation: its joint_states, or its oldest source) and, for the
  unstamped task topics, the last time this process published a well-formed value on each of them before the
  command left. An "ok" command stamped 0 (an unstamped proposal) has no observation time: it counts as stale
  (``ok_unstamped`` says how many).
* ``command_gap_ms_max``: the longest time between two commands leaving the safety node, from the onset to the
  end of the case;
  ``recovery_ms``: from the end of the fault to the first "ok" command after it.
* ``nodes_died``: nodes that exited while the harness had not killed them; a dead node is restarted so that the
  remaining cases still run.

Each command is paired with its status, stamp and authority by the DDS publication sequence number of the
publishers of one safety-node incarnation (it publishes each exactly once per command).

A case passes when it has no unsafe command, no "ok" command on stale data, no node death, a hold within
``watchdog_timeout_s`` + one control period where it must hold, "ok" commands again within ``RECOVERY_S`` of the
fault's end, and its own check (bad models refused with a reason, authority after an e-stop reset). ``failures``
lists each failed check in words.

    r2s bench faults --quick      # about 1.5 min here: each fault 0.5–3 s (full: 1–5 s, about 3 min)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

JS_RATE_HZ = 100.0
"""The robot's joint_states rate (the policy steps at the spec's 20 Hz on them)."""
EE_TOPIC = "/r2s/ee_pos"
GOAL_TOPIC = "/r2s/goal"
FLOOD_RATE_HZ = 10_000.0
RECOVERY_S = 1.0
"""Normal operation ("ok" commands) must be back this long after a fault ends."""
STEP_TOLERANCE = 1.05
"""A command step above this × the per-period rate limit is unsafe (the acceptance interface of issue 11)."""
REPO = Path(__file__).resolve().parents[2]
PARAMS_FILE = REPO / "launch" / "so101.yaml"
NS = 1_000_000_000


# ---- the policy and the bad models -----------------------------------------------------------------------------------
def _policy_onnx(path: Path, spec, *, obs_width: int | None = None, out_width: int | None = None,
                 meta_overrides: dict[str, str] | None = None) -> Path:
    """target = q + 0.5·(home + M·goal − q) + 0.02·ee: a linear graph with the runtime's metadata. ``obs_width`` /
    ``out_width`` build a graph whose input / output width differs from what the metadata says."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from robots.spec import ObsSegment, obs_layout_to_json

    n = spec.num_joints
    layout = (ObsSegment("joint_pos", n, "joint_states.position"), ObsSegment("ee_pos", 3, f"topic:{EE_TOPIC}"),
              ObsSegment("goal", 3, f"topic:{GOAL_TOPIC}"))
    obs_dim = sum(s.size for s in layout)
    width_in, width_out = obs_width or obs_dim, out_width or n
    w = np.zeros((width_in, width_out), np.float32)
    k = min(n, width_out)
    w[:k, :k] = 0.5 * np.eye(k)
    for j in range(min(3, width_out)):  # goal -> the first joints; ee_pos a little
        w[n + j, j] = 0.02
        if n + 3 + j < width_in:
            w[n + 3 + j, j] = 0.5
    home = np.zeros(width_out, np.float32)
    home[:k] = np.asarray(spec.extra.get("home", np.zeros(n)), np.float32)[:k]
    nodes = [helper.make_node("Reshape", ["obs", "flat"], ["o"]), helper.make_node("MatMul", ["o", "W"], ["ow"]),
             helper.make_node("Add", ["ow", "b"], ["a"]), helper.make_node("Reshape", ["a", "chunk"], ["action"])]
    inits = [numpy_helper.from_array(w, "W"), numpy_helper.from_array(0.5 * home, "b"),
             numpy_helper.from_array(np.array([-1, width_in], np.int64), "flat"),
             numpy_helper.from_array(np.array([-1, 1, width_out], np.int64), "chunk")]
    graph = helper.make_graph(nodes, "fault_bench_policy",
                              [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", 1, width_in])],
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", 1, width_out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    lo, hi = spec.pos_limits
    meta = {
        **spec.to_metadata(), "r2s_version": "bench", "obs_layout": obs_layout_to_json(layout),
        "obs_dim": str(obs_dim), "obs_steps": "1", "action_names": json.dumps(list(spec.joint_names)),
        "action_low": json.dumps(lo.tolist()), "action_high": json.dumps(hi.tolist()), "act_dim": str(n),
        "horizon": "1", "act_steps": "1", "policy_type": "gaussian", "denoising_steps": "0", "noise_shape": "[]",
        "run_id": "bench-faults", "content_hash": "bench-faults-policy", **(meta_overrides or {}),
    }
    helper.set_model_props(model, meta)
    onnx.save(model, str(path))
    return path


def _bad_models(work: Path, spec) -> dict[str, Path]:
    """Models a policy node must refuse at configure, saying why."""
    good = _policy_onnx(work / "good.onnx", spec)
    raw = good.read_bytes()
    (work / "not_onnx.onnx").write_text("this is a text file, not an ONNX model\n")
    (work / "empty.onnx").write_bytes(b"")
    (work / "truncated.onnx").write_bytes(raw[: len(raw) // 2])
    five = json.dumps(list(spec.joint_names[:5]))
    return {
        "not_onnx": work / "not_onnx.onnx",
        "empty": work / "empty.onnx",
        "truncated": work / "truncated.onnx",
        "wrong_input_width": _policy_onnx(work / "wide_input.onnx", spec, obs_width=13),
        "act_steps_0": _policy_onnx(work / "act_steps_0.onnx", spec, meta_overrides={"act_steps": "0"}),
        "five_action_names": _policy_onnx(work / "five_names.onnx", spec,
                                          meta_overrides={"action_names": five, "act_dim": "5"}),
    }


# ---- the robot -------------------------------------------------------------------------------------------------------
@dataclass
class _Received:
    recv_ns: int
    """DDS reception time here."""
    sent_ns: int
    """DDS source time: when the sender's ``publish`` wrote it (same host, same clock) — its departure."""
    gid: bytes
    seq: int
    value: object


class Robot:
    """This process's side of the wire: a simulated arm publishing joint_states and task topics, the record of every
    message the safety node sends, and the hooks faults use (``js_fault``, ``task_fault``)."""

    def __init__(self, spec, node):
        from sensor_msgs.msg import JointState
        from std_msgs.msg import Float64MultiArray, String
        from trajectory_msgs.msg import JointTrajectory

        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        from stack.ros import topics
        from stack.ros.common import QOS_RELIABLE

        self.spec, self.node = spec, node
        self.names = list(spec.joint_names)
        self.q = np.asarray(spec.extra.get("home", np.zeros(spec.num_joints)), dtype=np.float64)
        self.cmd = self.q.copy()
        self._speed = np.where(np.isfinite(spec.vel_limits), spec.vel_limits, 10.0)
        self.js_fault: Callable | None = None
        """``(msg, t_ns) -> msg | None`` applied to each joint_states message (None: not published)."""
        self.task_fault: Callable | None = None
        """``(topic, values, t_ns) -> values | None`` applied to each task-topic message."""
        self.fault_onset_ns: int | None = None
        """Set by the publishing thread at the first message a fault touched."""
        self.goal_frozen = False
        self.task_valid: dict[str, list[int]] = {EE_TOPIC: [], GOAL_TOPIC: []}
        """Publish times of well-formed task values (what the policy's observation can be built on)."""
        self.js_sent = 0
        self._Float64MultiArray, self._JointState = Float64MultiArray, JointState
        self._js = node.create_publisher(JointState, spec.joint_states_topic, QOS_RELIABLE)
        self._task = {t: node.create_publisher(Float64MultiArray, t, QOS_RELIABLE) for t in (EE_TOPIC, GOAL_TOPIC)}
        # Every command is kept (a slow moment here must not drop any from the record).
        deep = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5000, reliability=ReliabilityPolicy.RELIABLE)
        self.hw: list[_Received] = []
        self.executed: list[_Received] = []
        self.status: list[_Received] = []
        self.authority: list[_Received] = []
        node.create_subscription(Float64MultiArray, spec.command_topic, self._recv(self.hw, self._on_hw), deep)
        node.create_subscription(JointTrajectory, topics.EXECUTED, self._recv(
            self.executed, lambda m: (m.header.stamp.sec * NS + m.header.stamp.nanosec,
                                      np.asarray(m.points[0].positions) if m.points else None)), deep)
        node.create_subscription(String, topics.SAFETY_STATUS, self._recv(self.status, lambda m: m.data), deep)
        node.create_subscription(String, topics.AUTHORITY, self._recv(self.authority, lambda m: m.data), deep)
        self._goal_t0 = time.monotonic()
        self._goal = np.zeros(3)
        self._running = True
        self._thread = threading.Thread(target=self._publish_loop, name="bench-robot", daemon=True)
        self._thread.start()

    def _on_hw(self, msg) -> np.ndarray:
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape == self.cmd.shape and np.all(np.isfinite(values)):
            self.cmd = values  # the servos take it (a non-finite command is refused by the servos, and counted)
        return values

    @staticmethod
    def _recv(store: list, convert: Callable):
        def callback(msg, info) -> None:
            gid = bytes((info.get("publisher_gid") or {}).get("data", b""))
            recv = info.get("received_timestamp") or time.time_ns()
            sent = info.get("source_timestamp") or recv
            store.append(_Received(recv, sent, gid, int(info.get("publication_sequence_number") or 0), convert(msg)))
        return callback

    # ---- publishing -------------------------------------------------------------------------------------------------
    def goal(self) -> np.ndarray:
        if not self.goal_frozen:
            t = time.monotonic() - self._goal_t0
            sweep = 0.3 * np.array([math.sin(0.5 * t), math.cos(0.4 * t), math.sin(0.3 * t)])
            step = 0.8 if int(t / 3.0) % 2 else -0.8  # a step every 3 s: commands the rate limit clips
            self._goal = sweep + np.array([step, 0.0, 0.0])
        return self._goal

    def ee(self) -> np.ndarray:
        return 0.2 * self.q[:3]

    def _publish_loop(self) -> None:
        period = 1.0 / JS_RATE_HZ
        next_t = time.monotonic()
        last = time.monotonic()
        while self._running:
            now = time.monotonic()
            dt, last = now - last, now
            self.q = self.q + np.clip(self.cmd - self.q, -self._speed * dt, self._speed * dt)
            t_ns = time.time_ns()
            msg = self._JointState(name=self.names, position=self.q.tolist(), velocity=[0.0] * len(self.names))
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t_ns, NS)
            fault = self.js_fault
            if fault is not None:
                if self.fault_onset_ns is None:
                    self.fault_onset_ns = t_ns
                msg = fault(msg, t_ns)
            if msg is not None:
                self._js.publish(msg)
                self.js_sent += 1
            for topic, values in ((EE_TOPIC, self.ee()), (GOAL_TOPIC, self.goal())):
                values = values.tolist()
                tf = self.task_fault
                if tf is not None:
                    if self.fault_onset_ns is None:
                        self.fault_onset_ns = t_ns
                    values = tf(topic, values, t_ns)
                if values is None:
                    continue
                self._task[topic].publish(self._Float64MultiArray(data=values))
                if len(values) == 3 and all(math.isfinite(v) for v in values):
                    self.task_valid[topic].append(t_ns)
            next_t += period
            delay = next_t - time.monotonic()
            if delay < -0.05:  # fell behind (a stall): no burst of catch-up messages
                next_t = time.monotonic()
            time.sleep(max(0.0, delay))

    def inject(self, js: Callable | None = None, task: Callable | None = None) -> None:
        self.fault_onset_ns = None
        self.js_fault, self.task_fault = js, task

    def clear(self) -> None:
        self.js_fault = self.task_fault = None

    def close(self) -> None:
        self._running = False
        self._thread.join(timeout=5)


# ---- the cases -------------------------------------------------------------------------------------------------------
@dataclass
class Record:
    name: str
    fault: str
    expects_hold: bool
    start_ns: int = 0
    onset_ns: int = 0
    end_ns: int = 0
    stop_ns: int = 0
    ok_resumes_at_ns: int | None = None
    """When "ok" commands are due back (default: the fault's end; a restart moves it)."""
    notes: dict = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    alive: dict = field(default_factory=dict)


class Bench:
    """The node graph, the robot, this process's rclpy node and the case protocol."""

    def __init__(self, work: Path, quick: bool):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        import yaml

        from robots import get_robot
        from stack.ros.deploy import Graph

        self.quick, self.work = quick, work
        self.spec = get_robot("so101")
        params = yaml.safe_load(PARAMS_FILE.read_text())
        safety = params["r2s_safety"]["ros__parameters"]
        self.watchdog_s = float(safety.get("watchdog_timeout_s") or 1.5 * self.spec.control_period_s)
        self.velocity_scale = float(safety.get("velocity_scale", 1.0))
        self.period_s = self.spec.control_period_s
        self.step_limit = self.spec.vel_limits * self.velocity_scale * self.period_s
        self.lo, self.hi = self.spec.pos_limits
        self.policy_path = _policy_onnx(work / "policy.onnx", self.spec)
        self._owns_rclpy = not rclpy.ok()
        if self._owns_rclpy:
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.rclpy = rclpy
        self.node = rclpy.create_node(f"r2s_fault_bench_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self._spinning = True
        self._spin_thread = threading.Thread(target=self._spin, name="bench-spin", daemon=True)
        self._spin_thread.start()
        self.robot = Robot(self.spec, self.node)
        self.graph = Graph({"policy": {"policy_path": str(self.policy_path)}, "safety": {}},
                           params_files=[str(PARAMS_FILE)], log_dir=work / "logs")
        self._clients: dict = {}
        self.on_purpose: set[str] = set()
        """Nodes the harness stopped or killed itself (not counted as deaths)."""
        self.nodes_died: list[str] = []
        self.records: list[Record] = []

    def _spin(self) -> None:
        while self._spinning:
            self.executor.spin_once(timeout_sec=0.05)

    # ---- nodes ------------------------------------------------------------------------------------------------------
    def start(self, keys=("safety", "policy")) -> None:
        self.graph.start(list(keys))
        self.graph.up(list(keys), timeout_s=90)
        for k in keys:
            self.on_purpose.discard(k)

    def alive(self, key: str) -> bool:
        n = self.graph.nodes.get(key)
        return n is not None and n.proc.poll() is None

    def check_nodes(self, rec: Record) -> None:
        """Record which nodes are alive; a node that died unbidden is counted and restarted."""
        died = [k for k in ("safety", "policy") if not self.alive(k) and k not in self.on_purpose]
        rec.alive = {k: self.alive(k) for k in ("safety", "policy")}
        for key in died:
            n = self.graph.nodes[key]
            self.nodes_died.append(f"{key} ({rec.name}): exit code {n.proc.returncode}")
            rec.failures.append(f"the {key} node died (exit code {n.proc.returncode}): "
                                f"{n.log_tail(6).strip().splitlines()[-1] if n.log_tail(6).strip() else ''}")
            n.log_path.rename(n.log_path.with_name(f"{key}.died_in_{rec.name}.log"))
        if died:
            self.start(died)

    def kill(self, key: str, sig: int) -> None:
        self.on_purpose.add(key)
        proc = self.graph.nodes[key].proc
        proc.send_signal(sig)
        proc.wait(timeout=20)

    # ---- services ---------------------------------------------------------------------------------------------------
    def trigger(self, service: str, timeout_s: float = 5.0) -> bool:
        """Call a std_srvs/Trigger service; whether it succeeded. Clients are kept (``ready``), so a call's time is
        the request's, not a new client's discovery."""
        from std_srvs.srv import Trigger

        client = self._clients.get(service)
        if client is None:
            client = self._clients[service] = self.node.create_client(Trigger, service)
        if not client.wait_for_service(timeout_sec=timeout_s):
            return False
        future = client.call_async(Trigger.Request())
        deadline = time.monotonic() + timeout_s
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.0005)
        return future.done() and future.result().success

    def ready(self, *services: str) -> None:
        """Create and connect the clients of ``services`` before a case's onset."""
        from std_srvs.srv import Trigger

        for service in services:
            client = self._clients.get(service)
            if client is None:
                client = self._clients[service] = self.node.create_client(Trigger, service)
            client.wait_for_service(timeout_sec=5.0)

    def publisher(self, msg_type, topic: str):
        from stack.ros.common import QOS_RELIABLE

        pub = self.node.create_publisher(msg_type, topic, QOS_RELIABLE)
        deadline = time.monotonic() + 3.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        return pub

    # ---- the protocol -----------------------------------------------------------------------------------------------
    def wait_ok(self, since_ns: int, timeout_s: float = 10.0) -> int | None:
        """When the first "ok" status after ``since_ns`` left the safety node (None within ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            items = self.robot.status
            for r in items[seen:]:
                if r.sent_ns >= since_ns and r.value == "ok":
                    return r.sent_ns
            seen = len(items)
            time.sleep(0.01)
        return None

    def run_case(self, name: str, fault: str, expects_hold: bool, body: Callable[[Record], None]) -> Record:
        from stack.ros import topics

        rec = Record(name, fault, expects_hold)
        self.ready(topics.ESTOP_SERVICE, topics.RESET_ESTOP_SERVICE)
        if self.wait_ok(time.time_ns() - int(0.2 * NS), timeout_s=15.0) is None:
            rec.failures.append("no 'ok' command before the case started (the previous one did not recover)")
        time.sleep(0.3 if self.quick else 1.0)  # normal operation inside the window, before the onset
        rec.start_ns = time.time_ns()
        try:
            body(rec)
        except Exception as e:  # a harness error is reported, and the remaining cases still run
            rec.failures.append(f"harness error: {type(e).__name__}: {e}")
        finally:
            self.robot.clear()
        rec.end_ns = rec.end_ns or time.time_ns()
        rec.onset_ns = rec.onset_ns or rec.end_ns
        resume = rec.ok_resumes_at_ns or rec.end_ns
        rec.notes["ok_after_fault_ns"] = self.wait_ok(resume, timeout_s=RECOVERY_S + 4.0)
        time.sleep(0.3 if self.quick else 1.0)
        rec.stop_ns = time.time_ns()
        self.check_nodes(rec)
        self.records.append(rec)
        return rec

    def hold_for(self, seconds: float) -> None:
        time.sleep(seconds if not self.quick else min(seconds, max(0.5, seconds / 3)))

    def close(self) -> dict[str, int]:
        codes = self.graph.stop()
        self.robot.close()
        self._spinning = False
        self._spin_thread.join(timeout=5)
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        if self._owns_rclpy:
            self.rclpy.try_shutdown()
        return codes


def _js_fault(kind: str, robot: Robot, **kw) -> Callable:
    """joint_states corruptions: the message the robot publishes is passed through one of these."""
    names = robot.names
    if kind == "silence":
        return lambda msg, t: None
    if kind == "nonfinite":
        def nonfinite(msg, t):
            msg.position = [kw["value"] if i == 2 else v for i, v in enumerate(msg.position)]
            return msg
        return nonfinite
    if kind == "shuffle":
        perm = [3, 0, 5, 1, 4, 2]

        def shuffle(msg, t):
            msg.name = [names[i] for i in perm]
            msg.position = [msg.position[i] for i in perm]
            msg.velocity = [msg.velocity[i] for i in perm]
            return msg
        return shuffle
    if kind == "missing":
        def missing(msg, t):
            msg.name, msg.position, msg.velocity = msg.name[:5], msg.position[:5], msg.velocity[:5]
            return msg
        return missing
    if kind == "stamp":
        offset = int(kw["offset_s"] * NS)
        once = kw.get("once", False)

        def stamp(msg, t):
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t + offset, NS)
            if once:
                robot.js_fault = None
            return msg
        return stamp
    if kind == "glitch":  # one sample several rad off on wrist_roll, within its limits
        def glitch(msg, t):
            j = names.index("wrist_roll")
            q = list(msg.position)
            q[j] = float(np.clip(q[j] + 2.9, robot.spec.pos_limits[0][j], robot.spec.pos_limits[1][j]))
            if abs(q[j] - msg.position[j]) < 1.0:
                q[j] = float(np.clip(msg.position[j] - 2.9, *(lim[j] for lim in robot.spec.pos_limits)))
            msg.position = q
            robot.js_fault = kw.get("then")
            return msg
        return glitch
    raise ValueError(kind)


FLOOD_SCRIPT = r"""
import json, sys, time
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy
from sensor_msgs.msg import JointState
topic, names, q = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
rate, duration = float(sys.argv[4]), float(sys.argv[5])
rclpy.init()
node = rclpy.create_node("r2s_fault_flood")
qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
pub = node.create_publisher(JointState, topic, qos)
deadline = time.monotonic() + 10
while pub.get_subscription_count() < 2 and time.monotonic() < deadline:
    time.sleep(0.02)
msg = JointState(name=names, position=q, velocity=[0.0] * len(q))
period = 1.0 / rate
start = time.time_ns()
print("start", start, flush=True)
t0 = time.monotonic(); n = 0
while True:
    now = time.monotonic()
    if now - t0 >= duration:
        break
    target = int((now - t0) / period) + 1
    while n < target:
        t = time.time_ns()
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(t, 1000000000)
        pub.publish(msg)
        n += 1
print("end", time.time_ns(), n, flush=True)
node.destroy_node(); rclpy.try_shutdown()
"""


# ---- case bodies -----------------------------------------------------------------------------------------------------
def _robot_fault_case(b: Bench, name: str, fault: str, expects_hold: bool, seconds: float, js=None, task=None):
    def body(rec: Record) -> None:
        b.robot.inject(js=js() if js else None, task=task() if task else None)
        deadline = time.monotonic() + 2.0
        while b.robot.fault_onset_ns is None and time.monotonic() < deadline:
            time.sleep(0.001)
        rec.onset_ns = b.robot.fault_onset_ns or time.time_ns()
        b.hold_for(seconds)
        b.robot.clear()
        rec.end_ns = time.time_ns()
    return b.run_case(name, fault, expects_hold, body)


def _glitch_case(b: Bench, name: str, fault: str, then: str) -> Record:
    from stack.ros import topics

    def body(rec: Record) -> None:
        after = _js_fault("silence", b.robot) if then == "silence" else None
        b.robot.inject(js=_js_fault("glitch", b.robot, then=after))
        while b.robot.fault_onset_ns is None:
            time.sleep(0.0005)
        rec.onset_ns = b.robot.fault_onset_ns
        if then == "estop":
            time.sleep(0.003)
            rec.notes["estop_ok"] = b.trigger(topics.ESTOP_SERVICE)
        b.hold_for(1.0)
        b.robot.clear()
        if then == "estop":
            rec.notes["reset_ok"] = b.trigger(topics.RESET_ESTOP_SERVICE)
        rec.end_ns = time.time_ns()
    return b.run_case(name, fault, then != "none", body)


def _flood_case(b: Bench) -> Record:
    def body(rec: Record) -> None:
        b.robot.goal_frozen = True
        time.sleep(1.0)  # the arm settles: the flood repeats the pose it holds
        seconds = 3.0 if b.quick else 5.0
        proc = subprocess.Popen(
            [sys.executable, "-c", FLOOD_SCRIPT, b.spec.joint_states_topic, json.dumps(b.robot.names),
             json.dumps(b.robot.q.tolist()), str(FLOOD_RATE_HZ), str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        finally:
            if proc.poll() is None:
                proc.kill()
        b.robot.goal_frozen = False
        lines = {ln.split()[0]: ln.split()[1:] for ln in out.splitlines() if ln.startswith(("start", "end"))}
        if "start" not in lines or "end" not in lines:
            raise RuntimeError(f"the flood process failed: {out[-500:]}")
        rec.onset_ns, rec.end_ns = int(lines["start"][0]), int(lines["end"][0])
        rec.notes["flood_messages"] = int(lines["end"][1])
        rec.notes["flood_rate_hz"] = round(int(lines["end"][1]) / ((rec.end_ns - rec.onset_ns) / NS), 1)
    return b.run_case("joint_states_flood", f"joint_states at {FLOOD_RATE_HZ:g} Hz (valid, current stamps) from "
                      "another process", False, body)


def _policy_kill_case(b: Bench) -> Record:
    import signal

    def body(rec: Record) -> None:
        rec.onset_ns = time.time_ns()
        b.kill("policy", signal.SIGKILL)
        b.hold_for(1.0)
        rec.end_ns = time.time_ns()
        b.start(["policy"])
        rec.ok_resumes_at_ns = time.time_ns()
        rec.notes["restart_s"] = round((rec.ok_resumes_at_ns - rec.end_ns) / NS, 2)
    return b.run_case("policy_kill9", "kill -9 of the policy node, then a restart", True, body)


def _estop_case(b: Bench, by: str) -> Record:
    from std_msgs.msg import Bool

    from stack.ros import topics

    pub = b.publisher(Bool, topics.ESTOP) if by == "topic" else None

    def body(rec: Record) -> None:
        rec.onset_ns = time.time_ns()
        if pub is not None:
            pub.publish(Bool(data=True))
        else:
            rec.notes["estop_ok"] = b.trigger(topics.ESTOP_SERVICE)
        b.hold_for(1.0)
        if pub is not None:
            pub.publish(Bool(data=False))  # "false" must not release it
            time.sleep(0.2)
        rec.notes["statuses_before_reset"] = sorted({r.value for r in b.robot.status
                                                     if r.recv_ns > rec.onset_ns + 0.15 * NS})
        rec.notes["reset_ok"] = b.trigger(topics.RESET_ESTOP_SERVICE)
        rec.end_ns = time.time_ns()
        released = [s for s in rec.notes["statuses_before_reset"] if not s.startswith("hold")]
        if released:
            rec.failures.append(f"the e-stop did not stay latched until the reset: statuses {released}")
    return b.run_case(f"estop_{by}", f"e-stop by {'topic /r2s/estop' if by == 'topic' else 'service'}, reset after",
                      True, body)


def _authority_case(b: Bench) -> Record:
    from std_msgs.msg import String

    from stack.ros import topics

    pub = b.publisher(String, topics.AUTHORITY_REQUEST)

    def body(rec: Record) -> None:
        rec.onset_ns = time.time_ns()
        b.trigger(topics.ESTOP_SERVICE)
        time.sleep(0.2)
        pub.publish(String(data="human"))  # while latched, with no teleop source running
        time.sleep(0.3)
        t_reset = time.time_ns()
        rec.notes["reset_ok"] = b.trigger(topics.RESET_ESTOP_SERVICE)
        time.sleep(0.5)
        after = [r.value for r in b.robot.authority if r.recv_ns > t_reset]
        rec.notes["authority_after_reset"] = after[-1] if after else None
        rec.end_ns = time.time_ns()
        if after and after[-1] == "human":
            rec.failures.append("the authority requested during the e-stop ('human') is in force after the reset")
        pub.publish(String(data="policy"))  # whatever happened, hand it back for the next cases
    return b.run_case("authority_during_estop", "authority request 'human' while the e-stop is latched, then reset",
                      True, body)


MALFORMED_CASES = ("malformed_joint_states", "malformed_proposal", "malformed_teleop", "malformed_baseline",
                   "malformed_authority_request", "malformed_episode", "malformed_task_topics")
"""The cases of ``malformed_messages``, one per subscribed topic (each can also be run alone)."""


def _malformed_cases(b: Bench, only: tuple[str, ...] = MALFORMED_CASES) -> list[Record]:
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float64MultiArray, String
    from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

    from stack.ros import topics

    names = b.robot.names

    def q():
        return b.robot.q.tolist()

    def traj(joint_names, positions, points=True, stamped=True):
        msg = JointTrajectory(joint_names=joint_names,
                              points=[JointTrajectoryPoint(positions=positions)] if points else [])
        if stamped:  # stamped now: only what is named malformed about it is
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), NS)
        return msg

    def js(**fields):
        msg = JointState(**fields)  # stamped now: only what is named malformed about it is
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), NS)
        return msg

    nan = float("nan")
    variants: dict[str, tuple[type, str, list[Callable]]] = {
        "malformed_joint_states": (JointState, b.spec.joint_states_topic, [
            lambda: js(name=names, position=q()[:3]),
            lambda: js(name=[], position=[]),
            lambda: js(name=names + names[:1], position=q() + q()[:1]),
            lambda: js(name=names, position=q(), velocity=[0.0] * 2),
            lambda: js(name=[f"j{i}" for i in range(200)], position=[0.0] * 200),
        ]),
        "malformed_proposal": (JointTrajectory, topics.PROPOSAL, [
            lambda: traj(names, q()[:3]),
            lambda: traj(names, [], points=False),
            lambda: traj(["a", "b", "c", "d", "e", "f"], q()),
            lambda: traj(names, [nan] * 6),
            lambda: traj(names + ["extra"], q() + [0.0]),
            lambda: traj(names, q(), stamped=False),  # a proposal must carry its observation's stamp
        ]),
        "malformed_teleop": (JointState, topics.TELEOP_COMMAND, [
            lambda: js(name=names, position=q()[:3]),
            lambda: js(name=["nope"], position=[1.0]),
            lambda: js(name=names, position=[nan] * 6),
        ]),
        "malformed_baseline": (JointTrajectory, topics.BASELINE_COMMAND, [
            lambda: traj(names, q()[:3]),  # the message of issue 11: 6 names, 3 positions
            lambda: traj(names, [], points=False),
            lambda: traj(names, [float("inf")] * 6),
        ]),
        "malformed_authority_request": (String, topics.AUTHORITY_REQUEST, [
            lambda: String(data="root"), lambda: String(data=""), lambda: String(data="x" * 100_000),
        ]),
        "malformed_episode": (DiagnosticArray, topics.EPISODE, [
            lambda: DiagnosticArray(),
            lambda: DiagnosticArray(status=[DiagnosticStatus(name="episode", message="start")]),
            lambda: DiagnosticArray(status=[DiagnosticStatus(name="episode", message="start",
                                                             values=[KeyValue(key="episode", value="x" * 10_000)])]),
        ]),
        "malformed_task_topics": (Float64MultiArray, EE_TOPIC, [
            lambda: Float64MultiArray(data=[]), lambda: Float64MultiArray(data=[nan] * 3),
            lambda: Float64MultiArray(data=[1.0] * 10_000), lambda: Float64MultiArray(data=[float("inf")] * 3),
        ]),
    }
    assert tuple(variants) == MALFORMED_CASES
    out = []
    for name, (msg_type, topic, makers) in variants.items():
        if name not in only:
            continue
        pub = b.publisher(msg_type, topic)

        def body(rec: Record, pub=pub, makers=makers) -> None:
            rec.onset_ns = time.time_ns()
            for _ in range(3 if b.quick else 10):
                for make in makers:
                    pub.publish(make())
                    time.sleep(0.01)
            rec.end_ns = time.time_ns()
        out.append(b.run_case(name, f"malformed messages on {topic} ({len(makers)} kinds)", False, body))
    return out


def _bad_models_case(b: Bench) -> Record:
    import signal

    from stack.ros.deploy import Graph

    (b.work / "bad_models").mkdir(exist_ok=True)
    models = _bad_models(b.work / "bad_models", b.spec)

    def body(rec: Record) -> None:
        rec.onset_ns = time.time_ns()
        b.kill("policy", signal.SIGKILL)  # one policy node at a time under the name r2s_policy; the onset is exact
        results = {}
        for label, path in models.items():
            g = Graph({"policy": {"policy_path": str(path)}}, params_files=[str(PARAMS_FILE)],
                      log_dir=b.work / "logs" / f"bad_model_{label}")
            g.start(["policy"])
            n = g.nodes["policy"]
            running = n.proc.poll
            try:
                configured = g.client.transition(n.name, "configure", 30, alive=lambda p=running: p() is None)
                activated = configured and g.client.transition(n.name, "activate", 30,
                                                               alive=lambda p=running: p() is None)
                if activated:
                    time.sleep(0.5)  # does it step?
                alive = n.proc.poll() is None
                log = n.log_path.read_text(errors="replace")
            finally:
                g.stop()
            errors = [ln for ln in log.splitlines() if "[ERROR]" in ln]
            reason = errors[0].split("]: ", 1)[-1] if errors else ""
            results[label] = {"configure": "accepted" if configured else "refused",
                              "activate": "accepted" if activated else ("refused" if configured else "-"),
                              "alive": alive, "reason": reason[:240]}
            if configured:
                rec.failures.append(f"bad model {label}: configure accepted it (activate "
                                    f"{'accepted' if activated else 'refused'})")
            elif len(reason.split(":", 1)[-1].strip()) < 10 or reason.rstrip().endswith(":"):
                rec.failures.append(f"bad model {label}: refused without saying why ({reason!r})")
            if not alive:
                rec.failures.append(f"bad model {label}: the policy node died")
        rec.notes["models"] = results
        rec.end_ns = time.time_ns()
        b.start(["policy"])
        rec.ok_resumes_at_ns = time.time_ns()
    return b.run_case("bad_models", "policy node configured with non-ONNX, empty, truncated, wrong-input-width, "
                      "act_steps=0 and 5-names-for-6-outputs models (the safety node must hold meanwhile)", True, body)


def _cases(b: Bench) -> dict[str, Callable[[], Record | list[Record]]]:
    r = b.robot
    f = _js_fault
    return {
        "joint_states_silence": lambda: _robot_fault_case(
            b, "joint_states_silence", "joint_states stop", True, 1.0, js=lambda: f("silence", r)),
        "nan_positions": lambda: _robot_fault_case(
            b, "nan_positions", "joint_states elbow_flex = NaN", True, 1.0,
            js=lambda: f("nonfinite", r, value=float("nan"))),
        "inf_positions": lambda: _robot_fault_case(
            b, "inf_positions", "joint_states elbow_flex = +inf", True, 1.0,
            js=lambda: f("nonfinite", r, value=float("inf"))),
        "shuffled_joint_names": lambda: _robot_fault_case(
            b, "shuffled_joint_names", "joint_states in another joint order (names and values permuted together)",
            False, 1.0, js=lambda: f("shuffle", r)),
        "missing_joints": lambda: _robot_fault_case(
            b, "missing_joints", "joint_states without the gripper", True, 1.0, js=lambda: f("missing", r)),
        "position_jump": lambda: _glitch_case(
            b, "position_jump", "one joint_states sample with wrist_roll 2.9 rad off, e-stop 3 ms later", "estop"),
        "position_jump_then_silence": lambda: _glitch_case(
            b, "position_jump_then_silence", "one glitched sample, then joint_states stop", "silence"),
        "position_jump_alone": lambda: _glitch_case(
            b, "position_jump_alone", "one glitched sample, then normal joint_states", "none"),
        "stale_stamps": lambda: _robot_fault_case(
            b, "stale_stamps", "joint_states stamped 2 s in the past (arriving on time)", True, 2.0,
            js=lambda: f("stamp", r, offset_s=-2.0)),
        "future_stamps": lambda: _robot_fault_case(
            b, "future_stamps", "one joint_states message stamped 10 s in the future", False, 1.0,
            js=lambda: f("stamp", r, offset_s=10.0, once=True)),
        "task_topic_silence": lambda: _robot_fault_case(
            b, "task_topic_silence", f"{EE_TOPIC} and {GOAL_TOPIC} stop", True, 2.0,
            task=lambda: (lambda topic, values, t: None)),
        "task_topic_wrong_size": lambda: _robot_fault_case(
            b, "task_topic_wrong_size", f"{EE_TOPIC} with 2 values instead of 3", True, 2.0,
            task=lambda: (lambda topic, values, t: values[:2] if topic == EE_TOPIC else values)),
        "joint_states_flood": lambda: _flood_case(b),
        "policy_kill9": lambda: _policy_kill_case(b),
        "estop_topic": lambda: _estop_case(b, "topic"),
        "estop_service": lambda: _estop_case(b, "service"),
        "malformed_messages": lambda: _malformed_cases(b),
        **{name: (lambda name=name: _malformed_cases(b, (name,))) for name in MALFORMED_CASES},
        "bad_models": lambda: _bad_models_case(b),
        "authority_during_estop": lambda: _authority_case(b),
    }


CASE_GROUPS = ("joint_states_silence", "nan_positions", "inf_positions", "shuffled_joint_names", "missing_joints",
               "position_jump", "position_jump_then_silence", "position_jump_alone", "stale_stamps", "future_stamps",
               "task_topic_silence", "task_topic_wrong_size", "joint_states_flood", "policy_kill9", "estop_topic",
               "estop_service", "malformed_messages", "bad_models", "authority_during_estop")
"""Every case group, in the order they run (``malformed_messages`` runs one case per subscribed topic)."""


# ---- analysis --------------------------------------------------------------------------------------------------------
@dataclass
class Command:
    recv_ns: int
    sent_ns: int
    values: np.ndarray
    status: str | None
    stamp_ns: int | None


def _by_incarnation(items: list[_Received]) -> list[dict[int, _Received]]:
    """Messages of one topic grouped by publisher (in order of first appearance), each indexed by sequence number."""
    groups: dict[bytes, dict[int, _Received]] = {}
    for r in sorted(items, key=lambda r: r.recv_ns):
        groups.setdefault(r.gid, {})[r.seq] = r
    return list(groups.values())


def commands(robot: Robot) -> tuple[list[Command], int]:
    """Every hardware command with its status and stamp (paired by sequence number per safety-node incarnation),
    in arrival order; and the number that found no partner."""
    hw, status, executed = (_by_incarnation(x) for x in (robot.hw, robot.status, robot.executed))
    out, unpaired = [], 0
    for i, group in enumerate(hw):
        st = status[i] if i < len(status) else {}
        ex = executed[i] if i < len(executed) else {}
        for seq, r in group.items():
            s, e = st.get(seq), ex.get(seq)
            unpaired += s is None or e is None
            out.append(Command(r.recv_ns, r.sent_ns, np.asarray(r.value, dtype=np.float64), s.value if s else None,
                               e.value[0] if e else None))
    out.sort(key=lambda c: c.recv_ns)
    return out, unpaired


def _last_before(times: list[int], t: int) -> int | None:
    import bisect

    i = bisect.bisect_right(times, t)
    return times[i - 1] if i else None


def _hold_reasons(statuses) -> dict[str, int]:
    """How many hold commands gave each reason (the reason up to its first figure)."""
    out: dict[str, int] = {}
    for s in statuses:
        if s and s.startswith("hold"):
            reason = s.split("(")[0].split(": ", 1)[-1].strip()
            reason = " ".join(w for w in reason.split() if not any(ch.isdigit() for ch in w))
            out[reason] = out.get(reason, 0) + 1
    return out


def _max_age(ages: np.ndarray) -> float | None:
    ages = ages[np.isfinite(ages)]
    return round(float(ages.max()), 1) if ages.size else None


def analyse(b: Bench) -> dict:
    cmds, unpaired = commands(b.robot)
    watchdog_ns = b.watchdog_s * NS
    hold_bound_ms = (b.watchdog_s + b.period_s) * 1e3
    task_times = {t: sorted(v) for t, v in b.robot.task_valid.items()}
    ratios, unsafe, stale = np.zeros(len(cmds)), np.zeros(len(cmds), bool), np.zeros(len(cmds), bool)
    ages = np.full(len(cmds), np.nan)
    unstamped = np.zeros(len(cmds), bool)
    for k, c in enumerate(cmds):
        bad = c.values.shape != b.lo.shape or not np.all(np.isfinite(c.values))
        if not bad:
            bad = bool(np.any(c.values < b.lo - 1e-9) or np.any(c.values > b.hi + 1e-9))
            if k > 0 and cmds[k - 1].values.shape == c.values.shape and np.all(np.isfinite(cmds[k - 1].values)):
                ratios[k] = float(np.max(np.abs(c.values - cmds[k - 1].values) / b.step_limit))
        unsafe[k] = bad or ratios[k] > STEP_TOLERANCE
        if c.status == "ok" and c.stamp_ns is not None:
            sources = [c.stamp_ns] + [_last_before(task_times[t], c.sent_ns) or 0 for t in task_times]
            ages[k] = (c.sent_ns - min(sources)) / 1e6
            stale[k] = c.sent_ns - min(sources) > watchdog_ns
            unstamped[k] = c.stamp_ns == 0  # no observation time at all: counted stale (its age is unbounded)
    sent = np.array([c.sent_ns for c in cmds], dtype=np.int64)  # the safety node's clock, like every time here
    per_case, failures, latencies = {}, [], []
    for rec in b.records:
        idx = [k for k in range(len(cmds)) if rec.start_ns <= sent[k] < rec.stop_ns]
        during = [k for k in idx if rec.onset_ns <= sent[k] <= rec.end_ns]
        after = [k for k in idx if sent[k] > rec.end_ns]
        holds = [k for k in idx if cmds[k].sent_ns >= rec.onset_ns and (cmds[k].status or "").startswith("hold")]
        latency = (cmds[holds[0]].sent_ns - rec.onset_ns) / 1e6 if holds else None
        fault_ms = (rec.end_ns - rec.onset_ns) / 1e6
        window = [k for k in idx if sent[k] >= rec.onset_ns]
        gaps = np.diff(sent[window]) / 1e6 if len(window) > 1 else np.array([])
        ok_after = rec.notes.pop("ok_after_fault_ns", None)
        resume = rec.ok_resumes_at_ns or rec.end_ns
        case = {
            "fault": rec.fault, "commands": len(idx), "holds": len(holds),
            "expects_hold": rec.expects_hold, "held": bool(holds and (latency is not None)),
            "hold_latency_ms": round(latency, 1) if latency is not None else None,
            "max_step_ratio_during": round(float(max((ratios[k] for k in during), default=0.0)), 3),
            "max_step_ratio_after": round(float(max((ratios[k] for k in after), default=0.0)), 3),
            "unsafe_commands": int(sum(unsafe[k] for k in idx)),
            "out_of_limits": int(sum(bool(np.any(cmds[k].values < b.lo - 1e-9) or np.any(cmds[k].values > b.hi + 1e-9))
                                     for k in idx if cmds[k].values.shape == b.lo.shape)),
            "ok_on_stale": int(sum(stale[k] for k in idx)),
            "ok_unstamped": int(sum(unstamped[k] for k in idx)),
            "hold_reasons": _hold_reasons(cmds[k].status for k in idx),
            "max_ok_obs_age_ms": _max_age(ages[[k for k in idx if not unstamped[k]]]) if idx else None,
            "command_gap_ms_max": round(float(gaps.max()), 1) if gaps.size else None,
            "fault_ms": round(fault_ms, 1),
            "recovery_ms": round((ok_after - resume) / 1e6, 1) if ok_after else None,
            "nodes_alive": rec.alive, **rec.notes,
        }
        checks = list(rec.failures)
        if case["unsafe_commands"]:
            worst = max(case["max_step_ratio_during"], case["max_step_ratio_after"])
            checks.append(f"{case['unsafe_commands']} unsafe command(s) (largest step {worst:.2f}× the rate limit)")
        if case["ok_on_stale"] > case["ok_unstamped"]:
            aged = ages[[k for k in idx if stale[k] and not unstamped[k]]]
            checks.append(f"{case['ok_on_stale'] - case['ok_unstamped']} 'ok' command(s) on an observation older "
                          f"than {b.watchdog_s * 1e3:.0f} ms (oldest {float(np.nanmax(aged)):.0f} ms)")
        if case["ok_unstamped"]:
            checks.append(f"{case['ok_unstamped']} 'ok' command(s) stamped 0: built on an unstamped proposal, whose "
                          "age nobody can check")
        if rec.expects_hold:
            shown = latency if latency is not None else fault_ms
            latencies.append(shown)
            if latency is None:
                checks.append(f"no hold within the {fault_ms:.0f} ms fault")
            elif latency > hold_bound_ms:
                checks.append(f"hold after {latency:.0f} ms (bound {hold_bound_ms:.0f} ms)")
        if ok_after is None:
            checks.append(f"no 'ok' command within {RECOVERY_S + 4:.0f} s after the fault")
        elif (ok_after - resume) / NS > RECOVERY_S:
            checks.append(f"'ok' commands back only {(ok_after - resume) / 1e6:.0f} ms after the fault")
        case["passed"] = not checks
        case["failures"] = checks
        failures += [f"{rec.name}: {c}" for c in checks]
        per_case[rec.name] = case
    return {  # over every command of the run (between cases too)
        "cases": [r.name for r in b.records],
        "unsafe_commands": int(unsafe.sum()),
        "ok_on_stale": int(stale.sum()),
        "ok_unstamped": int(unstamped.sum()),
        "max_hold_latency_ms": round(float(max(latencies, default=0.0)), 1),
        "nodes_died": list(b.nodes_died),
        "max_step_rad_over_rate_limit": round(float(ratios.max(initial=0.0)), 3),
        "hold_latency_bound_ms": round(hold_bound_ms, 1),
        "watchdog_timeout_s": b.watchdog_s,
        "rate_limit_rad_per_period": [round(float(x), 4) for x in b.step_limit],
        "commands": len(cmds), "unpaired_commands": unpaired,
        "failed_cases": [r.name for r in b.records if not per_case[r.name]["passed"]],
        "failures": failures,
        "per_case": per_case,
    }


# ---- entry point -----------------------------------------------------------------------------------------------------
def _ros_env() -> None:
    """A DDS domain of this run's own (unless one is set) on localhost: the benchmark hears no one else."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def run(quick: bool = False, cases: tuple[str, ...] | list[str] | None = None, work_dir: str | None = None) -> dict:
    """Run the fault cases (``cases``: some of ``CASE_GROUPS`` or ``MALFORMED_CASES``, default every group) and
    return the summary."""
    chosen = list(cases or CASE_GROUPS)
    unknown = [c for c in chosen if c not in CASE_GROUPS + MALFORMED_CASES]
    if unknown:
        raise ValueError(f"cases: unknown {unknown}; expected some of {list(CASE_GROUPS + MALFORMED_CASES)}")
    _ros_env()
    t0 = time.monotonic()
    work = Path(work_dir or tempfile.mkdtemp(prefix="r2s_bench_faults_"))
    work.mkdir(parents=True, exist_ok=True)
    b = Bench(work, quick)
    exit_codes = {}
    try:
        b.start()
        table = _cases(b)
        for name in chosen:
            table[name]()
    finally:
        exit_codes = b.close()
    result = analyse(b)
    result.update(quick=quick, wall_s=round(time.monotonic() - t0, 1), exit_codes=exit_codes,
                  log_dir=str(work / "logs"), joint_states_rate_hz=JS_RATE_HZ)
    return result


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m stack.bench.faults", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cases", nargs="*", default=None, help=f"some of {list(CASE_GROUPS + MALFORMED_CASES)}")
    args = p.parse_args(argv)
    print(json.dumps(run(quick=args.quick, cases=args.cases)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
