"""Observation assembly for the policy node, free of ROS: an exported policy's ``obs_layout`` filled from
``joint_states`` (joints by name) and task topics, with the size, age and stamp checks, and the control-step trigger.

``ObservationAssembler`` checks each message where it arrives (``check_joint_states``, ``topic_message``: names,
lengths, stamps in the future → ``BadMessage``, the message is dropped) and refuses an observation it cannot vouch
for (``assemble`` → ``ObservationRefused``): a task topic that never arrived, or any source older than
``max_age_s`` — joint_states by ``header.stamp`` (arrival time when a driver leaves it at zero), the unstamped task
topics (``std_msgs/Float64MultiArray``) by arrival time. The observation's stamp is the time of its **oldest**
source, so whoever receives a command built on it (the safety node) can tell its age; normally that is the
joint_states stamp, since the task topics arrive with or after it.

``StepTrigger`` decides on which joint_states message the policy steps: the first stamped at or after each tick's
due time (with half a joint_states interval of tolerance), re-anchored when stamps jump back (a restarted driver,
a clock step) instead of waiting for the old due time to come round again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.spec import ObsSegment
from stack.ros.messages import BadMessage, JointMatcher, check_stamp, stamp_ns

JS_FIELDS = {"joint_states.position": "position", "joint_states.velocity": "velocity",
             "joint_states.effort": "effort"}
TOPIC_PREFIX = "topic:"


class LayoutError(ValueError):
    """The observation layout names a source the node cannot read."""


class ObservationRefused(ValueError):
    """No command may be built now; ``kind`` is ``waiting`` (a source never arrived) or ``stale``."""

    def __init__(self, kind: str, text: str):
        self.kind = kind
        super().__init__(text)


@dataclass
class Observation:
    values: np.ndarray
    """The observation vector (a view of the assembler's buffer: copy it to keep it)."""
    stamp_ns: int
    """Time of the oldest source: joint_states' stamp (or arrival), or a task topic's arrival if older."""
    age_s: float
    """Age of the oldest source when assembled."""


class ObservationAssembler:
    def __init__(self, obs_layout: tuple[ObsSegment, ...], joint_names: tuple[str, ...], max_age_s: float,
                 js_topic: str = "joint_states", max_future_s: float = 0.05, strict_joint_names: bool = False):
        self.joints = JointMatcher(joint_names, js_topic, strict=strict_joint_names)
        self.max_age_ns = int(max_age_s * 1e9)
        self.max_future_ns = int(max_future_s * 1e9)
        self.plan: list[tuple[slice, str, str]] = []
        """(slice of the observation, ``js`` | ``topic``, joint_states field | topic name)."""
        self.topic_sizes: dict[str, int] = {}
        offset = 0
        for seg in obs_layout:
            sl = slice(offset, offset + seg.size)
            offset += seg.size
            if seg.source in JS_FIELDS:
                if seg.size != len(joint_names):
                    raise LayoutError(f"obs_layout: segment {seg.name}[{seg.size}] reads {seg.source} but the robot "
                                      f"has {len(joint_names)} joints")
                self.plan.append((sl, "js", JS_FIELDS[seg.source]))
            elif seg.source.startswith(TOPIC_PREFIX):
                name = seg.source[len(TOPIC_PREFIX):]
                self.plan.append((sl, "topic", name))
                self.topic_sizes[name] = seg.size
            else:
                raise LayoutError(f"obs_layout: segment {seg.name} has source {seg.source!r}; supported: "
                                  f"{sorted(JS_FIELDS)} or topic:/name")
        self.fields = sorted({key for _, kind, key in self.plan if kind == "js"})
        self.names = [f"{s.name}[{i}]" for s in obs_layout for i in range(s.size)]
        self.obs = np.zeros(offset)
        self._topics: dict[str, tuple[np.ndarray, int] | None] = dict.fromkeys(self.topic_sizes)

    # ---- arrivals -------------------------------------------------------------------------------------------------
    def check_joint_states(self, msg, now_ns: int) -> int:
        """Validate a JointState where it arrives; returns its time (stamp, or ``now_ns`` when unstamped)."""
        for field in self.fields:
            self.joints.values(msg.name, getattr(msg, field), field)
        stamp = check_stamp(self.joints.topic, stamp_ns(msg.header.stamp), now_ns, self.max_future_ns)
        return stamp or now_ns

    def topic_message(self, topic: str, data, now_ns: int) -> None:
        """A task topic's values, timed by their arrival; a wrong size is refused and the previous value kept
        (it ages out)."""
        size = self.topic_sizes[topic]
        values = np.asarray(data, dtype=np.float64)
        if values.shape != (size,):
            raise BadMessage(f"{topic}: {values.size} values, the observation layout expects {size}")
        self._topics[topic] = (values, int(now_ns))

    # ---- the observation ------------------------------------------------------------------------------------------
    def assemble(self, js, js_time_ns: int, now_ns: int) -> Observation:
        """The observation from joint_states ``js`` (checked, timed ``js_time_ns``) and the latest task values."""
        oldest, source = js_time_ns, self.joints.topic
        for name, entry in self._topics.items():
            if entry is None:
                raise ObservationRefused("waiting", f"waiting for {name}: no command until it arrives")
            if entry[1] < oldest:
                oldest, source = entry[1], name
        newest = max([js_time_ns] + [e[1] for e in self._topics.values()])
        if newest - now_ns > self.max_future_ns:
            raise ObservationRefused("stale", f"observation from the future ({(newest - now_ns) / 1e6:.0f} ms): "
                                              "did the clock step back?")
        age = now_ns - oldest
        if age > self.max_age_ns:
            raise ObservationRefused("stale", f"observation stale: {source} is {age / 1e6:.0f} ms old (at most "
                                              f"{self.max_age_ns / 1e6:.0f} ms)")
        obs = self.obs
        for sl, kind, key in self.plan:
            obs[sl] = self.joints.read(js, key) if kind == "js" else self._topics[key][0]
        return Observation(obs, oldest, age * 1e-9)


class StepTrigger:
    """Which joint_states messages the policy steps on, at ``period_ns``, from their stamps (regular at the
    publisher whatever the delivery jitter)."""

    def __init__(self, period_ns: int):
        self.period_ns = int(period_ns)
        self.reset()

    def reset(self) -> None:
        self._due: int | None = None
        self._last: int | None = None
        self.interval_ns: float | None = None
        """Smoothed joint_states interval."""

    def __call__(self, t_ns: int) -> bool:
        """Whether to step on the message timed ``t_ns``."""
        if self._last is not None:
            dt = t_ns - self._last
            if dt > 0:
                self.interval_ns = dt if self.interval_ns is None else 0.9 * self.interval_ns + 0.1 * dt
        self._last = t_ns
        period = self.period_ns
        # Step on the first message at or after the due time, with a tolerance of half the joint_states interval,
        # so that joint_states at the control rate are each answered despite their jitter.
        tol = 0.5 * min(self.interval_ns or period, period)
        due = self._due
        if due is not None and due - 2 * period <= t_ns < due - tol:
            return False
        # First message, stamps far behind the due time (they jumped back) or a gap: anchor on this message.
        self._due = t_ns + period if due is None or abs(t_ns - due) > period else due + period
        return True
