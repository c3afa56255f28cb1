"""Intervention logs: a recorded bag (``stack.ros.bag``) back into the steps and episodes the robot lived.

The recorder stores every topic as it arrived (``stack.ros.topics``). A **step** is one policy step: the policy's
observation and its proposal (they share the ``header.stamp`` of the observation's oldest source). The rest is
joined to it:

* **Executed command, authority, intervention mask, safety status**: the safety node publishes the four together
  per decision, in that order; only the command is stamped, so they are grouped by the senders' DDS source times
  (the bag's ``publish_time``; the arrival time where a bag has none). A step's decision is the one stamped with
  the step's stamp (the policy had authority and the command answers it); else the last one published before the
  next step began — a human's command, a hold, or the one still in force (a controller keeps its last command).
* **Reward, success** (the sim robot, per control step, unstamped): the reward for the command executed during a
  step is published after the step's observation and before the next, so each goes to the last step published
  before it (summed if several fall into one step; NaN where none did) — never across an episode event: the policy
  is not phase-locked to the sim, whose first control step of an episode may come before the policy's first step
  in it (on the command left from the reset); such rewards are the episode's ``unstepped_reward``.
* **Episodes** (``/r2s/episode`` start/end, stamped with the robot's clock): a step belongs to the episode whose
  start stamp is before its stamp and whose end stamp after it (the observation stamped with the end is the
  terminal state, not a step). An episode whose end was lost (a cut file, a killed sim) ends at the next start and
  has no outcome; one whose start was lost starts at the previous end (both lost: the two split at the longest
  pause between steps, the reset). All are warned about, never dropped.
  A bag without any episode event is one episode without an outcome.

``read_log(BAG)`` gives a ``BagLog``; ``summary(log)`` is what ``r2s logs info`` prints. Damage to the files is
``read_bag``'s to recover: its ``BagRecoveryWarning`` s (file and byte offset) are kept in ``BagLog.warnings``.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stack.data.episodes import AUTHORITY, AUTHORITY_NAMES

UNKNOWN_AUTHORITY = -1
"""The authority code of a step no recorded decision covers."""

STEP_FIELDS = ("time_ns", "log_time_ns", "stamp_ns", "observation", "proposal", "executed", "executed_stamp_ns",
               "authority", "intervention_mask", "safety_status", "reward", "success")
"""Per-step arrays of an episode (first axis: steps). ``time_ns``: when the policy published the observation (the
source time; the arrival time where a bag has none), ``log_time_ns``: when the recorder received it,
``stamp_ns``: its ``header.stamp`` (the robot's clock); ``authority``: ``stack.data.episodes.AUTHORITY`` codes
(-1: no decision recorded); ``intervention_mask``: bool per action dimension (True: not commanded by the policy);
``safety_status``: ``ok`` | ``homing`` | ``hold: …``; ``reward``: float64, NaN where none was recorded."""


class LogWarning(UserWarning):
    """The bag's messages do not join up as the recorder writes them (a lost episode event, a decision in part)."""


def _warn(text: str) -> None:
    warnings.warn(f"read_log: {text}", LogWarning, stacklevel=3)


@dataclass
class Episode:
    index: int | None
    """The recorder's episode number (None: a bag without episode events)."""
    outcome: str | None
    """``success`` | ``failure`` | ``timeout``; None when no end event was recorded (excluded from outcome labels)."""
    success_step: int | None
    """The first successful control step, 1-based, as the sim counted it (None: none)."""
    robot: str
    task: str
    policy_version: str
    """The ONNX content hash of the policy that ran (the recorder adds it to each episode event)."""
    values: dict[str, str]
    """Every value of the start and end events (seed, length, return, reason, run_id …)."""
    steps: dict[str, np.ndarray]
    unstepped_reward: float = 0.0
    """Rewards of the episode no policy step took: the sim's control steps that ran before the policy's first step
    in it (on the command left from the reset). The episode's return is this plus the steps' rewards."""

    @property
    def length(self) -> int:
        return len(self.steps["time_ns"])


@dataclass
class BagLog:
    path: Path
    episodes: list[Episode]
    outside: dict[str, np.ndarray]
    """Steps outside every episode (between episodes: the scene resetting, the arm homing)."""
    topics: dict[str, dict]
    """Per topic: ``count``, ``first_ns``, ``last_ns`` (arrival times)."""
    custom_data: dict[str, str]
    """``metadata.yaml``'s custom_data (robot, task, policy_version, stop reason …); empty without it."""
    obs_names: list[str]
    action_names: list[str]
    warnings: list[str] = field(default_factory=list)
    """Every ``BagRecoveryWarning`` and ``LogWarning`` of reading it, in order."""


# ---- reading ------------------------------------------------------------------------------------------------------
def read_log(path: str | os.PathLike) -> BagLog:
    """A bag's steps and episodes; damage is warned about (and kept in ``warnings``), never raised."""
    from stack.ros import topics as T
    from stack.ros.bag import read_bag

    path = Path(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fields = _fields(T)
        msgs = read_bag(path, decode=fields, publish_time=True)  # the other topics are only counted
        stats = {name: {"count": len(rows), "first_ns": min(r[0] for r in rows), "last_ns": max(r[0] for r in rows)}
                 for name, rows in sorted(msgs.items()) if rows}
        for topic, need in fields.items():
            if topic in msgs:
                msgs[topic] = _well_formed(topic, msgs[topic], need)
        custom = _custom_data(path)
        events = _events(msgs.get(T.EPISODE, []))
        steps, obs_names, action_names, unstepped = _steps(msgs, T, barriers=[e[1] for e in events])
        policy_infos = _policy_infos(msgs.get(T.POLICY_INFO, []))
        episodes, outside = _episodes(steps, events, policy_infos, custom, unstepped)
    texts = []
    for w in caught:  # shown to the caller as they came, and kept for the summary
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        texts.append(str(w.message))
    return BagLog(path, episodes, outside, stats, custom, obs_names, action_names, texts)


def _fields(T) -> dict[str, tuple[str, type | None]]:
    """The topics a step is built from: (fields their messages must have, the type of ``data``) per
    ``stack.ros.topics``' message types."""
    trajectory, string = ("header", "joint_names", "points"), (("data",), str)
    return {T.OBSERVATION: (("header", "name", "position"), None), T.PROPOSAL: (trajectory, None),
            T.EXECUTED: (trajectory, None), T.AUTHORITY: string, T.INTERVENTION_MASK: (("layout", "data"), None),
            T.SAFETY_STATUS: string, T.REWARD: (("data",), float), T.SUCCESS: (("data",), bool),
            T.EPISODE: (("header", "status"), None), T.POLICY_INFO: (("status",), None)}


def _well_formed(topic: str, rows: list, need: tuple) -> list:
    """The messages of ``topic`` of the type the r2s nodes publish there (one recorded with another type is
    dropped, and said so)."""
    names, data_type = need
    kept = [r for r in rows if all(hasattr(r[2], f) for f in names)
            and (data_type is None or isinstance(r[2].data, data_type))]
    if len(kept) < len(rows):
        _warn(f"{len(rows) - len(kept)} message(s) on {topic} are not of the type the r2s nodes publish there; "
              "ignored")
    return kept


def _custom_data(path: Path) -> dict[str, str]:
    meta = path / "metadata.yaml" if path.is_dir() else None
    if meta is None or not meta.is_file():
        return {}
    import yaml

    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster on a long metadata.yaml
        info = yaml.load(meta.read_text(), Loader=loader)["rosbag2_bagfile_information"]
        return {str(k): str(v) for k, v in (info.get("custom_data") or {}).items()}
    except Exception:  # read_bag has already warned about an unreadable metadata.yaml
        return {}


def _time(log_ns: int, pub_ns: int) -> int:
    return pub_ns or log_ns


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def _rows(values: list, width: int, what: str) -> np.ndarray:
    """Stack 1-D rows into [n, width] float64; a row of another length is NaN (and warned about)."""
    out = np.full((len(values), width), np.nan)
    bad = 0
    for i, v in enumerate(values):
        v = np.asarray(v, dtype=np.float64)
        if v.shape == (width,):
            out[i] = v
        elif v.size:
            bad += 1
    if bad:
        _warn(f"{bad} {what} message(s) have another length than {width}; NaN there")
    return out


def _steps(msgs: dict, T, barriers=()) -> tuple[dict[str, np.ndarray], list[str], list[str], np.ndarray]:
    """Every policy step of the bag, in publication order, with its decision, reward and success joined; and the
    [time, reward] rows no step took (``_join_rewards``)."""
    obs = sorted(msgs.get(T.OBSERVATION, []), key=lambda r: _time(r[0], r[1]))
    decisions = _decisions(msgs, T)
    obs_names = list(obs[-1][2].name) if obs else []
    action_names = list(decisions["names"])
    n, act_dim = len(obs), decisions["executed"].shape[1]
    if not action_names and msgs.get(T.PROPOSAL):
        action_names = list(msgs[T.PROPOSAL][-1][2].joint_names)
        act_dim = len(action_names)
    steps = {
        "time_ns": np.array([_time(r[0], r[1]) for r in obs], dtype=np.int64),
        "log_time_ns": np.array([r[0] for r in obs], dtype=np.int64),
        "stamp_ns": np.array([_stamp(r[2]) for r in obs], dtype=np.int64),
        "observation": _rows([r[2].position for r in obs], len(obs_names), "observation"),
    }
    steps["proposal"] = _proposals(msgs.get(T.PROPOSAL, []), steps["stamp_ns"], act_dim)
    _join_decisions(steps, decisions, act_dim)
    unstepped = _join_rewards(steps, msgs.get(T.REWARD, []), msgs.get(T.SUCCESS, []), barriers)
    assert all(len(steps[k]) == n for k in STEP_FIELDS)
    return steps, obs_names, action_names, unstepped


def _proposals(rows: list, stamps: np.ndarray, act_dim: int) -> np.ndarray:
    """The proposal stamped like each step's observation (NaN where none was recorded)."""
    by_stamp: dict[int, list] = {}
    for _log, _pub, m in sorted(rows, key=lambda r: _time(r[0], r[1])):
        by_stamp.setdefault(_stamp(m), []).append(m.points[0].positions if m.points else [])
    out = []
    for s in stamps.tolist():
        queue = by_stamp.get(s)
        out.append(queue.pop(0) if queue else [])
    return _rows(out, act_dim, "proposal")


def _decisions(msgs: dict, T) -> dict[str, np.ndarray]:
    """The safety node's decisions: each executed command grouped with the authority, mask and status published
    right after it. Sorted by source time with the publication order breaking ties; a part whose command was lost
    opens a decision of its own (command NaN), so no later decision is shifted by a loss."""
    parts = ((T.EXECUTED, "executed"), (T.AUTHORITY, "authority"), (T.INTERVENTION_MASK, "mask"),
             (T.SAFETY_STATUS, "status"))
    queue = sorted(((_time(log, pub), rank, i, slot, m) for rank, (topic, slot) in enumerate(parts)
                    for i, (log, pub, m) in enumerate(msgs.get(topic, []))), key=lambda q: q[:3])
    groups: list[dict] = []
    for t, _rank, _i, slot, m in queue:
        if slot == "executed" or not groups or slot in groups[-1]:
            groups.append({"time": t})
        groups[-1][slot] = m
    partial = sum(len(g) < 5 for g in groups)
    if partial:
        _warn(f"{partial} of {len(groups)} safety decisions recorded in part (executed command, authority, mask or "
              "status missing); the missing fields are NaN / unknown")
    names = next((list(g["executed"].joint_names) for g in reversed(groups) if "executed" in g), [])
    width = len(names) or max((len(g["mask"].data) for g in groups if "mask" in g), default=0)
    executed = _rows([g["executed"].points[0].positions if "executed" in g and g["executed"].points else []
                      for g in groups], width, "executed")
    mask = _rows([g["mask"].data if "mask" in g else [] for g in groups], width, "intervention_mask")
    return {
        "names": np.array(names, dtype=object),
        "time_ns": np.array([g["time"] for g in groups], dtype=np.int64),
        "stamp_ns": np.array([_stamp(g["executed"]) if "executed" in g else 0 for g in groups], dtype=np.int64),
        "executed": executed,
        "authority": np.array([AUTHORITY.get(g["authority"].data, UNKNOWN_AUTHORITY) if "authority" in g
                               else UNKNOWN_AUTHORITY for g in groups], dtype=np.int64),
        "mask": mask,
        "status": np.array([g["status"].data if "status" in g else "" for g in groups], dtype=object),
    }


def _next_times(times: np.ndarray) -> np.ndarray:
    """When each step's interval ends: the next step's time; for the last, one typical step period later."""
    if len(times) == 0:
        return times
    period = int(np.median(np.diff(times))) if len(times) > 1 else 0
    return np.append(times[1:], times[-1] + max(period, 1))


def _join_decisions(steps: dict, d: dict, act_dim: int) -> None:
    n = len(steps["time_ns"])
    which = np.full(n, -1, dtype=np.int64)
    by_stamp: dict[int, list[int]] = {}
    for i, s in enumerate(d["stamp_ns"].tolist()):
        by_stamp.setdefault(s, []).append(i)
    # The last decision published before the next step began (in force during the step) …
    last_before_next = np.searchsorted(d["time_ns"], _next_times(steps["time_ns"]), side="left") - 1
    for k, s in enumerate(steps["stamp_ns"].tolist()):
        answers = by_stamp.get(s)
        # … unless a decision answers this very step (its stamp): the policy had authority.
        which[k] = answers.pop(0) if answers else last_before_next[k]
    found = which >= 0
    idx = np.where(found, which, 0)

    def pick(values: np.ndarray, missing):
        out = values[idx] if len(values) else np.full((n, *values.shape[1:]), missing, dtype=values.dtype)
        out[~found] = missing
        return out

    steps["executed"] = pick(d["executed"], np.nan) if len(d["executed"]) else np.full((n, act_dim), np.nan)
    steps["executed_stamp_ns"] = pick(d["stamp_ns"], 0)
    steps["authority"] = pick(d["authority"], UNKNOWN_AUTHORITY)
    mask = pick(d["mask"], np.nan) if len(d["mask"]) else np.full((n, act_dim), np.nan)
    steps["intervention_mask"] = np.nan_to_num(mask, nan=0.0) > 0.5
    steps["safety_status"] = pick(d["status"], "")


def _join_rewards(steps: dict, rewards: list, successes: list, barriers=()) -> np.ndarray:
    """Each reward (and success flag) to the last step published before it — unless an episode event lies between
    them: the sim's first control steps of an episode may run before the policy's first step in it (on the command
    left from the reset), and their rewards belong to no step. Returns those as [time_ns, reward] rows."""
    times = steps["time_ns"]
    reward, success = np.full(len(times), np.nan), np.zeros(len(times), dtype=bool)
    ends, barriers = _next_times(times), np.sort(np.asarray(barriers, dtype=np.int64))
    unstepped = []
    for rows, is_reward in ((rewards, True), (successes, False)):
        for log, pub, m in sorted(rows, key=lambda r: _time(r[0], r[1])):
            t = _time(log, pub)
            k = int(np.searchsorted(times, t, side="right")) - 1
            crossed = k >= 0 and np.searchsorted(barriers, times[k], side="right") < np.searchsorted(
                barriers, t, side="right")
            if k < 0 or t >= ends[k] or crossed:
                if is_reward:
                    unstepped.append((t, float(m.data)))
                continue
            if is_reward:
                reward[k] = float(m.data) + (0.0 if math.isnan(reward[k]) else reward[k])
            else:
                success[k] = bool(m.data)  # the flag after the step: the last one published during it
    steps["reward"], steps["success"] = reward, success
    return np.array(unstepped, dtype=np.float64).reshape(-1, 2)


# ---- episodes -----------------------------------------------------------------------------------------------------
def _events(rows: list) -> list[tuple[int, int, str, dict[str, str]]]:
    """(stamp, publication time, start | end, values) of each well-formed episode event, in publication order."""
    from stack.ros.episode_tracker import episode_event
    from stack.ros.messages import BadMessage

    out = []
    for log, pub, m in sorted(rows, key=lambda r: _time(r[0], r[1])):
        try:
            event, values = episode_event(m)
        except BadMessage as e:
            _warn(f"an episode event at {log} ns is malformed ({e}); ignored")
            continue
        out.append((_stamp(m) or _time(log, pub), _time(log, pub), event, values))
    return out


def _policy_infos(rows: list) -> list[tuple[int, dict[str, str]]]:
    out = []
    for log, pub, m in rows:
        if m.status:
            out.append((_time(log, pub), {kv.key: kv.value for kv in m.status[0].values}))
    return sorted(out, key=lambda r: r[0])


def _spans(events: list) -> list[list]:
    """[start stamp, end stamp, start values, end values, start time, end time] per episode, in order (times: of
    publication); a lost event's stamp and time are None (its values {} / None), for ``_resolve`` to infer."""
    spans: list[list] = []
    for stamp, time_ns, event, values in events:
        open_span = spans[-1] if spans and spans[-1][1] is None else None
        if event == "start":
            if open_span is not None:
                _warn(f"episode {open_span[2].get('episode')} has no end event (a lost or cut file?): its steps up "
                      "to the next start are kept, without an outcome")
            spans.append([stamp, None, values, None, time_ns, None])
        elif open_span is not None and open_span[2].get("episode") == values.get("episode"):
            open_span[1], open_span[3], open_span[5] = stamp, values, time_ns
        else:
            if open_span is not None:
                _warn(f"episode {open_span[2].get('episode')} has no end event (a lost or cut file?): kept, without "
                      "an outcome")
            _warn(f"episode {values.get('episode')} has no start event (a lost or cut file?): its steps since the "
                  "previous episode are kept")
            spans.append([None, stamp, {}, values, None, time_ns])
    if spans and spans[-1][1] is None:
        _warn(f"episode {spans[-1][2].get('episode')} has no end event (recording cut short?): its steps to the end "
              "of the bag are kept, without an outcome")
    return spans


def _resolve(spans: list[list], stamps: np.ndarray) -> list[list]:
    """Fill in lost boundaries: a lost end is the next episode's start, a lost start the previous episode's end; when
    both are lost (an episode's end and the next one's start), the two split at the longest pause between steps —
    the reset between them."""
    for i, span in enumerate(spans):
        if span[0] is None:
            span[0] = spans[i - 1][1] if i > 0 else -math.inf
        if span[1] is None:
            after = spans[i + 1] if i + 1 < len(spans) else None
            if after is None:
                span[1] = math.inf
            elif after[0] is not None:
                span[1] = after[0]
            else:
                between = np.sort(stamps[(stamps > span[0]) & (stamps < after[1])])
                cut = int(np.argmax(np.diff(between))) if len(between) > 1 else -1
                split = int(between[cut]) if cut >= 0 else span[0]
                span[1], after[0] = split + 1, split  # the step stamped ``split`` is this one's last
    return spans


def _episodes(steps: dict, events: list, infos: list, custom: dict,
              unstepped: np.ndarray) -> tuple[list[Episode], dict]:
    stamps = steps["stamp_ns"]
    spans = _resolve(_spans(events), stamps) if events else \
        [[-math.inf, math.inf, {}, None, None, None]] if len(stamps) else []
    inside = np.zeros(len(stamps), dtype=bool)
    episodes = []
    for i, (start, end, first, last, t_start, t_end) in enumerate(spans):
        sel = (stamps > start) & (stamps < end)
        t_lo = t_start if t_start is not None else steps["time_ns"][sel][0] if sel.any() else math.inf
        # A lost end closes the window of unstepped rewards at the next start (its rewards are the next episode's).
        t_next = spans[i + 1][4] if i + 1 < len(spans) else None
        t_hi = t_end if t_end is not None else t_next if t_next is not None else math.inf
        orphans = unstepped[(unstepped[:, 0] > t_lo) & (unstepped[:, 0] <= t_hi), 1]
        inside |= sel
        values = {**first, **(last or {})}
        t0 = steps["time_ns"][sel][0] if sel.any() else 0
        info = next((v for t, v in reversed(infos) if t <= t0), infos[0][1] if infos else {})
        index = values.get("episode")
        success_step = values.get("success_step", "") if last else ""
        episodes.append(Episode(
            index=int(index) if index is not None and index.lstrip("-").isdigit() else None,
            outcome=last.get("outcome") if last else None,
            success_step=int(success_step) if success_step.isdigit() else None,
            robot=values.get("robot") or info.get("robot") or custom.get("robot", ""),
            task=values.get("task") or custom.get("task", ""),
            policy_version=values.get("policy_version") or info.get("policy_version")
            or custom.get("policy_version", ""),
            values=values, steps={k: v[sel] for k, v in steps.items()}, unstepped_reward=float(np.sum(orphans))))
    return episodes, {k: v[~inside] for k, v in steps.items()}


# ---- r2s logs info ------------------------------------------------------------------------------------------------
def _runs(flags: np.ndarray) -> int:
    """How many runs of consecutive True a boolean array holds (one takeover = one run)."""
    flags = np.asarray(flags, dtype=bool)
    return int(np.count_nonzero(flags[1:] & ~flags[:-1]) + (1 if flags.size and flags[0] else 0))


def summary(log: BagLog) -> dict:
    """What ``r2s logs info`` prints: episodes, duration, per-topic rates, interventions, outcomes, versions."""
    eps = log.episodes
    steps = sum(e.length for e in eps)
    human = AUTHORITY["human"]
    authority = np.concatenate([e.steps["authority"] for e in eps]) if eps else np.zeros(0, np.int64)
    masks = [e.steps["intervention_mask"] for e in eps if e.length]
    human_dims = sum(int(np.count_nonzero(m[e.steps["authority"] == human]))
                     for e, m in zip((e for e in eps if e.length), masks))
    dims = sum(m.size for m in masks)
    first = min((s["first_ns"] for s in log.topics.values()), default=0)
    last = max((s["last_ns"] for s in log.topics.values()), default=0)
    outcomes: dict[str, int] = {}
    for e in eps:
        outcomes[e.outcome or "none"] = outcomes.get(e.outcome or "none", 0) + 1
    versions: dict[str, int] = {}
    for e in eps:
        versions[e.policy_version or "unknown"] = versions.get(e.policy_version or "unknown", 0) + 1
    return {
        "path": str(log.path),
        "episodes": len(eps),
        "steps": steps,
        "steps_outside_episodes": int(len(log.outside["time_ns"])),
        "duration_s": (last - first) / 1e9,
        "start_ns": first,
        "interventions": sum(_runs(e.steps["authority"] == human) for e in eps),
        "intervened_episodes": sum(bool(np.any(e.steps["authority"] == human)) for e in eps),
        "human_share": float(np.mean(authority == human)) if steps else 0.0,
        "human_dim_share": human_dims / dims if dims else 0.0,
        "authority_share": {name: float(np.mean(authority == code)) if steps else 0.0
                            for code, name in {**AUTHORITY_NAMES, UNKNOWN_AUTHORITY: "unknown"}.items()},
        "hold_share": float(np.mean([s.startswith("hold") for e in eps for s in e.steps["safety_status"]]))
        if steps else 0.0,
        "outcomes": outcomes,
        "without_outcome": outcomes.get("none", 0),
        "policy_versions": versions,
        "robots": sorted({e.robot for e in eps if e.robot}),
        "tasks": sorted({e.task for e in eps if e.task}),
        "topics": {name: {"count": s["count"],
                          "rate_hz": (s["count"] - 1) / ((s["last_ns"] - s["first_ns"]) / 1e9)
                          if s["count"] > 1 and s["last_ns"] > s["first_ns"] else None}
                   for name, s in log.topics.items()},
        "per_episode": [{"episode": e.index, "steps": e.length, "outcome": e.outcome, "success_step": e.success_step,
                         "robot": e.robot, "task": e.task, "policy_version": e.policy_version,
                         "human_steps": int(np.count_nonzero(e.steps["authority"] == human)),
                         "return": (float(np.nansum(e.steps["reward"])) if e.length else 0.0) + e.unstepped_reward}
                        for e in eps],
        "warnings": list(log.warnings),
    }


def format_summary(s: dict) -> str:
    """The human-readable ``r2s logs info``."""
    lines = [f"{s['path']}: {s['episodes']} episode(s), {s['steps']} step(s) ({s['steps_outside_episodes']} outside "
             f"episodes), {s['duration_s']:.2f} s",
             f"  robots {', '.join(s['robots']) or '?'}; tasks {', '.join(s['tasks']) or '?'}",
             f"  interventions: {s['interventions']} takeover(s) in {s['intervened_episodes']} episode(s); human "
             f"authority on {s['human_share']:.1%} of steps, {s['human_dim_share']:.1%} of action dimensions; "
             f"holds on {s['hold_share']:.1%} of steps",
             "  outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(s["outcomes"].items()))
             + (f" ({s['without_outcome']} without an outcome: excluded from outcome labels)"
                if s["without_outcome"] else ""),
             "  policy versions: " + ", ".join(f"{k} ({v} episode(s))" for k, v in s["policy_versions"].items()),
             "  topics:"]
    width = max((len(t) for t in s["topics"]), default=0)
    for name, t in s["topics"].items():
        rate = f"{t['rate_hz']:8.1f} Hz" if t["rate_hz"] is not None else "       - Hz"
        lines.append(f"    {name:<{width}} {t['count']:8d} msgs {rate}")
    if s["warnings"]:
        lines.append(f"  {len(s['warnings'])} warning(s) while reading (above)")
    return "\n".join(lines)
