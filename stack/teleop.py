"""A human operator's takeover from a keyboard or a gamepad, free of ROS (``stack.ros.operator_node`` puts it into the
ROS 2 graph for ``r2s record --operator keyboard|gamepad``; the scripted operator is ``stack.operator``).

``Takeover`` is the state both share: which joints the human holds (the per-joint intervention mask the safety node
records) and their joint-position targets, each kept inside the safety node's position limits (the spec's, minus
``position_margin``). A joint taken over starts at its measured position, so a takeover never jumps; the safety node
still limits the speed and acceleration of whatever is commanded.

``KeyboardTeleop`` maps keys to it: digits select joints, ``t`` takes over the selection (all joints when none is
selected; again: releases it), ``r`` or space releases every joint, ``+``/``-`` jog the selected held joints' targets
by ``jog_step`` rad, ``0`` clears the selection; ``s``/``e``/``y``/``n`` are the episode marks and ``q`` quits.

``GamepadTeleop`` maps a ``sensor_msgs/Joy`` message's arrays: while the deadman button is held the human holds
``dims`` (default all joints) and each mapped axis drives its joint's target at ``speed`` rad/s per unit deflection;
buttons mark episodes (on their press, not while held). A message with too few axes or buttons, or a non-finite
value, is ignored and counted (``malformed``), never an error; a stale one (``timeout_s``) releases. After
``release`` (an episode end; the safety node gave authority away) the deadman must be let go and pressed again.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

EPISODE_KEYS = {"s": "start", "e": "end", "y": "success", "n": "failure"}
"""Key → episode mark (``stack.ros.keyboard_operator``'s keys)."""
QUIT = "q"
TAKE, RELEASE_ALL, JOG_UP, JOG_DOWN, CLEAR = "t", "r", "+", "-", "0"
JOINT_KEYS = "123456789"
"""Keys that select joints 1-9 (ASCII only: ``str.isdigit`` also takes '²' or '٣', which ``int`` refuses or reads)."""
KEY_ALIASES = {" ": RELEASE_ALL, "=": JOG_UP, "_": JOG_DOWN}
HELP = ("keys: 1-9 select joint | 0 clear selection | t take over the selection (none selected: all; again: release "
        "it) | r or space release all | + / - jog the selected held joints | s start an episode | y success | "
        "n failure | e end without an outcome | q quit")


@dataclass
class Command:
    """What the operator sends this step: ``authority`` (``human`` while it holds a joint, else ``policy``) and the
    held joints' indices (spec order) with their targets."""

    authority: str
    dims: np.ndarray
    targets: np.ndarray


class Takeover:
    """Which joints the human holds and their targets, inside ``[lo, hi]`` (the safety node's limits)."""

    def __init__(self, lo, hi, names: tuple[str, ...] | list[str] | None = None):
        self.lo, self.hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
        if self.lo.shape != self.hi.shape or self.lo.ndim != 1 or not np.all(self.lo <= self.hi):
            raise ValueError(f"limits: lo {self.lo.tolist()} and hi {self.hi.tolist()}; expected equal-length vectors "
                             "with lo <= hi")
        self.n = self.lo.size
        self.names = tuple(names) if names is not None else tuple(f"joint{i}" for i in range(self.n))
        self.held = np.zeros(self.n, bool)
        self.target = np.full(self.n, np.nan)

    def _dims(self, dims) -> np.ndarray:
        d = np.arange(self.n) if dims is None else np.asarray(sorted(set(int(i) for i in dims)), dtype=np.int64)
        if d.size and (d.min() < 0 or d.max() >= self.n):
            raise ValueError(f"dims: {d.tolist()}; expected joint indices in [0, {self.n})")
        return d

    def take(self, q, dims=None) -> None:
        """Hold ``dims`` (None: all) from the measured positions ``q``; joints already held keep their targets."""
        d = self._dims(dims)
        new = d[~self.held[d]]
        q = np.asarray(q, dtype=np.float64)
        if new.size and (q.shape != (self.n,) or not np.all(np.isfinite(q[new]))):
            raise ValueError(f"take: measured positions {q.tolist()}; expected {self.n} finite values")
        self.target[new] = np.clip(q[new], self.lo[new], self.hi[new])
        self.held[new] = True

    def release(self, dims=None) -> None:
        d = self._dims(dims)
        self.held[d] = False
        self.target[d] = np.nan

    def move(self, dims, delta) -> None:
        """Move the held ones of ``dims`` (None: all held) by ``delta`` (scalar or per joint of ``dims``), clamped
        to the limits."""
        d = self._dims(dims)
        delta = np.broadcast_to(np.asarray(delta, dtype=np.float64), d.shape)
        keep = self.held[d] & np.isfinite(delta)
        d, delta = d[keep], delta[keep]
        self.target[d] = np.clip(self.target[d] + delta, self.lo[d], self.hi[d])

    def command(self) -> Command:
        dims = np.flatnonzero(self.held)
        return Command("human" if dims.size else "policy", dims, self.target[dims].copy())

    def mask(self) -> np.ndarray:
        """The intervention mask the safety node records while this is commanded (1.0 per held joint)."""
        return self.held.astype(np.float64)


class KeyboardTeleop:
    """Keys → a ``Takeover``. ``key(k)`` acts at once on the last measured positions (``step``
    gives them; keys that need them wait in ``pending`` until the first). Returns the episode mark a key makes, if
    any."""

    def __init__(self, takeover: Takeover, jog_step: float = 0.05):
        if not (jog_step > 0 and math.isfinite(jog_step)):
            raise ValueError(f"jog_step: {jog_step}; expected a finite value > 0 (rad)")
        self.t = takeover
        self.jog_step = float(jog_step)
        self.selected: set[int] = set()
        self.q: np.ndarray | None = None
        self.pending: list[str] = []
        self.quit = False
        self.unknown = 0

    def _selection(self) -> list[int] | None:
        return sorted(self.selected) if self.selected else None

    def key(self, k: str) -> str | None:
        """Act on one key (case-insensitive); the episode mark it makes (else None). Unknown keys raise KeyError."""
        k = KEY_ALIASES.get(k, k.lower())
        if k in EPISODE_KEYS:
            return EPISODE_KEYS[k]
        if k == QUIT:
            self.quit = True
            self.t.release()
            return None
        if k in JOINT_KEYS:
            i = int(k) - 1
            if i >= self.t.n:
                raise KeyError(f"joint key {k!r}: the robot has joints 1-{self.t.n}")
            self.selected ^= {i}
            return None
        if k == CLEAR:
            self.selected.clear()
            return None
        if k == RELEASE_ALL:
            self.pending.clear()
            self.t.release()
            return None
        if k in (TAKE, JOG_UP, JOG_DOWN):
            if self.q is None:
                self.pending.append(k)
            else:
                self._act(k)
            return None
        self.unknown += 1
        raise KeyError(f"unknown key {k[:20]!r}")

    @staticmethod
    def is_key(k: str) -> bool:
        """Whether ``k`` is one character ``key`` knows (a reader's filter for runs of keys)."""
        k = KEY_ALIASES.get(k, k.lower())
        return len(k) == 1 and (k in JOINT_KEYS or k in EPISODE_KEYS or k in (QUIT, TAKE, RELEASE_ALL, JOG_UP,
                                                                          JOG_DOWN, CLEAR))

    def release(self) -> None:
        """Hand every joint back (an episode end, or the safety node gave authority to someone else)."""
        self.pending.clear()
        self.t.release()

    def _act(self, k: str) -> None:
        sel = self._selection()
        if k == TAKE:
            dims = self.t._dims(sel)
            if dims.size and self.t.held[dims].all():
                self.t.release(dims)
            else:
                self.t.take(self.q, dims)
        else:
            self.t.move(sel, self.jog_step if k == JOG_UP else -self.jog_step)

    def step(self, q) -> Command:
        """The command of this step, given the measured joint positions ``q``."""
        q = np.asarray(q, dtype=np.float64)
        if q.shape == (self.t.n,) and np.all(np.isfinite(q)):
            self.q = q
            pending, self.pending = self.pending, []
            for k in pending:
                self._act(k)
        return self.t.command()

    def status(self) -> str:
        sel = [self.t.names[i] for i in sorted(self.selected)] or "none (t: all)"
        held = {self.t.names[i]: round(float(self.t.target[i]), 3) for i in np.flatnonzero(self.t.held)}
        return f"selected {sel}; held {held or 'none (policy)'}"


@dataclass
class GamepadConfig:
    """How a ``sensor_msgs/Joy`` message drives the joints (defaults: an Xbox-style pad as the ROS joy node
    reports it)."""

    axes: dict = field(default_factory=lambda: {0: 0, 1: 1, 2: 4, 3: 3, 4: 6, 5: 7})
    """Joint index → axis index (joints without one hold their position while taken)."""
    speed: float = 0.5
    """rad/s of target speed at full deflection."""
    deadzone: float = 0.1
    """|axis| below this counts as 0."""
    deadman: int = 4
    """Button held to take over (released: back to the policy)."""
    marks: dict = field(default_factory=lambda: {7: "start", 0: "success", 1: "failure", 6: "end"})
    """Button index → episode mark, sent on the press."""
    dims: tuple[int, ...] | None = None
    """Joints the deadman takes over (None: all)."""
    timeout_s: float = 0.5
    """A Joy input older than this releases (the pad went silent)."""
    max_dt: float = 0.1
    """At most this much time is integrated per step (a late step never makes a larger jump)."""

    @classmethod
    def from_json(cls, text: str, **kw) -> GamepadConfig:
        """From a JSON object of these fields (``axes`` and ``marks`` keys as strings of ints); unknown keys refused."""
        raw = json.loads(text) if text.strip() else {}
        if not isinstance(raw, dict):
            raise ValueError(f"gamepad config: {text[:60]!r}; expected a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"gamepad config: unknown field(s) {sorted(unknown)}; expected "
                             f"{sorted(cls.__dataclass_fields__)}")
        expected = {"axes": "an object of joint index -> axis index", "marks": "an object of button index -> mark",
                    "dims": "a list of joint indices"}
        for k in expected:
            if raw.get(k) is None:
                continue
            try:
                if k == "dims":
                    raw[k] = tuple(int(d) for d in raw[k])
                else:
                    raw[k] = {int(a): (int(b) if k == "axes" else str(b)) for a, b in raw[k].items()}
            except (AttributeError, TypeError, ValueError):
                raise ValueError(f"gamepad config: {k} is {raw[k]!r}; expected {expected[k]}") from None
        return cls(**{**raw, **kw})


class GamepadTeleop:
    """Joy messages → a ``Takeover``: ``joy(axes, buttons, t)`` takes each message (the episode marks its presses
    make; a malformed one: none, counted in ``malformed``), ``step(q, t)`` gives the command of a step."""

    def __init__(self, takeover: Takeover, cfg: GamepadConfig | None = None):
        self.t = takeover
        self.cfg = cfg = cfg or GamepadConfig()
        bad = [j for j in cfg.axes if not 0 <= int(j) < takeover.n]
        if bad or (cfg.dims is not None and not all(0 <= d < takeover.n for d in cfg.dims)):
            raise ValueError(f"gamepad config: joints {bad or list(cfg.dims)} out of range [0, {takeover.n})")
        bad_idx = [i for i in (*cfg.axes.values(), cfg.deadman, *cfg.marks) if int(i) < 0]
        bad_marks = sorted(set(cfg.marks.values()) - set(EPISODE_KEYS.values()))
        if bad_idx or bad_marks:
            raise ValueError(f"gamepad config: axis/button indices {bad_idx} (expected >= 0), marks {bad_marks} "
                             f"(expected some of {sorted(EPISODE_KEYS.values())})")
        if not (cfg.speed > 0 and 0 <= cfg.deadzone < 1 and cfg.timeout_s > 0 and cfg.max_dt > 0):
            raise ValueError(f"gamepad config: speed {cfg.speed} (> 0), deadzone {cfg.deadzone} (in [0, 1)), "
                             f"timeout_s {cfg.timeout_s} (> 0), max_dt {cfg.max_dt} (> 0)")
        self.joints = np.array(sorted(cfg.axes), dtype=np.int64)
        self.axis_of = np.array([cfg.axes[j] for j in self.joints], dtype=np.int64)
        self.n_axes = int(self.axis_of.max()) + 1 if self.axis_of.size else 0
        self.n_buttons = max([cfg.deadman, *cfg.marks]) + 1
        self.malformed = 0
        self.last_error = ""
        self.deadman = False
        self.velocity = np.zeros(self.joints.size)
        self.t_joy: float | None = None
        self.t_step: float | None = None
        self._buttons = np.zeros(self.n_buttons, bool)
        self.blocked = False
        """After ``release``: the deadman must be let go before it takes over again."""

    def release(self) -> None:
        """Hand every joint back (an episode end, or the safety node gave authority to someone else); a deadman still
        held takes over again only after it was let go."""
        self.t.release()
        self.blocked = True

    def joy(self, axes, buttons, t: float) -> list[str]:
        try:
            a = np.asarray(axes, dtype=np.float64).reshape(-1)
            b = np.asarray(buttons, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError) as e:
            return self._bad(f"not numeric arrays ({e})")
        if a.size < self.n_axes or b.size < self.n_buttons:
            return self._bad(f"{a.size} axes and {b.size} buttons; the mapping needs at least {self.n_axes} and "
                             f"{self.n_buttons}")
        a, b = a[: self.n_axes], b[: self.n_buttons]
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            return self._bad("a non-finite axis or button value")
        if not math.isfinite(t):
            return self._bad(f"time {t}")
        pressed = b > 0.5
        v = a[self.axis_of] if self.axis_of.size else np.zeros(0)
        v = np.where(np.abs(v) < self.cfg.deadzone, 0.0, np.clip(v, -1.0, 1.0))
        self.velocity = v * self.cfg.speed
        self.deadman = bool(pressed[self.cfg.deadman])
        self.blocked = self.blocked and self.deadman
        self.t_joy = float(t)
        out = [m for i, m in sorted(self.cfg.marks.items()) if pressed[i] and not self._buttons[i]]
        self._buttons = pressed
        return out

    def _bad(self, why: str) -> list[str]:
        self.malformed += 1
        self.last_error = why
        return []

    def step(self, q, t: float) -> Command:
        fresh = self.t_joy is not None and t - self.t_joy <= self.cfg.timeout_s
        dt = 0.0 if self.t_step is None else min(max(t - self.t_step, 0.0), self.cfg.max_dt)
        self.t_step = t
        q = np.asarray(q, dtype=np.float64)
        if not (fresh and self.deadman) or self.blocked:
            self.t.release()
            return self.t.command()
        if not self.t.held.any():
            try:
                self.t.take(q, self.cfg.dims)
            except ValueError:
                return self.t.command()  # no usable measurement yet: still the policy's
            return self.t.command()  # the takeover's first step holds where the arm is
        self.t.move(self.joints, self.velocity * dt)
        return self.t.command()


__all__ = ["EPISODE_KEYS", "HELP", "Command", "GamepadConfig", "GamepadTeleop", "KeyboardTeleop", "Takeover"]
