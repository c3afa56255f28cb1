"""The safety supervisor's decisions, free of ROS so they can be tested by hand: what command reaches the hardware.

Per decision, in order:

1. **Hold** when the e-stop is latched, joint_states are missing or stale, or the commanding source's input is
   missing, stale or non-finite. Holding means commanding the *measured* position latched when the hold began (not
   the newest measurement: re-commanding each new reading would let the arm sag under gravity step by step), so a
   position-controlled joint stops where it is. A forward_command_controller keeps its last command forever, so the
   hold is re-published every control period rather than relying on silence. Without any measurement there is
   nothing safe to command and no command is produced.
2. **Mux** by authority: ``policy``, ``human`` (teleop) or ``baseline``. A human or baseline command may name only
   some joints; the others stay with the policy (still watched by the watchdog). The intervention mask marks every
   joint not commanded by the policy (all of them during a hold).
3. **Clamp** to the position limits (minus ``position_margin``), then **limit the rate of change**: each joint moves
   at most ``vel_max · velocity_scale · dt`` from the previous output, ``dt`` the time since it (at most two control
   periods, so a gap does not allow a jump). After a hold the limiter starts from the hold target; after an episode
   reset (``resync``) from the measured position.

The e-stop latches until ``reset_estop``; after a reset the supervisor keeps holding until the commanding source
sends a fresh command.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.spec import RobotSpec

AUTHORITIES = ("policy", "human", "baseline")


@dataclass
class Decision:
    command: np.ndarray
    """Joint-position command in the spec's joint order."""
    authority: str
    mask: np.ndarray
    """1.0 where the policy did not command the joint, else 0.0."""
    status: str
    """``ok`` or ``hold: <reason>``."""
    stamp_ns: int
    """The source command's stamp, or the decision time during a hold."""
    limited: bool = False
    """Whether clamping or the rate limit changed the command."""

    @property
    def holding(self) -> bool:
        return self.status != "ok"


@dataclass
class _Input:
    values: np.ndarray
    commanded: np.ndarray
    """Which joints this input commands (bool)."""
    t: float
    stamp_ns: int


class SafetySupervisor:
    def __init__(self, spec: RobotSpec, timeout_s: float, teleop_timeout_s: float | None = None,
                 velocity_scale: float = 1.0, position_margin: float = 0.0):
        self.joint_names = spec.joint_names
        self.n = spec.num_joints
        lo, hi = spec.pos_limits
        self.lo, self.hi = lo + position_margin, hi - position_margin
        if np.any(self.lo > self.hi):
            raise ValueError(f"position_margin {position_margin} leaves an empty range for some joint of {spec.name}")
        self.max_speed = spec.vel_limits * float(velocity_scale)
        self._unlimited = ~np.isfinite(self.max_speed)
        self._finite_speed = np.where(self._unlimited, 0.0, self.max_speed)
        self.period = spec.control_period_s
        self.timeout_s = float(timeout_s)
        self.teleop_timeout_s = float(teleop_timeout_s if teleop_timeout_s is not None else timeout_s)
        self.authority = "policy"
        self.estopped = False
        self.holds = 0
        """Number of times a hold began."""
        self._measured: np.ndarray | None = None
        self._t_measured = -np.inf
        self._inputs: dict[str, _Input | None] = dict.fromkeys(AUTHORITIES)
        self._last: np.ndarray | None = None
        self._t_last = -np.inf
        self._hold_target: np.ndarray | None = None
        self.hold_reason: str | None = None

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def measured(self, q: np.ndarray, t: float) -> bool:
        """A joint_states reading; a non-finite one is refused (returns False) and counts as no reading, so the
        watchdog holds at the last finite position."""
        q = np.asarray(q, dtype=np.float64)
        if not np.all(np.isfinite(q)):
            return False
        self._measured = q
        self._t_measured = t
        return True

    def command(self, source: str, values: np.ndarray, t: float, stamp_ns: int,
                commanded: np.ndarray | None = None) -> None:
        """A new command from ``source`` (values in spec order; ``commanded`` marks the joints it names)."""
        if source not in AUTHORITIES:
            raise ValueError(f"source: {source!r} is not one of {AUTHORITIES}")
        values = np.asarray(values, dtype=np.float64)
        if values.shape != (self.n,):
            raise ValueError(f"{source} command has shape {values.shape}; robot has {self.n} joints")
        mask = np.ones(self.n, bool) if commanded is None else np.asarray(commanded, bool)
        self._inputs[source] = _Input(values, mask, t, int(stamp_ns))

    def set_authority(self, authority: str) -> None:
        if authority not in AUTHORITIES:
            raise ValueError(f"authority: {authority!r} is not one of {list(AUTHORITIES)}")
        self.authority = authority

    def estop(self) -> None:
        self.estopped = True

    def reset_estop(self) -> None:
        self.estopped = False

    def resync(self) -> None:
        """Start the rate limiter from the measured position (after an episode reset moved the robot)."""
        self._last = None

    # ---- decisions ------------------------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        return self.hold_reason is not None

    def last_output_age(self, t: float) -> float:
        return t - self._t_last

    def check(self, t: float) -> str | None:
        """Why the supervisor must hold now, or None."""
        if self.estopped:
            return "e-stop"
        if self._measured is None:
            return "no joint_states"
        age = t - self._t_measured
        if age > self.timeout_s:
            return f"joint_states stale ({age * 1e3:.0f} ms)"
        sources = [self.authority]
        src = self._inputs[self.authority]
        if self.authority != "policy" and src is not None and not src.commanded.all():
            sources.append("policy")  # the joints the human/baseline leaves to the policy
        for name in sources:
            inp = self._inputs[name]
            if inp is None:
                return f"no {name} command"
            timeout = self.teleop_timeout_s if name == "human" else self.timeout_s
            age = t - inp.t
            if age > timeout:
                return f"{name} command stale ({age * 1e3:.0f} ms)"
            if not np.all(np.isfinite(inp.values[inp.commanded])):
                return f"non-finite {name} command"
        return None

    def decide(self, t: float) -> Decision | None:
        """The command to send now (None: nothing can be commanded, no measurement yet)."""
        reason = self.check(t)
        if reason is not None:
            return self.hold(t, reason)
        self.hold_reason = None
        self._hold_target = None
        src = self._inputs[self.authority]
        target = src.values.copy()
        mask = np.zeros(self.n)
        if self.authority != "policy":
            mask[src.commanded] = 1.0
            if not src.commanded.all():
                target[~src.commanded] = self._inputs["policy"].values[~src.commanded]
        safe = np.clip(target, self.lo, self.hi)
        base = self._last if self._last is not None else self._measured
        dt = min(max(t - self._t_last, 0.0), 2.0 * self.period) if self._last is not None else self.period
        step = self._finite_speed * dt
        step[self._unlimited] = np.inf
        safe = base + np.clip(safe - base, -step, step)
        self._last, self._t_last = safe, t
        return Decision(safe, self.authority, mask, "ok", src.stamp_ns, limited=not np.allclose(safe, target))

    def hold(self, t: float, reason: str) -> Decision | None:
        """Hold position now (the decision for a hold; None without any measurement)."""
        if self._hold_target is None:
            if self._measured is None:
                self.hold_reason = reason
                return None
            self._hold_target = np.clip(self._measured, self.lo, self.hi)
            self.holds += 1
        self.hold_reason = reason
        self._last, self._t_last = self._hold_target, t
        return Decision(self._hold_target.copy(), self.authority, np.ones(self.n), f"hold: {reason}", int(t * 1e9))
