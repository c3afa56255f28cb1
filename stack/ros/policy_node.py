"""``policy_node``: an exported ONNX policy (``stack.runtime.OnnxPolicy``) as a ROS 2 lifecycle node. No torch.

Observation (``stack.ros.observation.ObservationAssembler``): assembled in the model's ``obs_layout`` from
``joint_states`` (sensor_msgs/JointState, joints matched **by name**: ``joint_states.position`` / ``.velocity`` /
``.effort`` segments are the robot's joints in spec order) and task topics (std_msgs/Float64MultiArray, one per
``topic:/name`` segment). Every message is checked where it arrives — names, lengths, a stamp no further than
``max_future_stamp_s`` ahead of this node's clock, the task topics' sizes — and a bad one is dropped and counted
(``dropped`` in ``/diagnostics``). An observation with any source older than ``max_obs_age_s`` (joint_states by
``header.stamp``, task topics by arrival) is refused. Both streams are taken newest-first: a flood costs copies.

Control step, at the policy's control rate (``trigger``):

* ``joint_states`` (default): on the first joint_states message stamped at or after each tick's due time, so the
  command leaves as soon as the state it answers arrives (ros2_control publishes joint_states at its update rate,
  normally a multiple of the policy's); stamps that jump back re-anchor the schedule. If joint_states stop,
  commands stop; the safety node holds.
* ``timer``: a timer at the control rate steps on the newest joint_states.

Outputs per step: the proposal (stamped JointTrajectory, the safety node's input), optionally the same command for a
forward_command_controller (Float64MultiArray) and/or a joint_trajectory_controller (JointTrajectory) when running
without the safety node, and the observation (``stack.ros.topics``). Their stamp is the time of the observation's
oldest source (normally the joint_states stamp), so the safety node can refuse a command built on old data. A
refused observation (stale, a task topic not yet received, NaN/inf) or a failed or non-finite model output produces
**no command**: the proposal of that step carries NaN, which the safety node answers by holding at once, and nothing
goes to the direct controller topics. Diagnostics (``/diagnostics``): loop period, step and inference time,
chunk-queue length, refusals, stale and waiting steps, dropped messages.

Lifecycle: configure loads and checks the model (``OnnxPolicy.load``: loadable, consistent metadata, graph shapes,
the robot spec) and always logs why it refuses; activate waits for joint_states (``activation_timeout_s``) and
refuses if the names differ from the model's joints, naming the missing and extra ones. An episode ``start`` event
(``/r2s/episode``) resets the observation history and the queue.

Run: ``python -m stack.ros.policy_node --ros-args -p policy_path:=model.onnx -p robot:=so101``
(console script ``r2s-policy-node``).
"""

from __future__ import annotations

import json
import statistics
import threading
import time

import onnxruntime as ort
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from stack.ros import topics
from stack.ros.common import (
    QOS_LATCHED, QOS_RELIABLE, QOS_STATE, SUCCESS, R2sNode, declare_parameters, load_robot, run_node, set_stamp,
    status_array,
)
from stack.ros.episode_tracker import episode_event
from stack.ros.observation import LayoutError, ObservationAssembler, ObservationRefused, StepTrigger
from stack.runtime import ObservationError, OnnxPolicy, PolicyOutputError

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
    "max_obs_age_s": (0.0, "an observation with a source older than this gives no command (joint_states by stamp, "
                           "task topics by arrival; 0: 1.5 control periods)"),
    "max_future_stamp_s": (0.05, "joint_states stamped further ahead of this node's clock are dropped"),
    "activation_timeout_s": (5.0, "how long activation waits for the first joint_states"),
    "strict_joint_names": (False, "refuse joint_states that carry joints the model does not know"),
    "noise": ("zero", "generative policies: zero | random initial noise"),
    "seed": (0, "seed of random noise"),
    "temporal_ensemble": (0.0, "temporal ensembling weight m (0: off, execute act_steps of each chunk)"),
    "threads": (1, "onnxruntime intra-op threads"),
    "diagnostics_period_s": (0.5, "period of the /diagnostics status"),
}


