"""The safety supervisor's decisions, free of ROS so they can be tested by hand: what command reaches the hardware.

Per decision, in order:

1. **Hold** when the e-stop is latched, the node is deactivating, joint_states are missing, stale (arrival time or
   ``header.stamp``) or implausible, or the commanding source's input is missing, stale or non-finite — for the
   policy, stale also means a newly arrived proposal whose stamp (the time of its observation's oldest source) is
   older than ``max_obs_age_s``, so no "ok" command is built on an old observation. The hold *target* is the measured
   position latched when the hold began (re-commanding each new reading would let the arm sag under gravity step by
   step); the hold *command* ramps into that target from the last command sent, within the velocity and acceleration
   limits (step 3), so a hold never jumps. A forward_command_controller keeps its last command forever, so the hold
   is re-published every control period. Without any measurement there is nothing safe to command and no command is
   produced.
2. **Mux** by authority: ``policy``, ``human`` (teleop) or ``baseline``. A human or baseline command may name only
   some joints; the others stay with the policy (still watched by the watchdog). The intervention mask marks every
   joint not commanded by the policy (all of them during a hold or homing).
3. **Clamp** to the position limits (minus ``position_margin``), then **limit velocity and acceleration**: from the
   last output, each joint moves towards its target at most ``vel_max · velocity_scale`` and changes speed by at
   most ``acc_max · acceleration_scale · dt``, braking so that it can stop at the target; ``dt`` is the time since
   the last output, at most one nominal control period, so a late or bunched command never allows a larger step.
   The position limits beat the acceleration limit: when outputs come irregularly, a command may meet a limit faster
   than it can brake and stop there harder.

Measurements are checked for plausibility: a reading further from the last accepted one than ``vel_max ·
plausible_speed_factor · elapsed + jump_tolerance`` is a glitch — refused, counted, and held through (status
``hold: implausible joint_states …``) without becoming a hold target. If ``confirm_samples`` consecutive readings
agree with each other at the new place, the robot really is there (it was pushed, or a sim reset moved it) and the
supervisor accepts them. ``resync`` (an episode start) accepts the next jump at once and restarts the limiter from
the measured position.

The e-stop latches until ``reset_estop``. Authority requests are refused while it is latched, and the reset returns
authority to ``reset_authority`` (default ``policy``) and forgets every command received before it, so the arm
holds until the source with authority sends a fresh one.

Homing (``start_homing``): the command moves to a target pose along the same limited path (status ``homing``),
whatever the sources say; faults still hold, an e-stop cancels it. ``deactivate`` holds (or homes) for good.
``park`` (an episode's end, on a robot whose operator marks episodes) homes the same way and then holds at home
(status ``hold: between episodes``) until ``unpark`` (the next start); a start during the homing lets it finish first,
so every episode begins at home — except one that ended while the e-stop was latched: that park holds where the arm
is, before and after the reset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.spec import RobotSpec

AUTHORITIES = ("policy", "human", "baseline")
HOMING = "homing"
"""The status of a command on the way to the home pose."""
BETWEEN_EPISODES = "between episodes"
"""The hold reason while parked at home between two episodes."""


@dataclass
class Decision:
    command: np.ndarray
    """Joint-position command in the spec's joint order."""
    authority: str
    mask: np.ndarray
    """1.0 where the policy did not command the joint, else 0.0."""
    status: str
    """``ok``, ``homing`` or ``hold: <reason>``."""
    stamp_ns: int
    """The source command's stamp, or the decision time during a hold or homing."""
    limited: bool = False
    """Whether clamping or the velocity/acceleration limit changed the command."""

    @property
    def holding(self) -> bool:
        return self.status.startswith("hold")


@dataclass
class _Input:
    values: np.ndarray
    commanded: np.ndarray
    """Which joints this input commands (bool)."""
    t: float
    stamp_ns: int


