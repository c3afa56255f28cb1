"""``operator_node``: a scripted operator in the ROS 2 graph — HABC's simulated human, taking over from the policy.

It watches what a human beside the robot would: the policy's observation of each step (``/r2s/policy/observation``,
the task's named segments) and the task's success flag (``/r2s/task/success``). When the distance to done stalls
(``stack.operator.SimulatedOperator``: ``stall_steps``, ``stall_eps``, ``takeover_steps``, ``max_takeovers``) it
asks the safety node for authority (``/r2s/authority_request`` ``human``) and, every step of the takeover, sends
the task's baseline controller's joint target for ``dims`` (``/r2s/teleop/joint_command``, joints by name, stamped
with the observation's stamp) — the other joints stay with the policy — then hands back (``policy``). The safety
node muxes, limits and publishes authority and the per-joint intervention mask, and the recorder stores them: the
bag is the one a real robot with a human at a leader arm produces. Each episode start (``/r2s/episode``) resets it.

``operator: keyboard`` and ``operator: gamepad`` are a human's takeover on the same two topics (``stack.teleop``):
the held joints' targets start at the measured joints (``joint_states``) and move by key jogs (``jog_step_rad``)
or gamepad axes (``/joy``, ``sensor_msgs/Joy`` from the standard joy node; ``gamepad`` JSON maps axes, the deadman
and the episode buttons), inside the spec's position limits minus ``position_margin`` (the safety node's). The keys
come from ``input`` (a file or FIFO, one key, run of keys or mark per line) or, empty, this process's stdin (a
terminal: keys act at once, feedback on that terminal). Every observation step the node sends the held joints'
targets stamped with the observation's stamp, so each step's decision joins its step in the bag. An episode end
releases (the next episode begins with the policy); episode keys and buttons publish ``/r2s/episode_event``. A
malformed Joy message (too few axes or buttons, a non-finite value) is dropped and counted, never an error.

Run: ``python -m stack.ros.operator_node --ros-args -p task:=push`` (``r2s record`` starts it).
"""

from __future__ import annotations

import json
import os
import sys
import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState, Joy
from std_msgs.msg import Bool, String

from stack.ros import topics
from stack.ros.common import (
    QOS_RELIABLE, QOS_STATE, SUCCESS, BadMessage, JointMatcher, R2sNode, declare_parameters, load_robot, run_node,
    status_array,
)
from stack.ros.episode_tracker import episode_event

OPERATOR_NODE = "r2s_operator"
OPERATORS = ("scripted", "keyboard", "gamepad")
"""Operators this node can be."""
HUMAN = ("keyboard", "gamepad")