class PolicyNode(R2sNode):
    def __init__(self):
        super().__init__(topics.POLICY_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.policy = None
        self._pubs = {}

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        if not p.policy_path:
            return self.fail("configure: parameter policy_path is empty")
        if p.trigger not in ("joint_states", "timer"):
            return self.fail(f"trigger: {p.trigger!r}; expected joint_states or timer")
        try:
            robot = p.robot or self._model_robot(p.policy_path)
            self.spec = spec = load_robot(robot, p.control_rate_hz)
            self.policy = OnnxPolicy.load(p.policy_path, spec, threads=p.threads, noise=p.noise, seed=p.seed,
                                          temporal_ensemble=p.temporal_ensemble or None)
            meta = self.policy.meta
            self.period_s = 1.0 / meta.control_rate_hz
            self.js_topic = p.joint_states_topic or spec.joint_states_topic
            self.obs = ObservationAssembler(meta.obs_layout, meta.joint_names, p.max_obs_age_s or 1.5 * self.period_s,
                                            self.js_topic, p.max_future_stamp_s, p.strict_joint_names)
        except Exception as e:  # whatever the file or the robot lookup raise: always say why
            self.policy = None
            return self.fail(f"configure: cannot load {p.policy_path}: {type(e).__name__}: {e}")
        self.trigger = StepTrigger(int(self.period_s * 1e9))

        pub = self.add_publisher
        self._pubs = {"proposal": pub(JointTrajectory, p.proposal_topic, QOS_RELIABLE)}
        if p.forward_command_topic:
            self._pubs["forward"] = pub(Float64MultiArray, p.forward_command_topic, QOS_RELIABLE)
        if p.trajectory_command_topic:
            self._pubs["trajectory"] = pub(JointTrajectory, p.trajectory_command_topic, QOS_RELIABLE)
        if p.observation_topic:
            self._pubs["observation"] = pub(JointState, p.observation_topic, QOS_RELIABLE)
        self._info_pub = pub(DiagnosticArray, topics.POLICY_INFO, QOS_LATCHED, lifecycle=False)
        self._diag_pub = pub(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, lifecycle=False)
        self._make_msgs()

        # Task topics before joint_states: when both are waiting, the step sees this tick's task values.
        for name in self.obs.topic_sizes:
            self.io.subscribe(Float64MultiArray, name, self._topic_callback(name), QOS_STATE, latest_only=True)
        self.io.subscribe(JointState, self.js_topic, self._on_joint_states, QOS_STATE, latest_only=True)
        self.add_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE)
        self._latest_js = None
        self._names_seen: list[str] | None = None
        self._reset_stats()
        self.io.start()  # receive joint_states while inactive: activation checks their names
        self._publish_info()
        self.get_logger().info(
            f"configured: {p.policy_path} ({meta.policy_type}, version {meta.content_hash[:12]}) for {spec.name} at "
            f"{meta.control_rate_hz:g} Hz, trigger {p.trigger}, obs {[s.name for s in meta.obs_layout]}, "
            f"max observation age {self.obs.max_age_ns / 1e6:.0f} ms")
        return SUCCESS

    @staticmethod
    def _model_robot(path: str) -> str:
        """The robot named in the model's metadata (the node loads the model properly just after)."""
        sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        robot = sess.get_modelmeta().custom_metadata_map.get("robot", "")
        if not robot:
            raise LayoutError("the model's metadata names no robot (not exported by `r2s export`?); set robot")
        return robot

    def on_activate(self, state):
        deadline = time.monotonic() + self.p.activation_timeout_s
        while self._names_seen is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self._names_seen is None:
            return self.fail(f"activate: no joint_states on {self.js_topic} within {self.p.activation_timeout_s:g} s")
        names = self._names_seen
        missing, extra = self.obs.joints.check(names)
        if missing or (extra and self.p.strict_joint_names):
            return self.fail(
                f"activate: refused — joint_states on {self.js_topic} do not match the model's joints: "
                f"missing {missing}, extra {extra}; the model ({self.spec.name}) expects "
                f"{list(self.policy.meta.joint_names)}, joint_states has {names}")
        if extra:
            self.get_logger().warning(f"joint_states carry joints the model ignores: {extra}")
        with self._lock:
            self.policy.reset()
            self.trigger.reset()
            self._reset_stats()
        if self.p.trigger == "timer":
            self.add_timer(self.period_s, self._on_timer)
        self.add_timer(self.p.diagnostics_period_s, self._publish_diagnostics)
        self.active = True
        return super().on_activate(state)

    def on_cleanup(self, state):
        result = super().on_cleanup(state)
        self._pubs, self.policy = {}, None
        return result

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def _topic_callback(self, name: str):
        def callback(msg: Float64MultiArray) -> None:
            self.obs.topic_message(name, msg.data, self.now_ns())

        return callback

    def _on_joint_states(self, msg: JointState) -> None:
        now = self.now_ns()
        self._names_seen = list(msg.name)  # activation names the joints of whatever arrives, even if refused here
        # Names, lengths and a plausible stamp, or the message is dropped (BadMessage → counted by the node base).
        t = self.obs.check_joint_states(msg, now)
        self._latest_js = (msg, t)
        if not self.active or self.p.trigger != "joint_states":
            return
        # Decimation runs on the messages' own stamps (regular at the publisher, whatever the delivery jitter).
        if self.trigger(t):
            with self._lock:
                self._step(msg, t, now)

    def _on_timer(self) -> None:
        latest = self._latest_js
        if latest is None:
            return
        with self._lock:
            self._step(*latest, self.now_ns())

    def _on_episode(self, msg: DiagnosticArray) -> None:
        event, _ = episode_event(msg, topics.EPISODE)
        if event == "start":
            with self._lock:
                self.policy.reset()

    # ---- the control step -----------------------------------------------------------------------------------------
    def _step(self, js: JointState, js_time_ns: int, now: int) -> None:
        """One control step. A refused observation or a failed inference still publishes a proposal, of NaN, so
        the safety node holds at once instead of waiting for its watchdog."""
        t0 = time.perf_counter()
        stamp = js_time_ns
        command = None
        try:
            obs = self.obs.assemble(js, js_time_ns, now)
            stamp = obs.stamp_ns
            command = self.policy.step(obs.values)
        except ObservationRefused as e:
            if e.kind == "waiting":
                self.waiting += 1
            else:
                self.stale += 1
            self.log_throttled(e.kind, f"no command: {e}")
        except (ObservationError, PolicyOutputError) as e:
            self.refused += 1
            self.log_throttled("refused", f"no command: {e}", level="error")
        except Exception as e:  # an inference error must not leave the last command standing
            self.refused += 1
            self.callback_failed("step", e)
        if self._last_step_ns is not None:
            self.periods_ms.append((now - self._last_step_ns) / 1e6)
        self._last_step_ns = now
        ok = command is not None
        values = command.tolist() if ok else [float("nan")] * len(self.policy.meta.action_names)
        prop = self._proposal
        set_stamp(prop.header.stamp, stamp)
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
            set_stamp(self._obs_msg.header.stamp, stamp)
            self._obs_msg.position = self.obs.obs.tolist()
            self._pubs["observation"].publish(self._obs_msg)
        self.steps += 1
        self.step_ms.append((time.perf_counter() - t0) * 1e3)
        self.obs_age_ms.append((now - stamp) / 1e6)

    def _make_msgs(self) -> None:
        meta = self.policy.meta
        names = list(meta.action_names)
        period_ns = int(self.period_s * 1e9)
        self._proposal = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint()])
        tfs = self._proposal.points[0].time_from_start
        tfs.sec, tfs.nanosec = divmod(period_ns, 1_000_000_000)
        self._traj = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint(time_from_start=tfs)])
        self._fwd = Float64MultiArray()
        self._obs_msg = JointState(name=self.obs.names)

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
            "stale": str(stale), "waiting_for_topics": str(waiting), **self.health_values(),
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
