"""Episode bookkeeping, free of ROS: what the sim robot counts per episode and announces, and how the other nodes
read those announcements.

``EpisodeTracker`` (the sim robot's): episode k is reset with seed ``seed + k``; each control step adds its reward
and success flag; the episode ends on termination or at ``max_steps`` with outcome ``success`` (the last step
reports success), ``failure`` (a terminal state) or ``timeout``, and ``success_step`` = the first successful step
(1-based); with ``auto_reset`` the next one starts ``reset_delay_s`` later, up to ``episodes`` (0: no limit). The
event values are the ``/r2s/episode`` message's (``stack.ros.topics.EPISODE``).

``episode_event`` validates a received ``/r2s/episode`` message (duck-typed ``DiagnosticArray``) and returns its
event and values; a malformed one is a ``BadMessage``.
"""

from __future__ import annotations

from stack.ros.messages import BadMessage

EVENTS = ("start", "end")


def episode_event(msg, topic: str = "/r2s/episode") -> tuple[str, dict[str, str]]:
    """(``start`` | ``end``, values) of an episode message."""
    if not msg.status:
        raise BadMessage(f"{topic}: no status")
    status = msg.status[0]
    if status.message not in EVENTS:
        raise BadMessage(f"{topic}: message {status.message!r}; expected one of {list(EVENTS)}")
    values = {kv.key: kv.value for kv in status.values}
    if "episode" not in values:
        raise BadMessage(f"{topic}: no 'episode' value")
    return status.message, values


class EpisodeTracker:
    def __init__(self, max_steps: int | None, seed: int = 0, episodes: int = 0, auto_reset: bool = True,
                 reset_delay_s: float = 0.0):
        self.max_steps = max_steps
        self.seed = int(seed)
        self.episodes = int(episodes)
        self.auto_reset = auto_reset
        self.reset_delay_s = float(reset_delay_s)
        self.episode = -1
        """Index of the current (or last) episode; -1 before the first."""
        self.in_episode = False
        self.reset_at: float | None = None
        """When (sim time) the next episode is due to start by itself."""
        self._clear()

    def _clear(self) -> None:
        self.length, self.ret, self.success_step, self.last_success = 0, 0.0, None, False

    def warmup_seed(self) -> int:
        """The seed of a reset that is not an episode (the scene before the first one): the next episode's."""
        return self.seed + self.episode + 1

    def start(self) -> dict[str, str]:
        """Begin the next episode; its start event values (besides robot and task)."""
        self.episode += 1
        self._clear()
        self.in_episode = True
        self.reset_at = None
        return {"episode": str(self.episode), "seed": str(self.seed + self.episode)}

    def step(self, reward: float, success: bool, terminated: bool, now_s: float) -> dict[str, str] | None:
        """Account one control step; the end event values if the episode ended with it, else None."""
        self.length += 1
        self.ret += float(reward)
        if success and self.success_step is None:
            self.success_step = self.length
        self.last_success = bool(success)
        truncated = self.max_steps is not None and self.length >= self.max_steps and not terminated
        if not (terminated or truncated):
            return None
        outcome = "success" if success else ("failure" if terminated else "timeout")
        values = self.end(outcome)
        if self.auto_reset and self.more():
            self.reset_at = now_s + self.reset_delay_s
        return values

    def more(self) -> bool:
        """Whether another episode may start (``episodes`` not reached)."""
        return self.episodes <= 0 or self.episode + 1 < self.episodes

    def end(self, outcome: str, reason: str = "") -> dict[str, str]:
        """End the current episode; its end event values."""
        values = {"episode": str(self.episode), "outcome": outcome, "length": str(self.length),
                  "return": repr(self.ret), "success_step": "" if self.success_step is None else str(self.success_step)}
        if reason:
            values["reason"] = reason
        self.in_episode = False
        self.length = 0
        return values

    def due(self, now_s: float) -> bool:
        """Whether an automatic reset is due now."""
        return self.reset_at is not None and now_s >= self.reset_at
