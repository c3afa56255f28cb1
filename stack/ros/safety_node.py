"""``safety_node``: between the policy and the hardware — clamps, rate-limits, watches, latches the e-stop, muxes
teleoperation (decisions in ``stack.ros.safety``).

Inputs: ``joint_states`` (measured positions), the policy's proposal, a human's teleop command, a baseline's
command, an authority request, the e-stop topic and services. Output: the executed command on the robot's hardware
topic(s) — ``std_msgs/Float64MultiArray`` for a forward_command_controller and/or ``trajectory_msgs/JointTrajectory``
for a joint_trajectory_controller (``command_interface``) — then, for the log, the stamped executed command, the
authority, the intervention mask and the status (``stack.ros.topics``).

A command arriving from the source that has authority is checked and forwarded at once (no added period of delay).
A watchdog timer (``watchdog_rate_hz``) holds position when joint_states or the commanding source go quiet for
``watchdog_timeout_s`` (default 1.5 control periods; checked at 4× the control rate up to 200 Hz, so a hold begins
within two control periods at 20–100 Hz) and re-publishes the hold once per control period: ros2_control's
forward_command_controller would otherwise keep executing the last command forever.

Run: ``python -m stack.ros.safety_node --ros-args --params-file launch/so101.yaml`` (console script
``r2s-safety-node``); lifecycle: configure → activate.
"""

from __future__ import annotations

import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from stack.ros import topics
from stack.ros.common import (
    QOS_LATCHED, QOS_RELIABLE, QOS_STATE, SUCCESS, JointMatcher, JointNameError, R2sNode, declare_parameters,
    load_robot, run_node, set_stamp, status_array,
)
from stack.ros.safety import AUTHORITIES, Decision, SafetySupervisor

