"""Checks every r2s node runs on a message where it arrives, free of ROS so they can be tested by hand.

A message is refused with ``BadMessage`` (the reason names the topic, the field and what was expected) and the node
drops it, counts it and warns, throttled: no message on any topic, however malformed, may end a node or reach the
decisions. The functions read messages by duck typing (``msg.name``, ``msg.position``, ``msg.header.stamp`` …), so
tests pass plain objects.

What is refused here: joint names missing, repeated or (strict matching) unknown; a value array whose length is not
the number of names; a trajectory without points; a stamp further in the future than the node's clock allows. What
is *not* refused here: non-finite values in a well-formed message — they are a fault the decision must answer (the
safety supervisor holds at once), not noise to be dropped silently.
"""

from __future__ import annotations

import numpy as np


class BadMessage(ValueError):
    """A message refused where it arrived; the text names the topic and the field."""


class JointNameError(BadMessage):
    """A message does not name the joints the robot spec expects; the text lists missing and extra names."""

    def __init__(self, missing: list[str], extra: list[str], expected: tuple[str, ...], topic: str = "joint_states"):
        self.missing, self.extra = missing, extra
        super().__init__(
            f"{topic}: joint names do not match the robot: missing {missing}, extra {extra} "
            f"(expected {list(expected)}; joints are matched by name, never by order)"
        )


def stamp_ns(stamp) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def set_stamp(stamp, ns: int) -> None:
    stamp.sec, stamp.nanosec = divmod(int(ns), 1_000_000_000)


def check_stamp(topic: str, stamp: int, now_ns: int, max_future_ns: int) -> int:
    """``stamp`` (ns; 0 = not stamped) unless it lies more than ``max_future_ns`` after the node's clock: such a
    stamp is implausible (another clock, a corrupt header) and would make stale data look fresh."""
    if stamp and stamp - now_ns > max_future_ns:
        raise BadMessage(f"{topic}: header.stamp is {(stamp - now_ns) / 1e6:.1f} ms in the future of this node's "
                         f"clock (at most {max_future_ns / 1e6:.0f} ms allowed: are the clocks synchronised?)")
    return stamp


def _unique_names(topic: str, names) -> list[str]:
    names = list(names)
    if len(set(names)) != len(names):
        repeated = sorted({n for n in names if names.count(n) > 1})
        raise BadMessage(f"{topic}: joint name(s) {repeated} appear more than once")
    return names


class JointMatcher:
    """Reads joint arrays in the robot's joint order, matching by name (a message's own order is not trusted).

    The index is cached per distinct name list, so the hot path is one list comparison and one fancy index.
    """

    def __init__(self, joint_names: tuple[str, ...], topic: str = "joint_states", strict: bool = False):
        self.joint_names = tuple(joint_names)
        self.topic = topic
        self.strict = strict
        """Refuse extra names too (by default a message may carry joints the robot spec does not list)."""
        self._names: list[str] | None = None
        self._index: np.ndarray | None = None

    def check(self, names) -> tuple[list[str], list[str]]:
        """(missing, extra) joint names of a message."""
        names = list(names)
        have, known = set(names), set(self.joint_names)
        return [n for n in self.joint_names if n not in have], [n for n in names if n not in known]

    def index(self, names) -> np.ndarray:
        """Where each spec joint sits in ``names``; ``JointNameError`` / ``BadMessage`` for missing, repeated (or,
        strict, extra) names."""
        if self._names is not None and names == self._names:
            return self._index
        names = _unique_names(self.topic, names)
        missing, extra = self.check(names)
        if missing or (self.strict and extra):
            raise JointNameError(missing, extra, self.joint_names, self.topic)
        self._index = np.array([names.index(n) for n in self.joint_names], dtype=np.intp)
        self._names = names
        return self._index

    def values(self, names, values, field: str = "position") -> np.ndarray:
        """``values`` (one per name) in spec order, float64."""
        idx = self.index(names)
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or arr.shape[0] != len(names):
            raise BadMessage(f"{self.topic}: {field} has {arr.size} values for {len(names)} joint names")
        return arr[idx]

    def read(self, msg, field: str = "position") -> np.ndarray:
        """``msg.<field>`` of a JointState in spec order."""
        return self.values(msg.name, getattr(msg, field), field)


def trajectory_positions(msg, matcher: JointMatcher) -> np.ndarray:
    """The first point's positions of a JointTrajectory, in spec order."""
    if not msg.points:
        raise BadMessage(f"{matcher.topic}: trajectory without points")
    return matcher.values(msg.joint_names, msg.points[0].positions, "points[0].positions")


def partial_joint_command(topic: str, names, positions, joint_names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """A command naming some of the robot's joints (teleop): (values in spec order, which joints it commands).
    Unknown or repeated names, or a length mismatch, refuse the whole message."""
    names = _unique_names(topic, names)
    unknown = [n for n in names if n not in joint_names]
    if unknown:
        raise BadMessage(f"{topic}: unknown joint(s) {unknown} (the robot has {list(joint_names)})")
    if not names:
        raise BadMessage(f"{topic}: names no joint")
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 1 or pos.shape[0] != len(names):
        raise BadMessage(f"{topic}: position has {pos.size} values for {len(names)} joint names")
    commanded = np.array([n in names for n in joint_names])
    values = np.zeros(len(joint_names))
    values[commanded] = [pos[names.index(n)] for n, c in zip(joint_names, commanded) if c]
    return values, commanded
