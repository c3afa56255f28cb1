"""``safety_node``: between the policy and the hardware — clamps, limits velocity and acceleration, watches, latches
the e-stop, muxes teleoperation, homes (decisions in ``stack.ros.safety``).

Inputs: ``joint_states`` (measured positions), the policy's proposal, a human's teleop command, a baseline's
command, an authority request, the e-stop topic and services, episode events. Output: the executed command on the
robot's hardware topic(s) — ``std_msgs/Float64MultiArray`` for a forward_command_controller and/or
``trajectory_msgs/JointTrajectory`` for a joint_trajectory_controller (``command_interface``) — then, for the log,
the stamped executed command, the authority, the intervention mask and the status (``stack.ros.topics``).

A command arriving from the source that has authority is checked and forwarded at once (no added period of delay).
Every message is validated where it arrives (joint names, lengths, points, stamps not in the future); a bad one is
dropped, counted (``dropped`` in ``/diagnostics``) and warned about — no message ends the node. The measured and
command streams are taken newest-first in the subscription loop, so a flood costs copies, not decisions; the
watchdog runs in **its own thread** (``watchdog_rate_hz``), so it fires whatever the input load: it holds position
when joint_states or the commanding source go quiet for ``watchdog_timeout_s`` (default 1.5 control periods) or the
policy's observation gets older than ``max_obs_age_s``, and re-publishes the hold once per control period:
ros2_control's forward_command_controller would otherwise keep executing the last command forever.

Homing: ``home_on_activate`` / ``home_on_deactivate`` move the arm to ``home_pose`` along the limited path (status
``homing``); otherwise activation holds where the arm is until the policy commands, and deactivation holds. Either
way deactivation (also on SIGINT/SIGTERM, and after a failed transition) waits up to ``deactivate_timeout_s`` for
the command to come to rest and ends with a hold: the last command on the wire is never "ok". An e-stop reset
returns authority to ``reset_authority`` (``policy`` unless set) and publishes the change with a hold at once;
authority requests are refused while the e-stop is latched.

Between episodes: with ``home_between_episodes`` (a real robot whose operator marks episodes, ``episode_node``) each
episode ``end`` on ``/r2s/episode`` moves the arm to ``home_pose`` along the same limited path and holds it there
(status ``hold: between episodes``) until the next ``start``; a start during the homing lets it arrive first; an end
while the e-stop is latched holds where the arm is, after the reset too. Before the first start the arm holds where it
is (or, with ``home_on_activate``, at home).

Run: ``python -m stack.ros.safety_node --ros-args --params-file launch/so101.yaml`` (console script
``r2s-safety-node``); lifecycle: configure → activate.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from stack.ros import topics
from stack.ros.common import (
    QOS_LATCHED, QOS_RELIABLE, QOS_STATE, SUCCESS, BadMessage, JointMatcher, R2sNode, Ticker, declare_parameters,
    load_robot, run_node, set_stamp, stamp_ns, status_array,
)
from stack.ros.episode_tracker import episode_event, operator_marked
from stack.ros.messages import check_stamp, partial_joint_command, trajectory_positions
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
    "reset_authority": ("policy", "authority after an e-stop reset (whatever was requested before or during it)"),
    "command_interface": ("forward", "hardware interface: forward | trajectory | both"),
    "command_topic": ("", "forward_command_controller topic (empty: the spec's)"),
    "trajectory_topic": ("", "joint_trajectory_controller topic (empty: the spec's)"),
    "watchdog_timeout_s": (0.0, "input age that triggers a hold (0: 1.5 control periods)"),
    "max_obs_age_s": (0.0, "a policy proposal whose observation (its stamp) is older than this holds "
                           "(0: watchdog_timeout_s)"),
    "max_future_stamp_s": (0.05, "a message stamped further ahead of this node's clock is dropped; inputs that "
                                 "seem this far in the future (a clock stepped back) hold"),
    "teleop_timeout_s": (0.5, "teleop input age that triggers a hold while a human has authority"),
    "watchdog_rate_hz": (0.0, "watchdog check rate, in its own thread (0: 4x the control rate, at most 200 Hz)"),
    "velocity_scale": (1.0, "fraction of each joint's vel_max the command may move at"),
    "acceleration_scale": (1.0, "fraction of each joint's acc_max the command's speed may change at"),
    "position_margin": (0.0, "distance kept from each position limit (rad)"),
    "jump_tolerance_rad": (0.1, "a joint_states reading further from the last one than vel_max x 1.5 x elapsed + "
                                "this is implausible: refused and held through"),
    "confirm_samples": (3, "consecutive agreeing readings after which an implausible jump is accepted as real"),
    "home_pose": ("", "JSON list of joint positions of the safe pose (empty: the spec's home)"),
    "home_on_activate": (False, "move to home_pose at activation (false: hold where the arm is)"),
    "home_on_deactivate": (False, "move to home_pose at deactivation (false: hold where the arm is)"),
    "home_between_episodes": (False, "at each episode end move to home_pose and hold there until the next start "
                                     "(a robot whose operator marks episodes; the sim resets its own scene)"),
    "deactivate_timeout_s": (2.0, "how long deactivation waits for the command to come to rest (or home)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class SafetyNode(R2sNode):
    def __init__(self):
        super().__init__(topics.SAFETY_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.RLock()
        self.sup: SafetySupervisor | None = None
        self._watchdog_ticker: Ticker | None = None
        self._pubs: dict = {}

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        try:
            self.spec = spec = load_robot(p.robot, p.control_rate_hz)
        except KeyError as e:
            return self.fail(f"configure: {e}")
        if p.command_interface not in ("forward", "trajectory", "both"):
            return self.fail(f"command_interface: {p.command_interface!r}; expected forward, trajectory or both")
        for name in ("initial_authority", "reset_authority"):
            if getattr(p, name) not in AUTHORITIES:
                return self.fail(f"{name}: {getattr(p, name)!r}; expected one of {list(AUTHORITIES)}")
        period = spec.control_period_s
        self.timeout_s = p.watchdog_timeout_s or 1.5 * period
        try:
            self.home = self._home_pose()
            self.sup = SafetySupervisor(
                spec, self.timeout_s, p.teleop_timeout_s, p.velocity_scale, p.position_margin, p.acceleration_scale,
                max_obs_age_s=p.max_obs_age_s or self.timeout_s, max_future_s=p.max_future_stamp_s,
                jump_tolerance=p.jump_tolerance_rad, confirm_samples=p.confirm_samples,
                reset_authority=p.reset_authority)
        except ValueError as e:
            return self.fail(f"configure: {e}")
        self.sup.set_authority(p.initial_authority)
        self.max_future_ns = int(p.max_future_stamp_s * 1e9)
        self.js_topic = p.joint_states_topic or spec.joint_states_topic
        self.joints = JointMatcher(spec.joint_names, self.js_topic)
        self.proposal_joints = JointMatcher(spec.joint_names, p.proposal_topic)
        self.baseline_joints = JointMatcher(spec.joint_names, p.baseline_topic)

        # Plain publishers, gated by ``active`` here: the last hold must go out even from a failed transition.
        pub = self.add_publisher
        self._pubs = {}
        if p.command_interface in ("forward", "both"):
            self._pubs["forward"] = pub(Float64MultiArray, p.command_topic or spec.command_topic, QOS_RELIABLE, False)
        if p.command_interface in ("trajectory", "both"):
            self._pubs["trajectory"] = pub(JointTrajectory, p.trajectory_topic or spec.trajectory_topic, QOS_RELIABLE,
                                           False)
        self._pubs["executed"] = pub(JointTrajectory, topics.EXECUTED, QOS_RELIABLE, False)
        self._pubs["authority"] = pub(String, topics.AUTHORITY, QOS_RELIABLE, False)
        self._pubs["mask"] = pub(Float64MultiArray, topics.INTERVENTION_MASK, QOS_RELIABLE, False)
        self._pubs["status"] = pub(String, topics.SAFETY_STATUS, QOS_RELIABLE, False)
        self._estop_pub = pub(Bool, topics.ESTOP_STATE, QOS_LATCHED, False)
        self._diag_pub = pub(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, False)

        # Command and state streams in the subscription loop, newest first; the rest in the executor.
        self.io.subscribe(JointState, self.js_topic, self._on_joint_states, QOS_STATE, latest_only=True)
        self.io.subscribe(JointTrajectory, p.proposal_topic, self._on_proposal, QOS_RELIABLE, latest_only=True)
        self.io.subscribe(JointState, p.teleop_topic, self._on_teleop, QOS_RELIABLE, latest_only=True)
        self.io.subscribe(JointTrajectory, p.baseline_topic, self._on_baseline, QOS_RELIABLE, latest_only=True)
        self.add_subscription(String, p.authority_request_topic, self._on_authority_request, QOS_RELIABLE)
        self.add_subscription(Bool, p.estop_topic, self._on_estop_topic, QOS_RELIABLE)
        self.add_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE)
        self.add_service(Trigger, topics.ESTOP_SERVICE, self._srv_estop)
        self.add_service(Trigger, topics.RESET_ESTOP_SERVICE, self._srv_reset)
        self._publish_estop_state()
        self._hw_msgs()
        self.outputs = self.limited = self.nonfinite_measurements = self.refused_authority = 0
        self._episode_seen: str | None = None
        self.get_logger().info(
            f"configured for {spec.name} at {spec.control_rate_hz:g} Hz: hardware {p.command_interface} "
            f"({', '.join(t.topic_name for k, t in self._pubs.items() if k in ('forward', 'trajectory'))}), "
            f"watchdog {self.timeout_s * 1e3:.0f} ms, reset authority {p.reset_authority}")
        return SUCCESS

    def _home_pose(self) -> np.ndarray | None:
        text = self.p.home_pose.strip()
        if not text:
            home = self.spec.extra.get("home")
            return None if home is None else np.asarray(home, dtype=np.float64)
        try:
            home = np.asarray(json.loads(text), dtype=np.float64)
        except (ValueError, TypeError) as e:
            raise ValueError(f"home_pose: {text!r} is not a JSON list of numbers ({e})") from None
        if home.shape != (self.spec.num_joints,) or not np.all(np.isfinite(home)):
            raise ValueError(f"home_pose: expected {self.spec.num_joints} finite joint positions "
                             f"{list(self.spec.joint_names)}, got {text}")
        return home

    def on_activate(self, state):
        p = self.p
        if (p.home_on_activate or p.home_on_deactivate or p.home_between_episodes) and self.home is None:
            return self.fail(f"home_on_activate/home_on_deactivate/home_between_episodes: robot {self.spec.name} has "
                             "no home pose; set home_pose")
        with self._lock:
            self.sup.deactivated = False
            if p.home_on_activate:
                self.sup.start_homing(self.home)
            if p.home_between_episodes:  # no episode yet: nothing commands the arm before the operator's first start
                self.sup.park()
        rate = p.watchdog_rate_hz or min(4.0 * self.spec.control_rate_hz, 200.0)
        self.active = True
        self._watchdog_ticker = Ticker(self, 1.0 / rate, self._watchdog, "watchdog")
        self._watchdog_ticker.start()
        self.io.start()
        self.add_timer(p.diagnostics_period_s, self._publish_diagnostics)
        return super().on_activate(state)

    def on_deactivate(self, state):
        with self._lock:
            home = self.home if self.p.home_on_deactivate else None
            self.sup.deactivate(home)
            self._decide_and_publish(self._t())  # stop commanding the sources' targets now
        deadline = time.monotonic() + self.p.deactivate_timeout_s
        while time.monotonic() < deadline:  # the watchdog ramps the command to rest (or home) meanwhile
            with self._lock:
                if not self.sup.homing and self.sup.settled():
                    break
            time.sleep(0.01)
        self.last_words("deactivated")
        self.active = False
        self._stop_threads()
        return super().on_deactivate(state)

    def _stop_threads(self) -> None:
        if self._watchdog_ticker is not None:
            self._watchdog_ticker.stop()
            self._watchdog_ticker = None
        self.io.stop()

    def last_words(self, reason: str) -> None:
        """The last command: a hold where the command is now (no step), whatever state the node is in."""
        if self.sup is None or not self._pubs:
            return
        if not self._lock.acquire(timeout=1.0):
            self.get_logger().error("last words: the lock is held; sending the hold anyway")
        try:
            decision = self.sup.final(self._t(), reason)
            if decision is not None:
                self._publish(decision, force=True)
        finally:
            try:
                self._lock.release()
            except RuntimeError:
                pass

    def on_error(self, state):
        self._stop_threads()
        return super().on_error(state)

    def on_shutdown(self, state):
        self._stop_threads()
        return super().on_shutdown(state)

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def _t(self) -> float:
        return self.now_ns() * 1e-9

    def _on_joint_states(self, msg: JointState) -> None:
        q = self.joints.read(msg, "position")
        now = self.now_ns()
        stamp = check_stamp(self.js_topic, stamp_ns(msg.header.stamp), now, self.max_future_ns)
        with self._lock:
            refused = self.sup.measured(q, now * 1e-9, stamp)
        if refused is not None:
            if refused.startswith("non-finite"):
                self.nonfinite_measurements += 1
            self.log_throttled("js-refused", f"joint_states refused: {refused}", level="error")

    def _on_proposal(self, msg: JointTrajectory) -> None:
        values = trajectory_positions(msg, self.proposal_joints)
        now = self.now_ns()
        stamp = check_stamp(self.p.proposal_topic, stamp_ns(msg.header.stamp), now, self.max_future_ns)
        if not stamp:
            raise BadMessage(f"{self.p.proposal_topic}: no header.stamp (the policy stamps each proposal with its "
                             "observation's time; without it the observation's age cannot be checked)")
        self._command("policy", values, now, stamp)

    def _on_baseline(self, msg: JointTrajectory) -> None:
        values = trajectory_positions(msg, self.baseline_joints)
        now = self.now_ns()
        check_stamp(self.p.baseline_topic, stamp_ns(msg.header.stamp), now, self.max_future_ns)
        self._command("baseline", values, now, now)

    def _on_teleop(self, msg: JointState) -> None:
        values, commanded = partial_joint_command(self.p.teleop_topic, msg.name, msg.position, self.spec.joint_names)
        now = self.now_ns()
        stamp = check_stamp(self.p.teleop_topic, stamp_ns(msg.header.stamp), now, self.max_future_ns)
        self._command("human", values, now, stamp or now, commanded)

    def _command(self, source: str, values: np.ndarray, now_ns: int, stamp: int, commanded=None) -> None:
        with self._lock:
            t = now_ns * 1e-9
            sup = self.sup
            sup.command(source, values, t, stamp, commanded)
            if sup.authority == source and not sup.homing and not sup.deactivated and self.active:
                self._decide_and_publish(t, new_command=True)

    def _on_authority_request(self, msg: String) -> None:
        authority = msg.data.strip()
        if authority not in AUTHORITIES:
            raise BadMessage(f"{self.p.authority_request_topic}: {msg.data[:40]!r} is not one of {list(AUTHORITIES)}")
        with self._lock:
            before = self.sup.authority
            try:
                self.sup.set_authority(authority)
            except ValueError as e:
                self.refused_authority += 1
                self.log_throttled("authority", str(e), level="error")
                return
        if authority != before:
            self.get_logger().info(f"authority: {authority}")

    def _on_estop_topic(self, msg: Bool) -> None:
        if msg.data:
            self._latch_estop(f"e-stop topic {self.p.estop_topic}")

    def _srv_estop(self, request, response):
        self._latch_estop(f"service {topics.ESTOP_SERVICE}")
        response.success, response.message = True, "e-stop latched: holding position until reset"
        return response

    def _srv_reset(self, request, response):
        with self._lock:
            was = self.sup.reset_estop()
            if was and self.active:
                self._decide_and_publish(self._t())  # publishes the reset authority at once (holding)
            authority = self.sup.authority
        self._publish_estop_state()
        if was:
            self.get_logger().warning(f"e-stop reset: authority {authority}; holding until it sends a fresh command")
        else:
            self.get_logger().warning("e-stop reset requested (was not latched)")
        response.success = True
        response.message = f"e-stop released: authority {authority}, which resumes with its next fresh command"
        return response

    def _latch_estop(self, by: str) -> None:
        with self._lock:
            first = not self.sup.estopped
            self.sup.estop()
            if first and self.active:
                self._decide_and_publish(self._t())  # hold at once, not at the next watchdog tick
        if first:
            self.get_logger().error(f"E-STOP latched by {by}: holding position until {topics.RESET_ESTOP_SERVICE}")
            self._publish_estop_state()

    def _on_episode(self, msg: DiagnosticArray) -> None:
        event, values = episode_event(msg, topics.EPISODE)
        # A sim's start may have moved the robot (resync accepts that jump and restarts the limiter from it); an
        # operator's start on a real robot moves nothing, so a jump then stays a fault held through.
        if event == "start" and values["episode"] != self._episode_seen and not operator_marked(values):
            self._episode_seen = values["episode"]
            with self._lock:
                self.sup.resync(self._t())
        if not self.p.home_between_episodes:
            return
        with self._lock:
            if event == "end" and not self.sup.parked:
                self.sup.park(self.home)
                self.get_logger().info(f"episode {values['episode']} ended: "
                                       + ("homing, then holding" if self.sup.homing else "holding where it is (e-stop)")
                                       + " until the next start")
            elif event == "start" and self.sup.parked:
                self.sup.unpark()
                self.get_logger().info(f"episode {values['episode']} started: "
                                       + ("homing first" if self.sup.homing else "the sources command again"))

    # ---- decisions and outputs ------------------------------------------------------------------------------------
    def _watchdog(self) -> None:
        with self._lock:
            if not self.active:
                return
            t = self._t()
            if self.sup.due(t):
                self._decide_and_publish(t)

    def _decide_and_publish(self, t: float, new_command: bool = False) -> None:
        sup = self.sup
        was_holding, was_homing = sup.holding, sup.homing
        decision = sup.decide(t, new_command)
        if sup.holding and not was_holding:
            self.log_throttled("hold", f"holding position: {sup.hold_reason}", period_s=1.0)
        elif was_holding and not sup.holding:
            self.get_logger().info("resuming: " + ("homing" if sup.homing else "fresh commands from " + sup.authority))
        if was_homing and not sup.homing and decision is not None and decision.status == "homing":
            self.get_logger().info(f"homed: {np.round(decision.command, 4).tolist()}")
        if decision is not None:
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

    def _publish(self, d: Decision, force: bool = False) -> None:
        if not (self.active or force):
            return
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
                "hold_reason": sup.hold_reason or "", "holds": str(sup.holds), "homing": str(sup.homing),
                "between_episodes": str(sup.parked),
                "outputs": str(self.outputs), "limited": str(self.limited),
                "implausible_joint_states": str(sup.implausible),
                "nonfinite_joint_states": str(self.nonfinite_measurements),
                "refused_authority_requests": str(self.refused_authority), "reset_authority": sup.reset_authority,
                "watchdog_timeout_ms": f"{self.timeout_s * 1e3:.1f}",
                "max_obs_age_ms": f"{sup.max_obs_age_s * 1e3:.1f}",
                **self.health_values(),
            }
            message = f"hold: {sup.hold_reason}" if sup.holding else ("homing" if sup.homing else "ok")
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: safety", message, self.spec.name,
                                            values, level))


def main(argv: list[str] | None = None) -> int:
    return run_node(SafetyNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