PARAMS = {
    "robot": ("so101", "registered robot name"),
    "task": ("", "task (sim.registry name) whose baseline controller the operator runs and whose progress it watches"),
    "operator": ("scripted", "scripted (the task's baseline on stalled progress) | keyboard | gamepad"),
    "stall_steps": (20, "take over when the distance to done has not dropped by stall_eps over this many steps"),
    "stall_eps": (0.005, "progress (m) that counts as not stalled"),
    "takeover_steps": (40, "steps the operator keeps authority once it took over"),
    "max_takeovers": (2, "takeovers per episode at most"),
    "dims": ("", "JSON list of the joint indices (spec order) the operator commands; empty: all (keyboard: the "
                 "initial selection; gamepad: what the deadman takes over, unless its config says)"),
    "progress": ('{"distance": 1.0, "ee_object_distance": 0.5}', "JSON weights of the task's distances"),
    "max_step_rad": (0.1, "the operator's target moves at most this far from the measured joints per step (0: off)"),
    "observation_topic": (topics.OBSERVATION, "the policy's observation of each step"),
    "input": ("", "keyboard: a file or FIFO of keys (one key, run of keys or mark per line); empty: stdin"),
    "jog_step_rad": (0.05, "keyboard: how far one +/- moves the selected held joints' targets"),
    "position_margin": (0.0, "keyboard/gamepad: targets stay this far inside the position limits (the safety "
                             "node's position_margin)"),
    "joy_topic": ("/joy", "gamepad: sensor_msgs/Joy input (the joy node's)"),
    "gamepad": ("", "gamepad: JSON of stack.teleop.GamepadConfig fields (axes, speed, deadzone, deadman, marks, "
                    "timeout_s); empty: an Xbox-style pad"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class OperatorNode(R2sNode):
    def __init__(self):
        super().__init__(OPERATOR_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.takeover = None

    def on_configure(self, state):
        from stack.operator import OperatorConfig, ScriptedTakeover

        p = self.p
        if p.operator not in OPERATORS:
            return self.fail(f"operator: {p.operator!r} is not built; available: {list(OPERATORS)}")
        if p.operator in HUMAN:
            return self._configure_human()
        try:
            self.spec = spec = load_robot(p.robot)
            dims = tuple(int(d) for d in json.loads(p.dims)) if p.dims.strip() else None
            if dims is not None and not all(0 <= d < spec.num_joints for d in dims):
                raise ValueError(f"dims: {list(dims)}; expected joint indices in [0, {spec.num_joints})")
            cfg = OperatorConfig(progress=json.loads(p.progress), stall_steps=p.stall_steps, stall_eps=p.stall_eps,
                                 takeover_steps=p.takeover_steps, max_takeovers=p.max_takeovers, dims=dims)
            self.takeover = ScriptedTakeover(p.task, cfg, p.max_step_rad if p.max_step_rad > 0 else None)
        except (KeyError, ValueError, TypeError) as e:
            return self.fail(f"configure: {type(e).__name__}: {e}")
        self.dims = np.arange(spec.num_joints) if dims is None else np.asarray(dims)
        self.obs_dim = sum(s.size for s in self.takeover.layout)
        self._teleop = JointState(name=[spec.joint_names[i] for i in self.dims])
        self._teleop_pub = self.add_publisher(JointState, topics.TELEOP_COMMAND, QOS_RELIABLE)
        self._authority_pub = self.add_publisher(String, topics.AUTHORITY_REQUEST, QOS_RELIABLE)
        self._diag_pub = self.add_publisher(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, lifecycle=False)
        self.io.subscribe(JointState, p.observation_topic, self._on_observation, QOS_RELIABLE)
        self.add_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE)
        self.add_subscription(Bool, topics.SUCCESS, self._on_success, QOS_RELIABLE)
        self.in_episode = False
        self.operating = False
        self.success = False
        self.takeovers = self.commands = 0
        self.get_logger().info(f"configured: scripted operator on {p.task} (baseline takes over joints "
                               f"{[spec.joint_names[i] for i in self.dims]} after {p.stall_steps} stalled steps)")
        return SUCCESS

    def _configure_human(self):
        from stack.teleop import GamepadConfig, GamepadTeleop, KeyboardTeleop, Takeover

        p = self.p
        try:
            self.spec = spec = load_robot(p.robot)
            lo, hi = spec.pos_limits
            takeover = Takeover(lo + p.position_margin, hi - p.position_margin, spec.joint_names)
            if p.operator == "keyboard":
                self.human = KeyboardTeleop(takeover, p.jog_step_rad)
                if p.dims.strip():  # pre-selected: t takes these over
                    self.human.selected = {int(d) for d in takeover._dims(json.loads(p.dims))}
            else:
                cfg = GamepadConfig.from_json(p.gamepad)
                if cfg.dims is None and p.dims.strip():
                    cfg.dims = tuple(int(d) for d in json.loads(p.dims))
                self.human = GamepadTeleop(takeover, cfg)
        except (KeyError, ValueError, TypeError) as e:
            return self.fail(f"configure: {type(e).__name__}: {e}")
        self.joints = JointMatcher(spec.joint_names, spec.joint_states_topic)
        self.q = None
        self._teleop = JointState()
        self._teleop_pub = self.add_publisher(JointState, topics.TELEOP_COMMAND, QOS_RELIABLE)
        self._authority_pub = self.add_publisher(String, topics.AUTHORITY_REQUEST, QOS_RELIABLE)
        self._marks_pub = self.add_publisher(String, topics.EPISODE_EVENT, QOS_RELIABLE)
        self._diag_pub = self.add_publisher(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, lifecycle=False)
        self.io.subscribe(JointState, spec.joint_states_topic, self._on_joint_states, QOS_STATE, latest_only=True)
        self.io.subscribe(JointState, p.observation_topic, self._on_human_step, QOS_RELIABLE)
        self.add_subscription(DiagnosticArray, topics.EPISODE, self._on_human_episode, QOS_RELIABLE)
        self.add_subscription(String, topics.AUTHORITY, self._on_authority, QOS_RELIABLE)
        if p.operator == "gamepad":
            self.add_subscription(Joy, p.joy_topic, self._on_joy, QOS_STATE)
        self.requested = "policy"
        self.acked = True
        self.t_request = 0.0
        self.in_episode = False
        self.operating = False
        self.success = False
        self.takeovers = self.commands = self.marks = 0
        self._reader = None
        self._tty = None
        self.get_logger().info(f"configured: {p.operator} operator (joints {list(spec.joint_names)})")
        return SUCCESS

    def on_activate(self, state):
        self.active = True
        self.io.start()
        self.add_timer(self.p.diagnostics_period_s, self._publish_diagnostics)
        if self.p.operator == "keyboard" and self._reader is None:
            self._reader = threading.Thread(target=self._read_keys, daemon=True, name="r2s_keys")
            self._reader.start()
        return super().on_activate(state)

    # ---- a human: keyboard / gamepad ------------------------------------------------------------------------------
    def _say(self, text: str) -> None:
        try:
            print(f"[r2s operator] {text}", file=self._tty or sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def _read_keys(self) -> None:
        from stack.ros.keyboard_operator import inputs
        from stack.teleop import HELP, KeyboardTeleop

        is_key = KeyboardTeleop.is_key
        old = None
        stream = None
        try:
            if self.p.input:
                stream = open(self.p.input)  # noqa: SIM115 - a FIFO blocks here until its writer opens it
            else:
                stream = sys.stdin
            at_once = stream.isatty()
            if at_once:
                import termios
                import tty

                self._tty = open(os.ttyname(stream.fileno()), "w")  # noqa: SIM115 - the operator's feedback
                old = termios.tcgetattr(stream.fileno())
                tty.setcbreak(stream.fileno())  # keys at once; Ctrl-C still interrupts
            self._say(HELP)
            for kind, text in inputs(stream, is_key, at_once, err=self._tty or sys.stderr):
                if kind == "mark":
                    self._mark(text)
                    continue
                with self._lock:
                    try:
                        mark = self.human.key(text)
                    except KeyError as e:
                        self._say(f"{e.args[0]}; {HELP}")
                        continue
                    status = self.human.status()
                if mark:
                    self._mark(mark)
                else:
                    self._say(status + (" (waiting for joint_states)" if self.human.pending else ""))
                if self.human.quit:
                    self._say("quit: the policy has every joint")
                    return
            self._say("input ended; the takeover stays as it is (r releases)")
        except Exception as e:  # the reader never ends the node; the robot stays with the safety node's limits
            self.get_logger().error(f"keyboard input: {type(e).__name__}: {e}")
        finally:
            if old is not None:
                import termios

                termios.tcsetattr(stream.fileno(), termios.TCSADRAIN, old)
            if stream is not None and stream is not sys.stdin:
                stream.close()

    def _mark(self, text: str) -> None:
        self._marks_pub.publish(String(data=text))
        self.marks += 1
        self._say(f"episode mark: {text}")

    def _on_joint_states(self, msg: JointState) -> None:
        q = self.joints.read(msg, "position")
        if np.all(np.isfinite(q)):
            self.q = q

    def _on_joy(self, msg) -> None:
        t = self.now_ns() * 1e-9
        with self._lock:
            before = self.human.malformed
            marks = self.human.joy(msg.axes, msg.buttons, t)
            bad = self.human.malformed > before
        if bad:
            raise BadMessage(f"{self.p.joy_topic}: {self.human.last_error} (ignored; "
                             f"{self.human.malformed} so far)")
        for m in marks:
            self._mark(m)

    def _on_human_episode(self, msg: DiagnosticArray) -> None:
        event, _ = episode_event(msg, topics.EPISODE)
        with self._lock:
            self.in_episode = event == "start"
            if event == "end" and self.human.t.held.any():
                self.human.release()
                self._say("episode ended: released, the policy has every joint")

    def _on_authority(self, msg: String) -> None:
        """The safety node's authority per executed command: acknowledges this node's request; a change away from
        an acknowledged ``human`` it did not ask for (an e-stop reset) releases the takeover."""
        with self._lock:
            if msg.data == self.requested:
                self.acked = True
            elif self.acked and self.requested == "human":
                self.human.release()
                self.operating = False
                self.requested = msg.data
                self._say(f"the safety node gave authority to {msg.data}: released (take over again to resume)")

    def _request(self, authority: str) -> None:
        """Ask the safety node for ``authority``; re-asked every 0.25 s until it says so (a request sent before the
        graph's discovery completed is lost)."""
        now = self.now_ns() * 1e-9
        if authority != self.requested or (not self.acked and now - self.t_request > 0.25):
            self._authority_pub.publish(String(data=authority))
            self.acked = authority == self.requested and self.acked
            self.requested = authority
            self.t_request = now

    def _on_human_step(self, msg: JointState) -> None:
        with self._lock:
            q = self.q if self.q is not None else np.full(self.spec.num_joints, np.nan)
            if self.p.operator == "keyboard":
                cmd = self.human.step(q)
            else:
                cmd = self.human.step(q, self.now_ns() * 1e-9)
            if cmd.authority == "human":
                if not self.operating:
                    self.operating = True
                    self.takeovers += 1
                    self.get_logger().info(f"taking over {[self.spec.joint_names[i] for i in cmd.dims]}")
                self._teleop.header.stamp = msg.header.stamp
                self._teleop.name = [self.spec.joint_names[i] for i in cmd.dims]
                self._teleop.position = cmd.targets.tolist()
                self._teleop_pub.publish(self._teleop)  # before the request: the safety node has a command at once
                self.commands += 1
            self.operating = cmd.authority == "human"
            self._request(cmd.authority)

    def on_deactivate(self, state):
        with self._lock:
            if self.p.operator in HUMAN:  # nothing held over into a re-activation
                self.human.release()
            self._hand_back()
        self.io.stop()
        return super().on_deactivate(state)

    def on_shutdown(self, state):
        self.io.stop()
        if self.takeover is not None:
            self.takeover.close()
        if getattr(self, "_tty", None) is not None:
            self._tty.close()
        return super().on_shutdown(state)

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def _on_episode(self, msg: DiagnosticArray) -> None:
        event, values = episode_event(msg, topics.EPISODE)
        with self._lock:
            self._hand_back()
            self.in_episode = event == "start"
            self.success = False
            if event == "start":
                self.takeover.reset()

    def _on_success(self, msg: Bool) -> None:
        self.success = bool(msg.data)

    def _on_observation(self, msg: JointState) -> None:
        obs = np.asarray(msg.position, dtype=np.float64)
        with self._lock:
            if not self.in_episode or obs.shape != (self.obs_dim,) or not np.all(np.isfinite(obs)):
                return  # between episodes, or a step the policy refused: nothing to judge
            target = self.takeover.step(obs, self.success)
            if target is None:
                self._hand_back()
                return
            if not self.operating:
                self.operating = True
                self.takeovers += 1
                self._authority_pub.publish(String(data="human"))
                self.get_logger().info(f"taking over (takeover {self.takeovers})")
            self._teleop.header.stamp = msg.header.stamp
            self._teleop.position = target[self.dims].tolist()
            self._teleop_pub.publish(self._teleop)
            self.commands += 1

    def _hand_back(self) -> None:
        if self.operating:
            self.operating = False
            self._authority_pub.publish(String(data="policy"))

    def _publish_diagnostics(self) -> None:
        values = {"operator": self.p.operator, "operating": str(self.operating), "takeovers": str(self.takeovers),
                  "commands": str(self.commands), **self.health_values()}
        if self.p.operator in HUMAN:
            values["episode_marks"] = str(self.marks)
            values["held"] = json.dumps([self.spec.joint_names[i] for i in np.flatnonzero(self.human.t.held)])
            if self.p.operator == "gamepad":
                values["malformed_joy"] = str(self.human.malformed)
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: operator", "ok", self.spec.name,
                                            values))


def main(argv: list[str] | None = None) -> int:
    return run_node(OperatorNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
