"""``episode_node``: episodes on a real robot, marked by the operator — start, end, success, failure.

No task on a robot says when an episode begins or how it went, and HABC needs outcomes: the operator says so. Marks
arrive on ``/r2s/episode_event`` (std_msgs/String ``start`` | ``end`` | ``success`` | ``failure``, optionally
``: note``; the keyboard operator's keys publish there) or through the services ``/r2s/episode/<mark>``
(std_srvs/Trigger: the same, with a reply saying what happened or why it was refused). ``OperatorEpisodes``
(``stack.ros.episode_tracker``) turns them into the ``/r2s/episode`` start/end events the sim publishes, so the
recorder stores them (with the policy version), the policy resets its history at each start, and the safety node
(``home_between_episodes``) homes the arm along its limited path after each end and holds it there until the next
start. ``success`` / ``failure`` end the open episode with that outcome; ``end`` ends it without one: the episode is
kept in the log and excluded from outcome labels (``r2s logs info`` counts it); ``start`` with an episode open ends
that one first, without an outcome. At deactivation an open episode ends without an outcome (reason ``stopped``).

A message that is not one of the marks is dropped, counted (``dropped`` in ``/diagnostics``) and warned about; a
mark that cannot apply (an outcome with no episode open) is refused, counted (``refused``) and logged. Neither, nor
any flood of them, ends the node.

Run: ``python -m stack.ros.episode_node --ros-args -p robot:=so101 -p task:=pick`` (``r2s deploy`` starts it on a
robot, with ``--operator-episodes``).
"""

from __future__ import annotations

import threading

from diagnostic_msgs.msg import DiagnosticArray
from std_msgs.msg import String
from std_srvs.srv import Trigger

from stack.ros import topics
from stack.ros.common import QOS_RELIABLE, SUCCESS, R2sNode, declare_parameters, load_robot, run_node, status_array
from stack.ros.episode_tracker import OPERATOR_EVENTS, Mark, OperatorEpisodes, operator_event

PARAMS = {
    "robot": ("so101", "registered robot name (noted in each episode event)"),
    "task": ("", "what the operator has the robot do (noted in each episode event)"),
    "event_topic": (topics.EPISODE_EVENT, "String in: start | end | success | failure [: note]"),
    "first_episode": (0, "number of the first episode (a restarted node continuing a recording: the next free one)"),
    "start_on_activate": (False, "start episode 0 at activation (false: at the operator's first start)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class EpisodeNode(R2sNode):
    def __init__(self):
        super().__init__(topics.EPISODE_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._lock = threading.Lock()
        self.episodes = OperatorEpisodes()

    def on_configure(self, state):
        p = self.p
        try:
            self.spec = load_robot(p.robot)
        except KeyError as e:
            return self.fail(f"configure: {e}")
        self._episode_pub = self.add_publisher(DiagnosticArray, topics.EPISODE, QOS_RELIABLE, lifecycle=False)
        self._diag_pub = self.add_publisher(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, lifecycle=False)
        self.add_subscription(String, p.event_topic, self._on_event, QOS_RELIABLE)
        for event in OPERATOR_EVENTS:
            self.add_service(Trigger, topics.EPISODE_SERVICES[event],
                             lambda req, resp, e=event: self._srv_mark(e, resp))
        self.get_logger().info(f"configured: operator marks on {p.event_topic} and "
                               f"{', '.join(topics.EPISODE_SERVICES.values())}")
        return SUCCESS

    def on_activate(self, state):
        self.episodes = self.episodes.continued(self.p.first_episode)
        self.active = True
        if self.p.start_on_activate:
            self._apply("start", "", "start_on_activate")
        self.add_timer(self.p.diagnostics_period_s, self._publish_diagnostics)
        return super().on_activate(state)

    def on_deactivate(self, state):
        with self._lock:
            self.active = False
            for event, values in self.episodes.stop(self.now_ns() * 1e-9):
                self._publish_episode(event, values)
        return super().on_deactivate(state)

    # ---- marks ----------------------------------------------------------------------------------------------------
    def _on_event(self, msg: String) -> None:
        event, note = operator_event(msg.data, self.p.event_topic)  # a BadMessage: dropped and counted
        mark = self._apply(event, note, self.p.event_topic)
        if not mark.accepted:
            self.log_throttled(f"refused:{event}", f"{self.p.event_topic}: {mark.reply}")

    def _srv_mark(self, event: str, response):
        mark = self._apply(event, "", topics.EPISODE_SERVICES[event])
        response.success, response.message = mark.accepted, mark.reply
        if not mark.accepted:
            self.get_logger().warning(f"{topics.EPISODE_SERVICES[event]}: {mark.reply}")
        return response

    def _apply(self, event: str, note: str, by: str) -> Mark:
        with self._lock:
            if not self.active:
                return Mark(False, f"the episode node is not active: '{event}' ignored")
            mark = self.episodes.mark(event, self.now_ns() * 1e-9, note, by)
            for name, values in mark.events:
                self._publish_episode(name, values)
        return mark

    def _publish_episode(self, event: str, values: dict[str, str]) -> None:
        values = {"episode": values["episode"], "robot": self.spec.name, "task": self.p.task, **values}
        self._episode_pub.publish(status_array(self.now_ns(), "episode", event, self.spec.name, values))
        self.get_logger().info(f"episode {values['episode']} {event} " + " ".join(
            f"{k}={v}" for k, v in values.items() if k not in ("robot", "task", "episode")))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            values = {"episode": str(self.episodes.episode), "in_episode": str(self.episodes.in_episode),
                      **{k: str(v) for k, v in self.episodes.counts.items()}, **self.health_values()}
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: episodes", "ok", self.spec.name,
                                            values))


def main(argv: list[str] | None = None) -> int:
    return run_node(EpisodeNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
