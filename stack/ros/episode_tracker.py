"""Episode bookkeeping, free of ROS: what the sim robot counts per episode and announces, and how the other nodes
read those announcements.

``EpisodeTracker`` (the sim robot's): episode k is reset with seed ``seed + k``; each control step adds its reward
and success flag; the episode ends on termination or at ``max_steps`` with outcome ``success`` (the last step
reports success), ``failure`` (a terminal state) or ``timeout``, and ``success_step`` = the first successful step
(1-based); with ``auto_reset`` the next one starts ``reset_delay_s`` later, up to ``episodes`` (0: no limit). The
event values are the ``/r2s/episode`` message's (``stack.ros.topics.EPISODE``).

``episode_event`` validates a received ``/r2s/episode`` message (duck-typed ``DiagnosticArray``) and returns its
event and values; a malformed one is a ``BadMessage``.

On a real robot no task says when an episode starts or how it went: the operator does. ``operator_event`` reads one
of their marks (``start`` | ``end`` | ``success`` | ``failure``, optionally ``: note``; ``stack.ros.topics.
EPISODE_EVENT``) and ``OperatorEpisodes`` (the episode node's) turns the marks into the same ``/r2s/episode``
start/end events the sim publishes: ``success`` / ``failure`` end the open episode with that outcome, ``end`` ends it
without one (kept in the log, excluded from outcome labels), ``start`` begins the next — ending an open one first,
without an outcome. An outcome or end with no episode open is refused (the reply says why); nothing is published.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stack.ros.messages import BadMessage

EVENTS = ("start", "end")
OPERATOR_EVENTS = ("start", "end", "success", "failure")
"""The operator's episode marks (topic ``/r2s/episode_event``, services ``/r2s/episode/<mark>``, keyboard keys)."""
MAX_NOTE = 200
"""Characters of an operator's note kept (``failure: dropped the cube``)."""


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


# ---- episodes the operator marks (a real robot) --------------------------------------------------------------------
def operator_marked(values: dict[str, str]) -> bool:
    """Whether an ``/r2s/episode`` event's values are the episode node's (an operator's marks on a real robot), not a
    sim task's: nothing resets the robot's state at its start, and only the operator can tell its outcome."""
    return values.get("source") == "operator"


def operator_event(text, topic: str = "/r2s/episode_event") -> tuple[str, str]:
    """(mark, note) of an operator's ``<mark>[: note]`` text; case and surrounding blanks do not matter. Anything else
    is a ``BadMessage``."""
    if not isinstance(text, str):
        raise BadMessage(f"{topic}: data is a {type(text).__name__}; expected a string")
    word, _, note = text.partition(":")
    word = word.strip().lower()
    if word not in OPERATOR_EVENTS:
        raise BadMessage(f"{topic}: {text[:40]!r} is not an episode mark; expected one of {list(OPERATOR_EVENTS)} "
                         "(optionally followed by ': note')")
    return word, " ".join(note.split())[:MAX_NOTE]


@dataclass
class Mark:
    """What one operator mark did: whether it was accepted, the reply (a service's ``message``), and the
    ``/r2s/episode`` events (``start`` | ``end``, values) to publish, in order."""

    accepted: bool
    reply: str
    events: list[tuple[str, dict[str, str]]] = field(default_factory=list)


class OperatorEpisodes:
    """Episode boundaries and outcomes from the operator's marks; values as the sim's events, with ``source`` =
    ``operator``, ``duration_s``, ``reason`` and the operator's ``note``; an end without an outcome has no
    ``outcome`` value (``stack.data.logs`` reads it as None)."""

    def __init__(self, first_episode: int = 0):
        self.episode = int(first_episode) - 1
        """Index of the current (or last) episode; first_episode - 1 before the first."""
        self.in_episode = False
        self.started_s = 0.0
        self.counts = dict.fromkeys(("episodes", "success", "failure", "without_outcome", "refused"), 0)

    def continued(self, first_episode: int = 0) -> OperatorEpisodes:
        """A fresh tracker (no open episode, counts at 0) numbering on after this one's last episode, or from
        ``first_episode`` if that is later: a re-activated node never repeats an episode number in one recording."""
        return OperatorEpisodes(max(int(first_episode), self.episode + 1))

    def mark(self, event: str, now_s: float, note: str = "", by: str = "") -> Mark:
        """Apply one mark (``OPERATOR_EVENTS``) at ``now_s``; ``by`` (topic, service, key) goes into the reason."""
        if event not in OPERATOR_EVENTS:
            raise ValueError(f"event: {event!r}; expected one of {list(OPERATOR_EVENTS)}")
        via = f" ({by})" if by else ""
        if event == "start":
            events = []
            if self.in_episode:
                events.append(("end", self._end(None, now_s, f"operator start{via} without an end", "")))
            self.episode += 1
            self.in_episode, self.started_s = True, float(now_s)
            self.counts["episodes"] += 1
            values = {"episode": str(self.episode), "source": "operator"}
            if note:
                values["note"] = note
            events.append(("start", values))
            before = f" (episode {self.episode - 1} ended without an outcome)" if len(events) > 1 else ""
            return Mark(True, f"episode {self.episode} started{before}", events)
        if not self.in_episode:
            self.counts["refused"] += 1
            return Mark(False, f"no episode is open: '{event}' ignored (mark 'start' first"
                        + ("" if event == "end" else "; an outcome is marked before, and instead of, 'end'") + ")")
        outcome = None if event == "end" else event
        values = self._end(outcome, now_s, f"operator {event}{via}", note)
        tail = f"with outcome {outcome}" if outcome else "without an outcome (kept, excluded from outcome labels)"
        return Mark(True, f"episode {self.episode} ended {tail}", [("end", values)])

    def stop(self, now_s: float, reason: str = "stopped") -> list[tuple[str, dict[str, str]]]:
        """The node stops: the open episode (if any) ends without an outcome."""
        return [("end", self._end(None, now_s, reason, ""))] if self.in_episode else []

    def _end(self, outcome: str | None, now_s: float, reason: str, note: str) -> dict[str, str]:
        values = {"episode": str(self.episode), "source": "operator",
                  "duration_s": f"{max(0.0, now_s - self.started_s):.3f}", "reason": reason}
        if outcome is not None:
            values["outcome"] = outcome
        if note:
            values["note"] = note
        self.counts[outcome or "without_outcome"] += 1
        self.in_episode = False
        return values