class SafetySupervisor:
    def __init__(self, spec: RobotSpec, timeout_s: float, teleop_timeout_s: float | None = None,
                 velocity_scale: float = 1.0, position_margin: float = 0.0, acceleration_scale: float = 1.0,
                 max_obs_age_s: float | None = None, max_future_s: float = 0.05, jump_tolerance: float = 0.1,
                 plausible_speed_factor: float = 1.5, confirm_samples: int = 3, reset_authority: str = "policy"):
        self.joint_names = spec.joint_names
        self.n = spec.num_joints
        lo, hi = spec.pos_limits
        self.lo, self.hi = lo + position_margin, hi - position_margin
        if np.any(self.lo > self.hi):
            raise ValueError(f"position_margin {position_margin} leaves an empty range for some joint of {spec.name}")
        if velocity_scale <= 0 or acceleration_scale <= 0:
            raise ValueError(f"velocity_scale {velocity_scale} and acceleration_scale {acceleration_scale} must be > 0")
        if reset_authority not in AUTHORITIES:
            raise ValueError(f"reset_authority: {reset_authority!r} is not one of {list(AUTHORITIES)}")
        self.max_speed = spec.vel_limits * float(velocity_scale)
        self.max_acc = spec.acc_limits * float(acceleration_scale)
        self.plausible_speed = spec.vel_limits * float(plausible_speed_factor)
        self.jump_tolerance = float(jump_tolerance)
        self.confirm_samples = max(1, int(confirm_samples))
        self.period = spec.control_period_s
        self.timeout_s = float(timeout_s)
        self.teleop_timeout_s = float(teleop_timeout_s if teleop_timeout_s is not None else timeout_s)
        self.max_obs_age_s = float(max_obs_age_s if max_obs_age_s is not None else timeout_s)
        self.max_future_s = float(max_future_s)
        self.reset_authority = reset_authority
        self.authority = "policy"
        self.estopped = False
        self.deactivated = False
        self.parked = False
        """Between episodes (``park``): home, then hold there whatever the sources say, until ``unpark``."""
        self.holds = 0
        """Number of times a hold began."""
        self.implausible = 0
        """Number of joint_states readings refused as implausible jumps."""
        self._measured: np.ndarray | None = None
        self._t_measured = -np.inf
        self._stamp_measured = 0
        self._ref: tuple[np.ndarray, float] | None = None
        """The last accepted reading and its sample time (stamp, else arrival): the plausibility reference."""
        self._suspects: list[tuple[np.ndarray, float, float, int]] = []
        """Consecutive refused readings (q, arrival, sample time, stamp) that agree with each other."""
        self._implausible_reason: str | None = None
        self._resync_until = -np.inf
        self._inputs: dict[str, _Input | None] = dict.fromkeys(AUTHORITIES)
        self._last: np.ndarray | None = None
        self._t_last = -np.inf
        self._v = np.zeros(self.n)
        self._hold_target: np.ndarray | None = None
        self._home: np.ndarray | None = None
        self.hold_reason: str | None = None

    # ---- inputs ---------------------------------------------------------------------------------------------------
    def measured(self, q, t: float, stamp_ns: int = 0) -> str | None:
        """A joint_states reading (spec order) that arrived at ``t``; returns None if accepted, else why it was
        refused. A non-finite reading counts as no reading (the watchdog holds at the last finite position); an
        implausible one is a fault held through."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape != (self.n,):
            raise ValueError(f"joint_states reading has shape {q.shape}; robot has {self.n} joints")
        if not np.all(np.isfinite(q)):
            return "non-finite joint_states position"
        ts = stamp_ns * 1e-9 if stamp_ns else t
        if self._ref is not None:
            jump = self._jump(*self._ref, q, ts)
            if jump is not None:
                if t <= self._resync_until:  # an episode reset moved the robot: restart from where it is
                    self._resync_until = -np.inf
                    self._last = None
                elif not self._confirmed(q, t, ts, stamp_ns):
                    self.implausible += 1
                    self._implausible_reason = f"implausible joint_states: {jump}"
                    return self._implausible_reason
        self._accept(q, t, ts, stamp_ns)
        return None

    def _jump(self, q0: np.ndarray, t0: float, q: np.ndarray, ts: float) -> str | None:
        """Why ``q`` at ``ts`` cannot follow ``q0`` at ``t0`` within the velocity limits (None: it can)."""
        dt = max(ts - t0, 0.0)
        finite = np.isfinite(self.plausible_speed)
        allowed = np.where(finite, np.where(finite, self.plausible_speed, 0.0) * dt, np.inf) + self.jump_tolerance
        bad = np.abs(q - q0) > allowed
        if not bad.any():
            return None
        j = int(np.argmax(np.where(bad, np.abs(q - q0) - allowed, -np.inf)))
        return (f"{self.joint_names[j]} jumped {q[j] - q0[j]:+.3f} rad in {dt * 1e3:.0f} ms "
                f"(at most {allowed[j]:.3f})")

    def _confirmed(self, q: np.ndarray, t: float, ts: float, stamp_ns: int) -> bool:
        """Whether ``q`` is the ``confirm_samples``-th consecutive refused reading consistent with the previous one:
        then the robot really is there."""
        if self._suspects and self._jump(self._suspects[-1][0], self._suspects[-1][2], q, ts) is not None:
            self._suspects = []
        self._suspects.append((q, t, ts, int(stamp_ns)))
        return len(self._suspects) >= self.confirm_samples

    def _accept(self, q: np.ndarray, t: float, ts: float, stamp_ns: int) -> None:
        self._measured, self._t_measured, self._stamp_measured = q, t, int(stamp_ns)
        self._ref = (q, ts)
        self._suspects = []
        self._implausible_reason = None

    def command(self, source: str, values, t: float, stamp_ns: int, commanded=None) -> None:
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
        if self.estopped:
            raise ValueError(f"authority request {authority!r} refused: the e-stop is latched (its reset returns "
                             f"authority to {self.reset_authority!r})")
        self.authority = authority

    def estop(self) -> None:
        self.estopped = True
        self._home = None  # an e-stop ends homing too: after the reset nothing moves until a fresh command

    def reset_estop(self) -> bool:
        """Release the e-stop (returns whether it was latched): authority back to ``reset_authority``, and every
        command received so far forgotten, so only one sent after the reset can move the arm."""
        was = self.estopped
        self.estopped = False
        if was:
            self.authority = self.reset_authority
            self._inputs = dict.fromkeys(AUTHORITIES)
        return was

    def resync(self, t: float) -> None:
        """An episode reset may have moved the robot: accept a jump of the measurement (already refused or arriving
        within the next ``max(2 timeout, 0.5 s)``) and restart the limiter from it."""
        if self._suspects:
            self._accept(*self._suspects[-1])
            self._last = None
        else:
            self._resync_until = t + max(2.0 * self.timeout_s, 0.5)

    def start_homing(self, target) -> None:
        """Move to ``target`` (clamped to the limits) along the limited path, ignoring the sources until there."""
        target = np.asarray(target, dtype=np.float64)
        if target.shape != (self.n,) or not np.all(np.isfinite(target)):
            raise ValueError(f"home pose must be {self.n} finite joint positions, got {target.tolist()}")
        self._home = np.clip(target, self.lo, self.hi)

    @property
    def homing(self) -> bool:
        return self._home is not None

    def park(self, home=None) -> None:
        """Between episodes: move to ``home`` along the limited path (None: stay where the command is) and hold there
        until ``unpark``. With the e-stop latched it holds where it is (an episode marked ended after an e-stop: its
        reset must not start a move nobody commanded after it)."""
        if home is not None and not self.estopped:
            self.start_homing(home)
        self.parked = True

    def unpark(self) -> None:
        """The next episode starts: the sources command again (once a homing in progress has arrived)."""
        self.parked = False

    def deactivate(self, home=None) -> None:
        """From now on hold (or, with ``home``, move there and stay): no source commands the arm any more."""
        self.deactivated = True
        if home is not None:
            self.start_homing(home)

    # ---- decisions ------------------------------------------------------------------------------------------------
    @property
    def holding(self) -> bool:
        return self.hold_reason is not None

    def last_output_age(self, t: float) -> float:
        return t - self._t_last

    def check(self, t: float, new_command: bool = False) -> str | None:
        """Why the supervisor must hold now, or None (also None while homing without a fault). ``new_command``:
        the decision answers a command that just arrived from the source with authority, whose observation's age
        is checked too (a command's observation ages while it is in force; silence is the watchdog's business)."""
        reason = self._robot_fault(t)
        if reason is not None or self.homing:
            return reason
        if self.deactivated:
            return "deactivated"
        if self.parked:
            return BETWEEN_EPISODES
        return self._source_fault(t, new_command)

    def _age_fault(self, what: str, age: float, limit: float, by: str = "") -> str | None:
        if age > limit:
            return f"{what} stale ({age * 1e3:.0f} ms{by})"
        if age < -self.max_future_s:
            return f"{what} from the future ({-age * 1e3:.0f} ms{by}: did the clock step back?)"
        return None

    def _robot_fault(self, t: float) -> str | None:
        if self.estopped:
            return "e-stop"
        if self._measured is None:
            return "no joint_states"
        if self._implausible_reason is not None:
            return self._implausible_reason
        reason = self._age_fault("joint_states", t - self._t_measured, self.timeout_s)
        if reason is None and self._stamp_measured:
            reason = self._age_fault("joint_states", t - self._stamp_measured * 1e-9, self.timeout_s, " by stamp")
        return reason

    def _source_fault(self, t: float, new_command: bool = False) -> str | None:
        sources = [self.authority]
        src = self._inputs[self.authority]
        if self.authority != "policy" and src is not None and not src.commanded.all():
            sources.append("policy")  # the joints the human/baseline leaves to the policy
        for name in sources:
            inp = self._inputs[name]
            if inp is None:
                return f"no {name} command"
            timeout = self.teleop_timeout_s if name == "human" else self.timeout_s
            reason = self._age_fault(f"{name} command", t - inp.t, timeout)
            if reason is None and new_command and name == "policy" and inp.stamp_ns:
                # The proposal's stamp is the time of its observation's oldest source.
                reason = self._age_fault("policy observation", t - inp.stamp_ns * 1e-9, self.max_obs_age_s,
                                         " by stamp")
            if reason is not None:
                return reason
            if not np.all(np.isfinite(inp.values[inp.commanded])):
                return f"non-finite {name} command"
        return None

    def due(self, t: float) -> bool:
        """Whether the watchdog must output now: a hold begins, or a hold/homing is due its once-a-period
        re-publication (a forward controller would otherwise keep an older command forever)."""
        reason = self.check(t)
        if reason is None and not self.homing:
            return False
        if reason is not None and not self.holding:
            return True
        return self.last_output_age(t) >= 0.95 * self.period

    def decide(self, t: float, new_command: bool = False) -> Decision | None:
        """The command to send now (None: nothing can be commanded, no measurement yet); ``new_command``: it answers
        a command that just arrived (see ``check``)."""
        reason = self.check(t, new_command)
        if reason is not None:
            return self.hold(t, reason)
        if self.homing:
            return self._homing_step(t)
        self.hold_reason = None
        self._hold_target = None
        src = self._inputs[self.authority]
        target = src.values.copy()
        mask = np.zeros(self.n)
        if self.authority != "policy":
            mask[src.commanded] = 1.0
            if not src.commanded.all():
                target[~src.commanded] = self._inputs["policy"].values[~src.commanded]
        out = self._track(target, t)
        return Decision(out, self.authority, mask, "ok", src.stamp_ns, limited=not np.allclose(out, target))

    def hold(self, t: float, reason: str) -> Decision | None:
        """Hold position now: ramp towards the position measured when the hold began (None without any
        measurement)."""
        if self._hold_target is None:
            if self._measured is None:
                self.hold_reason = reason
                return None
            self._hold_target = np.clip(self._measured, self.lo, self.hi)
            self.holds += 1
        self.hold_reason = reason
        out = self._track(self._hold_target, t)
        return Decision(out, self.authority, np.ones(self.n), f"hold: {reason}", int(t * 1e9),
                        limited=not np.allclose(out, self._hold_target))

    def _homing_step(self, t: float) -> Decision:
        self.hold_reason = None
        self._hold_target = None
        out = self._track(self._home, t)
        if self.settled(self._home):  # arrived: the sources' turn; until they command, hold here (not where the
            self._hold_target = self._home  # arm was measured, which would undo the homing on a lagging arm)
            self._home = None
        return Decision(out, self.authority, np.ones(self.n), HOMING, int(t * 1e9))

    def final(self, t: float, reason: str) -> Decision | None:
        """The last command before the node stops: a hold where the command is now (no step at all)."""
        base = self._last if self._last is not None else self._measured
        if base is None:
            return None
        self.hold_reason = reason
        self._v = np.zeros(self.n)
        self._last, self._t_last = base.copy(), t
        return Decision(base.copy(), self.authority, np.ones(self.n), f"hold: {reason}", int(t * 1e9))

    def settled(self, target=None, tol: float = 1e-4) -> bool:
        """Whether the last output is at ``target`` (default: the hold target, else the home pose) and at rest."""
        target = target if target is not None else (self._hold_target if self._hold_target is not None
                                                    else self._home)
        if self._last is None or target is None:
            return self._last is None and target is None
        return bool(np.all(np.abs(self._last - target) <= tol) and np.all(np.abs(self._v) <= tol / self.period))

    # ---- the limiter ----------------------------------------------------------------------------------------------
    def _track(self, target: np.ndarray, t: float) -> np.ndarray:
        """One step from the last output towards ``target`` (clamped to the limits) within the velocity and
        acceleration limits, braking so as to stop at the target."""
        target = np.clip(target, self.lo, self.hi)
        if self._last is None:
            base, v, dt = self._measured, np.zeros(self.n), self.period
        else:
            base, v, dt = self._last, self._v, min(max(t - self._t_last, 0.0), self.period)
        if dt <= 0.0:
            out = base.copy()
        else:
            e = target - base
            dist = np.abs(e)
            finite_a = np.isfinite(self.max_acc)
            dv = np.where(finite_a, self.max_acc * dt, np.inf)
            v_des = np.sign(e) * np.minimum(self.max_speed, _braking_speed(dist, dt, dv))
            v_new = np.clip(np.clip(v_des, v - dv, v + dv), -self.max_speed, self.max_speed)
            out = base + v_new * dt
        out = np.clip(out, self.lo, self.hi)
        self._v = (out - base) / dt if dt > 0.0 else v
        self._last, self._t_last = out, t
        return out.copy()


def _braking_speed(dist: np.ndarray, dt: float, dv: np.ndarray) -> np.ndarray:
    """The largest speed v with which one step of dt still leaves room to stop within ``dist`` when the speed may
    drop by ``dv`` a step: (m + 1)·dt·(v − m·dv/2) ≤ dist, m = the number of braking steps after this one. With
    dv = inf, dist/dt (arrive in one step)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        quanta = dist / (dt * dv)  # dist in units of the distance one speed quantum covers in a step
        m = np.floor((np.sqrt(1.0 + 8.0 * quanta) - 1.0) / 2.0)
        v = dist / (dt * (m + 1.0)) + m * dv / 2.0
    return np.where(np.isfinite(dv), np.minimum(v, (m + 1.0) * dv), dist / dt)