PARAMS = {
    "robot": ("so101", "registered robot name (robots.get_robot)"),
    "control_rate_hz": (0.0, "override of the spec's control rate (0: the spec's)"),
    "joint_states_topic": ("", "measured joint states (empty: the spec's)"),
    "proposal_topic": (topics.PROPOSAL, "the policy's stamped JointTrajectory proposal"),
    "teleop_topic": (topics.TELEOP_COMMAND, "a human's JointState command (joints by name, subset allowed)"),
    "baseline_topic": (topics.BASELINE_COMMAND, "a baseline controller's JointTrajectory command"),
    "authority_request_topic": (topics.AUTHORITY_REQUEST, "String: policy | human | baseline"),
    "estop_topic": (topics.ESTOP, "Bool: true latches the e-stop"),
    "initial_authority": ("policy", "authority at activation"),
    "command_interface": ("forward", "hardware interface: forward | trajectory | both"),
    "command_topic": ("", "forward_command_controller topic (empty: the spec's)"),
    "trajectory_topic": ("", "joint_trajectory_controller topic (empty: the spec's)"),
    "watchdog_timeout_s": (0.0, "input age that triggers a hold (0: 1.5 control periods)"),
    "teleop_timeout_s": (0.5, "teleop input age that triggers a hold while a human has authority"),
    "watchdog_rate_hz": (0.0, "watchdog check rate (0: 4x the control rate, at most 200 Hz)"),
    "velocity_scale": (1.0, "fraction of each joint's vel_max the command may move at"),
    "position_margin": (0.0, "distance kept from each position limit (rad)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class SafetyNode(R2sNode):
    def __init__(self):
        super().__init__(topics.SAFETY_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.sup: SafetySupervisor | None = None
        self._tmrs = []
        self._pubs = {}

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        try:
            self.spec = spec = load_robot(p.robot, p.control_rate_hz)
        except KeyError as e:
            return self.fail(f"configure: {e}")
        if p.command_interface not in ("forward", "trajectory", "both"):
            return self.fail(f"command_interface: {p.command_interface!r}; expected forward, trajectory or both")
        if p.initial_authority not in AUTHORITIES:
            return self.fail(f"initial_authority: {p.initial_authority!r}; expected one of {list(AUTHORITIES)}")
        period = spec.control_period_s
        self.timeout_s = p.watchdog_timeout_s or 1.5 * period
        try:
            self.sup = SafetySupervisor(spec, self.timeout_s, p.teleop_timeout_s, p.velocity_scale, p.position_margin)
        except ValueError as e:
            return self.fail(f"configure: {e}")
        self.sup.set_authority(p.initial_authority)
        self.js_topic = p.joint_states_topic or spec.joint_states_topic
        self.joints = JointMatcher(spec.joint_names, self.js_topic)
        self.proposal_joints = JointMatcher(spec.joint_names, p.proposal_topic)
        self.baseline_joints = JointMatcher(spec.joint_names, p.baseline_topic)

        pub = self.create_lifecycle_publisher
        self._pubs = {}
        if p.command_interface in ("forward", "both"):
            self._pubs["forward"] = pub(Float64MultiArray, p.command_topic or spec.command_topic, QOS_RELIABLE)
        if p.command_interface in ("trajectory", "both"):
            self._pubs["trajectory"] = pub(JointTrajectory, p.trajectory_topic or spec.trajectory_topic, QOS_RELIABLE)
        self._pubs["executed"] = pub(JointTrajectory, topics.EXECUTED, QOS_RELIABLE)
        self._pubs["authority"] = pub(String, topics.AUTHORITY, QOS_RELIABLE)
        self._pubs["mask"] = pub(Float64MultiArray, topics.INTERVENTION_MASK, QOS_RELIABLE)
        self._pubs["status"] = pub(String, topics.SAFETY_STATUS, QOS_RELIABLE)
        self._estop_pub = self.create_publisher(Bool, topics.ESTOP_STATE, QOS_LATCHED)
        self._diag_pub = self.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE)

        # Latency-critical inputs in the subscription loop; the rest in the executor.
        self.io.subscribe(JointState, self.js_topic, self._on_joint_states, QOS_STATE)
        self.io.subscribe(JointTrajectory, p.proposal_topic, self._on_proposal, QOS_RELIABLE)
        self._subs = [
            self.create_subscription(JointState, p.teleop_topic, self._on_teleop, QOS_RELIABLE),
            self.create_subscription(JointTrajectory, p.baseline_topic, self._on_baseline, QOS_RELIABLE),
            self.create_subscription(String, p.authority_request_topic, self._on_authority_request, QOS_RELIABLE),
            self.create_subscription(Bool, p.estop_topic, self._on_estop_topic, QOS_RELIABLE),
            self.create_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE),
        ]
        self._srvs = [
            self.create_service(Trigger, topics.ESTOP_SERVICE, self._srv_estop),
            self.create_service(Trigger, topics.RESET_ESTOP_SERVICE, self._srv_reset),
        ]
        self._publish_estop_state()
        self._hw_msgs()
        self.outputs = self.limited = 0
        self.get_logger().info(
            f"configured for {spec.name} at {spec.control_rate_hz:g} Hz: hardware {p.command_interface} "
            f"({', '.join(t.topic_name for k, t in self._pubs.items() if k in ('forward', 'trajectory'))}), "
            f"watchdog {self.timeout_s * 1e3:.0f} ms")
        return SUCCESS

    def on_activate(self, state):
        spec = self.spec
        rate = self.p.watchdog_rate_hz or min(4.0 * spec.control_rate_hz, 200.0)
        self._tmrs = [self.create_timer(self.p.diagnostics_period_s, self._publish_diagnostics)]
        self.active = True
        self.io.every(1.0 / rate, self._watchdog)  # in the subscription loop's thread, beside the inputs it watches
        self.io.start()
        return super().on_activate(state)

    def on_deactivate(self, state):
        with self._lock:
            # Leave the robot holding where it is: the forward controller would keep the last command forever.
            decision = self.sup.hold(self._t(), "deactivated")
            if decision is not None and self.active:
                self._publish(decision)
            self.active = False
        self.io.stop()
        for t in self._tmrs:
            self.destroy_timer(t)
        self._tmrs = []
        return super().on_deactivate(state)

    def on_cleanup(self, state):
        self.io.clear()
        for s in self._subs:
            self.destroy_subscription(s)
        for s in self._srvs:
            self.destroy_service(s)
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self.destroy_publisher(self._estop_pub)
        self.destroy_publisher(self._diag_pub)
        self._subs, self._srvs, self._pubs = [], [], {}
        return SUCCESS

    def on_shutdown(self, state):
        return SUCCESS

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def _t(self) -> float:
        return self.now_ns() * 1e-9

    def _on_joint_states(self, msg: JointState) -> None:
        try:
            q = self.joints.read(msg, "position")
        except (JointNameError, ValueError) as e:
            self.log_throttled("js", f"ignoring joint_states: {e}", level="error")
            return
        with self._lock:
            ok = self.sup.measured(q, self._t()) is None
        if not ok:
            self.log_throttled("js-nan", f"ignoring non-finite joint_states position {q.tolist()}", level="error")

    def _trajectory_values(self, msg: JointTrajectory, matcher: JointMatcher) -> np.ndarray | None:
        if not msg.points:
            self.log_throttled(matcher.topic, f"{matcher.topic}: trajectory without points ignored")
            return None
        try:
            idx = matcher.index(msg.joint_names)
        except JointNameError as e:
            self.log_throttled(matcher.topic, str(e), level="error")
            return None
        return np.asarray(msg.points[0].positions, dtype=np.float64)[idx]

    def _on_proposal(self, msg: JointTrajectory) -> None:
        values = self._trajectory_values(msg, self.proposal_joints)
        if values is None:
            return
        with self._lock:
            t = self._t()
            self.sup.command("policy", values, t, msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
            if self.sup.authority == "policy":
                self._decide_and_publish(t)

    def _on_baseline(self, msg: JointTrajectory) -> None:
        values = self._trajectory_values(msg, self.baseline_joints)
        if values is None:
            return
        with self._lock:
            t = self._t()
            self.sup.command("baseline", values, t, self.now_ns())
            if self.sup.authority == "baseline":
                self._decide_and_publish(t)

    def _on_teleop(self, msg: JointState) -> None:
        names = list(msg.name)
        commanded = np.array([n in names for n in self.spec.joint_names])
        unknown = [n for n in names if n not in self.spec.joint_names]
        if unknown or len(msg.position) != len(names):
            self.log_throttled("teleop", f"teleop command ignored: unknown joints {unknown} or {len(msg.position)} "
                                         f"positions for {len(names)} names", level="error")
            return
        values = np.zeros(self.spec.num_joints)
        values[commanded] = [msg.position[names.index(n)] for n in np.array(self.spec.joint_names)[commanded]]
        with self._lock:
            t = self._t()
            stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec or self.now_ns()
            self.sup.command("human", values, t, stamp, commanded)
            if self.sup.authority == "human":
                self._decide_and_publish(t)

    def _on_authority_request(self, msg: String) -> None:
        with self._lock:
            try:
                self.sup.set_authority(msg.data.strip())
            except ValueError as e:
                self.get_logger().error(str(e))
                return
        self.get_logger().info(f"authority: {self.sup.authority}")

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._latch_estop(f"e-stop topic {self.p.estop_topic}")

    def _srv_estop(self, request, response):
        self._latch_estop(f"service {topics.ESTOP_SERVICE}")
        response.success, response.message = True, "e-stop latched: holding position until reset"
        return response

    def _srv_reset(self, request, response):
        with self._lock:
            was = self.sup.estopped
            self.sup.reset_estop()
        self._publish_estop_state()
        self.get_logger().warn("e-stop reset" if was else "e-stop reset requested (was not latched)")
        response.success = True
        response.message = "e-stop released: the commanding source resumes with its next fresh command"
        return response

    def _latch_estop(self, by: str) -> None:
        with self._lock:
            first = not self.sup.estopped
            self.sup.estop()
            if self.active:
                self._decide_and_publish(self._t())  # hold at once, not at the next watchdog tick
        if first:
            self.get_logger().error(f"E-STOP latched by {by}: holding position until {topics.RESET_ESTOP_SERVICE}")
        self._publish_estop_state()

    def _on_episode(self, msg: DiagnosticArray) -> None:
        if msg.status and msg.status[0].message == "start":
            with self._lock:
                self.sup.resync(self._t())

    # ---- decisions and outputs ------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        with self._lock:
            t = self._t()
            sup = self.sup
            reason = sup.check(t)
            if reason is None:
                return
            if not sup.holding or sup.last_output_age(t) >= 0.95 * self.spec.control_period_s:
                self._decide_and_publish(t)

    def _decide_and_publish(self, t: float) -> None:
        was_holding = self.sup.holding
        decision = self.sup.decide(t)
        if self.sup.holding and not was_holding:
            self.log_throttled("hold", f"holding position: {self.sup.hold_reason}", period_s=1.0)
        elif was_holding and not self.sup.holding:
            self.get_logger().info("resuming: fresh commands from " + self.sup.authority)
        if decision is None or not self.active:
            return
        self._publish(decision)

    def _hw_msgs(self) -> None:
        names = list(self.spec.joint_names)
        self._fwd = Float64MultiArray()
        self._traj = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint()])
        period_ns = int(self.spec.control_period_s * 1e9)
        self._traj.points[0].time_from_start.sec, self._traj.points[0].time_from_start.nanosec = divmod(
            period_ns, 1_000_000_000)
        self._executed = JointTrajectory(joint_names=names, points=[JointTrajectoryPoint()])
        self._executed.points[0].time_from_start = self._traj.points[0].time_from_start
        self._mask = Float64MultiArray()

    def _publish(self, d: Decision) -> None:
        cmd = d.command.tolist()
        pubs = self._pubs
        if "forward" in pubs:
            self._fwd.data = cmd
            pubs["forward"].publish(self._fwd)
        if "trajectory" in pubs:
            self._traj.points[0].positions = cmd  # header.stamp zero: start now
            pubs["trajectory"].publish(self._traj)
        set_stamp(self._executed.header.stamp, d.stamp_ns)
        self._executed.points[0].positions = cmd
        pubs["executed"].publish(self._executed)
        pubs["authority"].publish(String(data=d.authority))
        self._mask.data = d.mask.tolist()
        pubs["mask"].publish(self._mask)
        pubs["status"].publish(String(data=d.status))
        self.outputs += 1
        self.limited += d.limited

    def _publish_estop_state(self) -> None:
        self._estop_pub.publish(Bool(data=bool(self.sup.estopped)))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            sup = self.sup
            level = DiagnosticStatus.ERROR if sup.estopped else (DiagnosticStatus.WARN if sup.holding
                                                                 else DiagnosticStatus.OK)
            values = {
                "authority": sup.authority, "estop": str(sup.estopped), "holding": str(sup.holding),
                "hold_reason": sup.hold_reason or "", "holds": str(sup.holds), "outputs": str(self.outputs),
                "limited": str(self.limited), "watchdog_timeout_ms": f"{self.timeout_s * 1e3:.1f}",
            }
            message = f"hold: {sup.hold_reason}" if sup.holding else "ok"
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: safety", message, self.spec.name,
                                            values, level))


def main(argv: list[str] | None = None) -> int:
    return run_node(SafetyNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
