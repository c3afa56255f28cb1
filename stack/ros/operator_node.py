"""``operator_node``: a scripted operator in the ROS 2 graph — HABC's simulated human, taking over from the policy.

It watches what a human beside the robot would: the policy's observation of each step (``/r2s/policy/observation``,
the task's named segments) and the task's success flag (``/r2s/task/success``). When the distance to done stalls
(``stack.operator.SimulatedOperator``: ``stall_steps``, ``stall_eps``, ``takeover_steps``, ``max_takeovers``) it
asks the safety node for authority (``/r2s/authority_request`` ``human``) and, every step of the takeover, sends
the task's baseline controller's joint target for ``dims`` (``/r2s/teleop/joint_command``, joints by name, stamped
with the observation's stamp) — the other joints stay with the policy — then hands back (``policy``). The safety
node muxes, limits and publishes authority and the per-joint intervention mask, and the recorder stores them: the
bag is the one a real robot with a human at a leader arm produces. Each episode start (``/r2s/episode``) resets it.

Only ``operator: scripted`` is built; a keyboard or gamepad operator would publish on the same two topics.

Run: ``python -m stack.ros.operator_node --ros-args -p task:=push`` (``r2s record`` starts it).
"""

from __future__ import annotations

import json
import threading

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, String

from stack.ros import topics
from stack.ros.common import (
    QOS_RELIABLE, SUCCESS, R2sNode, declare_parameters, load_robot, run_node, status_array,
)
from stack.ros.episode_tracker import episode_event

OPERATOR_NODE = "r2s_operator"
OPERATORS = ("scripted",)
"""Operators this node can be; keyboard and gamepad are not built."""

PARAMS = {
    "robot": ("so101", "registered robot name"),
    "task": ("", "task (sim.registry name) whose baseline controller the operator runs and whose progress it watches"),
    "operator": ("scripted", "scripted (the task's baseline on stalled progress); keyboard/gamepad: not built"),
    "stall_steps": (20, "take over when the distance to done has not dropped by stall_eps over this many steps"),
    "stall_eps": (0.005, "progress (m) that counts as not stalled"),
    "takeover_steps": (40, "steps the operator keeps authority once it took over"),
    "max_takeovers": (2, "takeovers per episode at most"),
    "dims": ("", "JSON list of the joint indices (spec order) the operator commands; empty: all"),
    "progress": ('{"distance": 1.0, "ee_object_distance": 0.5}', "JSON weights of the task's distances"),
    "max_step_rad": (0.1, "the operator's target moves at most this far from the measured joints per step (0: off)"),
    "observation_topic": (topics.OBSERVATION, "the policy's observation of each step"),
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

    def on_activate(self, state):
        self.active = True
        self.io.start()
        self.add_timer(self.p.diagnostics_period_s, self._publish_diagnostics)
        return super().on_activate(state)

    def on_deactivate(self, state):
        with self._lock:
            self._hand_back()
        self.io.stop()
        return super().on_deactivate(state)

    def on_shutdown(self, state):
        self.io.stop()
        if self.takeover is not None:
            self.takeover.close()
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
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: operator", "ok", self.spec.name,
                                            values))


def main(argv: list[str] | None = None) -> int:
    return run_node(OperatorNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
