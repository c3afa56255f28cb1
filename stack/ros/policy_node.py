"""``policy_node``: an exported ONNX policy (``stack.runtime.OnnxPolicy``) as a ROS 2 lifecycle node. No torch.

Observation: assembled in the model's ``obs_layout`` from ``joint_states`` (sensor_msgs/JointState, joints matched
**by name**: ``joint_states.position`` / ``.velocity`` / ``.effort`` segments are the robot's joints in spec order)
and task topics (std_msgs/Float64MultiArray, one per ``topic:/name`` segment).

Control step, at the policy's control rate (``trigger``):

* ``joint_states`` (default): on the first joint_states message stamped at or after each tick's due time, so the
  command leaves as soon as the state it answers arrives (ros2_control publishes joint_states at its update rate,
  normally a multiple of the policy's). If joint_states stop, commands stop; the safety node holds.
* ``timer``: a timer at the control rate steps on the newest joint_states, if younger than ``max_obs_age_s``.

Outputs per step: the proposal (stamped JointTrajectory, the safety node's input), optionally the same command for a
forward_command_controller (Float64MultiArray) and/or a joint_trajectory_controller (JointTrajectory) when running
without the safety node, and the observation (``stack.ros.topics``). A refused observation (NaN/inf, wrong size) or
a non-finite model output produces **no command**: the proposal of that step carries NaN, which the safety node
answers by holding at once, and nothing goes to the direct controller topics. Diagnostics (``/diagnostics``): loop
period, step and inference time, chunk-queue length, refusals.

Lifecycle: configure loads and checks the model against the robot spec (``SpecMismatch`` → failure); activate waits
for joint_states (``activation_timeout_s``) and refuses if the names differ from the model's joints, naming the
missing and extra ones. An episode ``start`` event (``/r2s/episode``) resets the observation history and the queue.

Run: ``python -m stack.ros.policy_node --ros-args -p policy_path:=model.onnx -p robot:=so101``
(console script ``r2s-policy-node``).
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import numpy as np
import onnxruntime as ort
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from robots.spec import SpecMismatch
from stack.ros import topics
from stack.runtime import MetadataError, ObservationError, OnnxPolicy, PolicyOutputError
from stack.ros.common import (
    QOS_LATCHED, QOS_RELIABLE, QOS_STATE, SUCCESS, JointMatcher, JointNameError, R2sNode, declare_parameters,
    load_robot, run_node, status_array,
)

PARAMS = {
    "policy_path": ("", "the exported ONNX policy"),
    "robot": ("", "registered robot name (empty: the robot named in the model's metadata)"),
    "control_rate_hz": (0.0, "override of the spec's control rate (0: the spec's)"),
    "trigger": ("joint_states", "joint_states | timer (see the module doc)"),
    "joint_states_topic": ("", "joint states (empty: the spec's)"),
    "proposal_topic": (topics.PROPOSAL, "stamped JointTrajectory proposal (the safety node's input)"),
    "forward_command_topic": ("", "also publish Float64MultiArray commands here (empty: off)"),
    "trajectory_command_topic": ("", "also publish JointTrajectory commands here (empty: off)"),
    "observation_topic": (topics.OBSERVATION, "the observation of each step (empty: off)"),
    "max_obs_age_s": (0.0, "timer trigger: joint_states older than this give no command (0: 2 control periods)"),
    "activation_timeout_s": (5.0, "how long activation waits for the first joint_states"),
    "strict_joint_names": (False, "refuse joint_states that carry joints the model does not know"),
    "noise": ("zero", "generative policies: zero | random initial noise"),
    "seed": (0, "seed of random noise"),
    "temporal_ensemble": (0.0, "temporal ensembling weight m (0: off, execute act_steps of each chunk)"),
    "threads": (1, "onnxruntime intra-op threads"),
    "diagnostics_period_s": (0.5, "period of the /diagnostics status"),
}

_JS_FIELDS = {"joint_states.position": "position", "joint_states.velocity": "velocity",
              "joint_states.effort": "effort"}


class PolicyNode(R2sNode):
    def __init__(self):
        super().__init__(topics.POLICY_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.policy = None
        self._tmrs = []
        self._pubs = {}
        self._subs = []

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        if not p.policy_path:
            return self.fail("configure: parameter policy_path is empty")
        if p.trigger not in ("joint_states", "timer"):
            return self.fail(f"trigger: {p.trigger!r}; expected joint_states or timer")
        try:
            robot = p.robot
            if not robot:  # the robot the model was exported for
                sess = ort.InferenceSession(p.policy_path, providers=["CPUExecutionProvider"])
                robot = sess.get_modelmeta().custom_metadata_map.get("robot", "")
                del sess
            self.spec = spec = load_robot(robot, p.control_rate_hz)
            self.policy = OnnxPolicy.load(p.policy_path, spec, threads=p.threads, noise=p.noise, seed=p.seed,
                                          temporal_ensemble=p.temporal_ensemble or None)
        except (SpecMismatch, MetadataError, KeyError, OSError, RuntimeError, ValueError) as e:
            return self.fail(f"configure: cannot load {p.policy_path}: {type(e).__name__}: {e}")
        meta = self.policy.meta
        self.period_s = 1.0 / meta.control_rate_hz
        self.max_age_ns = int((p.max_obs_age_s or 2.0 * self.period_s) * 1e9)
        self.js_topic = p.joint_states_topic or spec.joint_states_topic
        self.joints = JointMatcher(meta.joint_names, self.js_topic, strict=p.strict_joint_names)
        self.action_idx = [meta.joint_names.index(n) for n in meta.action_names]

        # Observation assembly plan: (slice, joint_states field | topic name).
        self.plan, self.topic_values, offset = [], {}, 0
        for seg in meta.obs_layout:
            sl = slice(offset, offset + seg.size)
            offset += seg.size
            if seg.source in _JS_FIELDS:
                if seg.size != len(meta.joint_names):
                    return self.fail(f"obs_layout: segment {seg.name}[{seg.size}] reads {seg.source} but the robot "
                                     f"has {len(meta.joint_names)} joints")
                self.plan.append((sl, "js", _JS_FIELDS[seg.source]))
            elif seg.source.startswith("topic:"):
                name = seg.source[len("topic:"):]
                self.plan.append((sl, "topic", name))
                self.topic_values[name] = None
            else:
                return self.fail(f"obs_layout: segment {seg.name} has source {seg.source!r}; supported: "
                                 f"{sorted(_JS_FIELDS)} or topic:/name")
        self.obs = np.zeros(meta.obs_dim)
        self.obs_names = [f"{s.name}[{i}]" for s in meta.obs_layout for i in range(s.size)]
        self.topic_sizes = {s.source[len("topic:"):]: s.size for s in meta.obs_layout if s.source.startswith("topic:")}

        pub = self.create_lifecycle_publisher
        self._pubs = {"proposal": pub(JointTrajectory, p.proposal_topic, QOS_RELIABLE)}
        if p.forward_command_topic:
            self._pubs["forward"] = pub(Float64MultiArray, p.forward_command_topic, QOS_RELIABLE)
        if p.trajectory_command_topic:
            self._pubs["trajectory"] = pub(JointTrajectory, p.trajectory_command_topic, QOS_RELIABLE)
        if p.observation_topic:
            self._pubs["observation"] = pub(JointState, p.observation_topic, QOS_RELIABLE)
        self._info_pub = self.create_publisher(DiagnosticArray, topics.POLICY_INFO, QOS_LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE)
        self._make_msgs()

        # Task topics before joint_states: when both are waiting, the step sees this tick's task values.
        for name in self.topic_values:
            self.io.subscribe(Float64MultiArray, name, self._topic_callback(name), QOS_STATE)
        self.io.subscribe(JointState, self.js_topic, self._on_joint_states, QOS_STATE)
        self._subs = [self.create_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE)]
        self._latest_js, self._latest_t = None, 0
        self._next_due_ns = None
        self._js_interval_ns = None
        self._reset_stats()
        self.io.start()  # receive joint_states while inactive: activation checks their names
        self._publish_info()
        self.get_logger().info(
            f"configured: {p.policy_path} ({meta.policy_type}, version {meta.content_hash[:12]}) for {spec.name} at "
            f"{meta.control_rate_hz:g} Hz, trigger {p.trigger}, obs {[s.name for s in meta.obs_layout]}")
        return SUCCESS

    def on_activate(self, state):
        deadline = time.monotonic() + self.p.activation_timeout_s
        while self._latest_js is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._latest_js is None:
            return self.fail(f"activate: no joint_states on {self.js_topic} within {self.p.activation_timeout_s:g} s")
        names = list(self._latest_js[0].name)
        missing, extra = self.joints.check(names)
        if missing or (extra and self.p.strict_joint_names):
            return self.fail(
                f"activate: refused — joint_states on {self.js_topic} do not match the model's joints: "
                f"missing {missing}, extra {extra}; the model ({self.spec.name}) expects "
                f"{list(self.policy.meta.joint_names)}, joint_states has {names}")
        if extra:
            self.get_logger().warn(f"joint_states carry joints the model ignores: {extra}")
        with self._lock:
            self.policy.reset()
            self._next_due_ns = None
            self._reset_stats()
        if self.p.trigger == "timer":
            self._tmrs.append(self.create_timer(self.period_s, self._on_timer))
        self._tmrs.append(self.create_timer(self.p.diagnostics_period_s, self._publish_diagnostics))
        self.active = True
        return super().on_activate(state)

    def on_deactivate(self, state):
        self.active = False
        for t in self._tmrs:
            self.destroy_timer(t)
        self._tmrs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.io.clear()
        for s in self._subs:
            self.destroy_subscription(s)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self.destroy_publisher(self._info_pub)
        self.destroy_publisher(self._diag_pub)
        self._subs, self._pubs, self.policy = [], {}, None
        return SUCCESS

    def on_shutdown(self, state):
        return SUCCESS

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def _topic_callback(self, name: str):
        size = self.topic_sizes[name]

        def callback(msg: Float64MultiArray) -> None:
            if len(msg.data) != size:
                self.log_throttled(name, f"{name}: {len(msg.data)} values, the observation layout expects {size}; "
                                         "ignored", level="error")
                return
            self.topic_values[name] = np.asarray(msg.data, dtype=np.float64)

        return callback

    def _on_joint_states(self, msg: JointState) -> None:
        now = self.now_ns()
        # Decimation runs on the messages' own stamps (regular at the publisher, whatever the delivery jitter);
        # arrival time stands in for a driver that leaves stamps at zero.
        t = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec or now
        if self._latest_js is not None:
            dt = t - self._latest_t
            if dt > 0:
                self._js_interval_ns = dt if self._js_interval_ns is None else 0.9 * self._js_interval_ns + 0.1 * dt
        self._latest_js, self._latest_t = (msg, now), t
        if not self.active or self.p.trigger != "joint_states":
            return
        period_ns = int(self.period_s * 1e9)
        # Step on the first message at or after the due time, with a tolerance of half the joint_states interval,
        # so that joint_states at the control rate are each answered despite their jitter.
        tol = 0.5 * min(self._js_interval_ns or period_ns, period_ns)
        due = self._next_due_ns
        if due is not None and t < due - tol:
            return
        self._next_due_ns = t + period_ns if due is None or t - due > period_ns else due + period_ns
        with self._lock:
            self._step(msg, now)

    def _on_timer(self) -> None:
        latest = self._latest_js
        if latest is None:
            return
        msg, received = latest
        now = self.now_ns()
        if now - received > self.max_age_ns:
            self.stale += 1
            self.log_throttled("stale", f"joint_states stale ({(now - received) / 1e6:.0f} ms): no command")
            return
        with self._lock:
            self._step(msg, now)

    def _on_episode(self, msg: DiagnosticArray) -> None:
        if msg.status and msg.status[0].message == "start":
            with self._lock:
                self.policy.reset()

    # ---- the control step -----------------------------------------------------------------------------------------
    def _assemble(self, js: JointState) -> bool:
        obs = self.obs
        for sl, kind, key in self.plan:
            if kind == "js":
                obs[sl] = self.joints.read(js, key)
            else:
                value = self.topic_values[key]
                if value is None:
                    self.log_throttled("wait:" + key, f"waiting for {key}: no command until it arrives")
                    return False
                obs[sl] = value
        return True

    def _step(self, js: JointState, now: int) -> None:
        t0 = time.perf_counter()
        try:
            if not self._assemble(js):
                self.waiting += 1
                return
        except (JointNameError, ValueError) as e:
            self.refused += 1
            self.log_throttled("names", f"no command: {e}", level="error")
            return
        if self._last_step_ns is not None:
            self.periods_ms.append((now - self._last_step_ns) / 1e6)
        self._last_step_ns = now
        stamp = js.header.stamp
        try:
            command = self.policy.step(self.obs)
            ok = True
        except (ObservationError, PolicyOutputError) as e:
            self.refused += 1
            self.log_throttled("refused", f"no command: {e}", level="error")
            command = np.full(len(self.action_idx), np.nan)
            ok = False
        values = command.tolist()
        prop = self._proposal
        prop.header.stamp = stamp
        prop.points[0].positions = values
        self._pubs["proposal"].publish(prop)
        if ok:
            if "forward" in self._pubs:
                self._fwd.data = values
                self._pubs["forward"].publish(self._fwd)
            if "trajectory" in self._pubs:
                self._traj.points[0].positions = values
                self._pubs["trajectory"].publish(self._traj)
        if "observation" in self._pubs:
            self._obs_msg.header.stamp = stamp
            self._obs_msg.position = self.obs.tolist()
            self._pubs["observation"].publish(self._obs_msg)
        self.steps += 1
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        self.obs_age_ms.append((now - (stamp.sec * 1_000_000_000 + stamp.nanosec)) / 1e6)

    def _make_msgs(self) -> None:
        meta = self.policy.meta
        names = list(meta.action_names)
        period_ns = int(self.period_s * 1e9)
        self._proposal = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint()])
        tfs = self._proposal.points[0].time_from_start
        tfs.sec, tfs.nanosec = divmod(period_ns, 1_000_000_000)
        self._traj = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(time_from_start=tfs)])
        self._fwd = Float64MultiArray()
        self._obs_msg = JointState(name=self.obs_names)

    # ---- status ---------------------------------------------------------------------------------------------------
    def _reset_stats(self) -> None:
        self.steps = self.refused = self.stale = self.waiting = 0
        self.periods_ms, self.step_ms, self.obs_age_ms = [], [], []
        self._last_step_ns = None
        self._stats_since = time.monotonic()

    def _publish_info(self) -> None:
        meta = self.policy.meta
        values = {
            "robot": self.spec.name, "policy_version": meta.content_hash, "run_id": meta.run_id,
            "policy_type": meta.policy_type, "control_rate_hz": f"{meta.control_rate_hz:g}",
            "obs_layout": json.dumps([s.__dict__ for s in meta.obs_layout]),
            "action_names": json.dumps(list(meta.action_names)), "horizon": str(meta.horizon),
            "act_steps": str(meta.act_steps), "path": self.p.policy_path,
        }
        self._info_pub.publish(status_array(self.now_ns(), "policy", meta.content_hash, self.spec.name, values))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            periods, steps_ms, ages = self.periods_ms, self.step_ms, self.obs_age_ms
            elapsed = time.monotonic() - self._stats_since
            steps, refused, stale, waiting = self.steps, self.refused, self.stale, self.waiting
            self.periods_ms, self.step_ms, self.obs_age_ms = [], [], []
            self.steps = self.refused = self.stale = self.waiting = 0
            self._stats_since = time.monotonic()
            queue = self.policy.queue_length
            inference_ms = self.policy.last_inference_s * 1e3

        def stat(xs, f):
            return f"{f(xs):.3f}" if xs else "nan"

        values = {
            "rate_hz": f"{steps / elapsed:.2f}" if elapsed > 0 else "nan",
            "period_mean_ms": stat(periods, statistics.fmean), "period_max_ms": stat(periods, max),
            "step_mean_ms": stat(steps_ms, statistics.fmean), "step_max_ms": stat(steps_ms, max),
            "inference_ms": f"{inference_ms:.3f}", "queue_length": str(queue),
            "obs_age_mean_ms": stat(ages, statistics.fmean), "steps": str(steps), "refused": str(refused),
            "stale": str(stale), "waiting_for_topics": str(waiting),
        }
        level = DiagnosticStatus.OK if steps and not refused else DiagnosticStatus.WARN
        message = "ok" if level == DiagnosticStatus.OK else (
            f"{refused} refused observation(s)" if refused else "no steps")
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: policy", message, self.spec.name,
                                            values, level))


def main(argv: list[str] | None = None) -> int:
    return run_node(PolicyNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
