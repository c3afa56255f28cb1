"""The episode schema of r2s on LeRobotDataset v3.0 (``stack.data.lerobot_v3``): ``EpisodeWriter``, ``EpisodeDataset``.

A dataset folder is a real LeRobotDataset v3.0 (LeRobot's ``LeRobotDataset(repo_id, root=…)`` opens it)::

    meta/info.json        LeRobot's fields (codebase_version "v3.0", fps, features, totals, robot_type, …) and ours
                          under "r2s": format, robot, task, obs_layout, authority codes, the recorder's extras
    meta/stats.json       per feature: min, max, mean, std, count, q01 … q99 (what normalisation reads)
    meta/tasks.parquet    the task (its name, e.g. "reach") → task_index 0
    meta/episodes/chunk-000/file-000.parquet   one row per episode (below)
    data/chunk-000/file-000.parquet            the frames of many episodes, a new file past data_files_size_in_mb

Per-frame features (``FRAME_FEATURES``), frame t of an episode; LeRobot's HIL-SERL names where it has them:

* ``observation.state`` [obs_dim]: the observation the action was chosen on (layout: ``info["obs_layout"]``);
* ``action`` [act_dim]: the executed action, in the robot's units (joint targets in rad, or torques);
* ``next.reward``: the reward for executing ``action``; ``next.success``: the task's success flag after it;
* ``next.done``: True on the episode's last frame only (LeRobot's meaning); ``next.truncated``: the episode ended
  there without reaching a terminal state (time limit, operator stop) — so the MDP terminal is done ∧ ¬truncated;
* ``complementary_info.proposal`` [act_dim]: what the policy (or demonstrator) proposed (= ``action`` where no one
  intervened); ``complementary_info.authority``: who commanded the executed action, ``AUTHORITY`` code (0 policy,
  1 human, 2 baseline); ``complementary_info.intervention_mask`` [act_dim] bool: the action dimensions someone
  other than the proposer overrode; ``complementary_info.is_intervention`` (HIL-SERL's flag): any of them was;
* LeRobot's bookkeeping: ``timestamp`` (s), ``frame_index`` (0 … length−1), ``episode_index``, ``index`` (global
  frame number), ``task_index``.

Our extras live under ``complementary_info.`` because LeRobot types every feature whose name starts with
``action`` as a policy output; the older names ``action.proposal``, ``authority`` and ``intervention_mask`` still
work as keys of ``frames``, ``episode`` and ``stats`` (``ALIASES``).

Per episode (``meta/episodes``): LeRobot's ``episode_index``, ``tasks``, ``length``, ``data/chunk_index``,
``data/file_index``, ``dataset_from_index``, ``dataset_to_index``, ``stats/<feature>/<stat>``,
``meta/episodes/chunk_index``, ``meta/episodes/file_index``; ours: ``outcome`` (``success`` when the last frame
reports success, else ``failure`` when it ended in a terminal state, else ``timeout``), ``success_step`` (first
frame with ``next.success``, or null), ``return`` (undiscounted, float64 sum of the rewards given to the writer),
``policy_version``, plus any extra keys the recorder adds (``seed``, ``quality`` …). ``EpisodeDataset.episodes``
adds ``task`` (the episode's task) and ``robot`` to each.

Every ``end_episode`` commits the dataset (data file, episode metadata, tasks, stats, info), each file written
beside its name, fsynced and renamed, so a crash loses at most the episode in progress. ``EpisodeDataset`` also
reads datasets LeRobot wrote (any numeric features; ``is_r2s`` False); it validates everything it loads, refuses a
malformed dataset with a ``DatasetError`` naming the file, field, episode and frame, and never writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from stack.data import lerobot_v3 as v3
from stack.data.lerobot_v3 import DatasetError

FORMAT = "r2s-episodes"
FORMAT_VERSION = 2
"""2: LeRobotDataset v3.0 parquet (1 was one ``.npz`` per episode)."""
CODEBASE_VERSION = v3.CODEBASE_VERSION

AUTHORITY: dict[str, int] = {"policy": 0, "human": 1, "baseline": 2}
"""Authority codes of ``complementary_info.authority`` (who commanded the executed action)."""
AUTHORITY_NAMES: dict[int, str] = {v: k for k, v in AUTHORITY.items()}
OUTCOMES = ("success", "failure", "timeout")

PROPOSAL, AUTHORITY_KEY = "complementary_info.proposal", "complementary_info.authority"
MASK, IS_INTERVENTION = "complementary_info.intervention_mask", "complementary_info.is_intervention"
ALIASES: dict[str, str] = {"action.proposal": PROPOSAL, "authority": AUTHORITY_KEY, "intervention_mask": MASK}
"""Older (v1) feature names → the stored ones; accepted by ``frames``, ``episode`` and ``stats``."""

# name -> (dtype, per-frame shape as a function of (obs_dim, act_dim))
_SPEC: dict[str, tuple[str, str]] = {
    "observation.state": ("float32", "obs"),
    "action": ("float32", "act"),
    "next.reward": ("float32", "scalar"),
    "next.done": ("bool", "scalar"),
    "next.truncated": ("bool", "scalar"),
    "next.success": ("bool", "scalar"),
    PROPOSAL: ("float32", "act"),
    AUTHORITY_KEY: ("int64", "scalar"),
    MASK: ("bool", "act"),
    IS_INTERVENTION: ("bool", "scalar"),
    **{name: (ft["dtype"], "scalar") for name, ft in v3.DEFAULT_FEATURES.items()},
}
FRAME_FEATURES: tuple[str, ...] = tuple(_SPEC)
STATS_FEATURES: tuple[str, ...] = ("observation.state", "action", PROPOSAL, "next.reward")
"""Features whose ``meta/stats.json`` entry an r2s dataset must have (normalisation reads them); all have one."""
FINITE_FEATURES: tuple[str, ...] = ("observation.state", "action", PROPOSAL, "timestamp", "next.reward")
EPISODE_FIELDS: dict[str, pa.DataType] = {"outcome": pa.string(), "success_step": pa.int64(),
                                          "return": pa.float64(), "policy_version": pa.string()}
"""Our columns of ``meta/episodes`` (besides LeRobot's ``lerobot_v3.EPISODE_COLUMNS`` and ``stats/*``)."""
DATA_FILES_SIZE_IN_MB = 10
"""The writer's default for ``data_files_size_in_mb`` (LeRobot's is 100): each ``end_episode`` rewrites the current
data file whole (so a crash never loses it), which this bounds to about 0.2 s."""
_DERIVED = ("task", "robot")
"""Keys ``EpisodeDataset.episodes`` adds from the tasks and info (not stored per episode)."""


# ---- schema -----------------------------------------------------------------------------------------------------
def make_features(obs_dim: int, act_dim: int, obs_names: Sequence[str] | None = None,
                  action_names: Sequence[str] | None = None) -> dict[str, dict]:
    """The ``features`` entry of ``meta/info.json``: {name: {dtype, shape, names}} for every per-frame column."""
    obs_names = list(obs_names) if obs_names is not None else [f"state.{i}" for i in range(obs_dim)]
    action_names = list(action_names) if action_names is not None else [f"action.{i}" for i in range(act_dim)]
    if len(obs_names) != obs_dim:
        raise ValueError(f"obs_names has {len(obs_names)} names; obs_dim is {obs_dim}")
    if len(action_names) != act_dim:
        raise ValueError(f"action_names has {len(action_names)} names; act_dim is {act_dim}")
    features = {}
    for name, (dtype, kind) in _SPEC.items():
        shape = {"obs": [obs_dim], "act": [act_dim], "scalar": [1]}[kind]
        names = {"obs": obs_names, "act": action_names, "scalar": None}[kind]
        features[name] = {"dtype": dtype, "shape": shape, "names": names}
    return features


def obs_names_from_layout(layout, joint_names: Sequence[str] = ()) -> list[str]:
    """Per-dimension names of the observation: ``<segment>.<joint>`` for a joint_states segment of one entry per
    joint (e.g. ``joint_pos.shoulder_pan``), ``<segment>.<i>`` otherwise."""
    names: list[str] = []
    for seg in layout:
        if seg.source.startswith("joint_states") and seg.size == len(joint_names):
            names += [f"{seg.name}.{j}" for j in joint_names]
        else:
            names += [f"{seg.name}.{i}" for i in range(seg.size)]
    return names


def compute_stats(columns: dict[str, np.ndarray], keys: Iterable[str] = STATS_FEATURES) -> dict[str, dict]:
    """Per-dimension min, max, mean, std (population), count and quantiles of each feature in ``keys`` (float64)."""
    return {k: v3.feature_stats(columns[ALIASES.get(k, k)]) for k in keys}


def _lerobot_fps(fps: float) -> int | float:
    """LeRobot stores fps as an integer; keep a fractional rate as it is."""
    return int(round(fps)) if abs(fps - round(fps)) < 1e-6 else float(fps)


class _AliasDict(dict):
    """A dict that also answers to the older feature names of ``ALIASES``."""

    def __getitem__(self, key):
        return super().__getitem__(ALIASES.get(key, key))

    def __contains__(self, key):
        return super().__contains__(ALIASES.get(key, key))

    def get(self, key, default=None):
        return super().get(ALIASES.get(key, key), default)


# ---- writing ----------------------------------------------------------------------------------------------------
class EpisodeWriter:
    """Append steps, end episodes, close: writes a LeRobotDataset v3.0 folder as the module docstring describes.

    ``add_step`` takes one step: the observation the action was chosen on, the executed action and what the env
    returned for it. Each ``end_episode`` commits the dataset at once (a crash loses at most the episode in
    progress; a failed write leaves the previous state and the episode's steps, so it can be retried).
    Refuses to write into a folder that already holds a dataset.
    """

    def __init__(self, root: str | Path, *, robot: str, task: str, fps: float, obs_dim: int, act_dim: int,
                 obs_names: Sequence[str] | None = None, action_names: Sequence[str] | None = None,
                 obs_layout: Sequence | None = None, extra_info: dict | None = None,
                 data_files_size_in_mb: float = DATA_FILES_SIZE_IN_MB,
                 chunks_size: int = v3.DEFAULT_CHUNKS_SIZE):
        self.root = Path(root)
        if (self.root / "meta").exists() or (self.root / "data").exists():
            raise FileExistsError(f"{self.root}: already holds a dataset (meta/ or data/); choose an empty folder")
        if not (fps > 0 and data_files_size_in_mb > 0 and chunks_size >= 1):
            raise ValueError(f"fps={fps}, data_files_size_in_mb={data_files_size_in_mb}, chunks_size={chunks_size}:"
                             " all must be positive")
        self.robot, self.task, self.fps = robot, task, float(fps)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.features = make_features(self.obs_dim, self.act_dim, obs_names, action_names)
        self.obs_layout = [dict(name=s.name, size=s.size, source=s.source) for s in obs_layout] if obs_layout else None
        self.extra_info = dict(extra_info or {})
        self.data_files_size_in_mb, self.chunks_size = data_files_size_in_mb, int(chunks_size)
        reserved = {"format", "format_version", "robot", "task", "obs_layout", "authority_codes",
                    *self._info(0, 0)}
        clash = sorted(reserved & set(self.extra_info))
        if clash:
            raise ValueError(f"extra_info: {clash} are set by the writer itself (or by LeRobot's info.json); "
                             "choose other keys")
        self.episodes: list[dict] = []
        self._steps: list[dict] = []
        self._total_frames = 0
        self._total_stats: dict[str, dict[str, np.ndarray]] | None = None  # aggregated over the episodes so far
        self._data_file, self._data_tables = (0, 0), []  # the current data file and its episodes' frames
        self._meta_file, self._meta_rows = (0, 0), []  # the current episode-metadata file and its rows
        self._closed = False
        self.root.mkdir(parents=True, exist_ok=True)

    @classmethod
    def for_task(cls, root: str | Path, task_name: str, env, extra_info: dict | None = None) -> EpisodeWriter:
        """A writer whose features, robot, fps and obs layout come from an r2s task env (``sim.make_task``)."""
        robot = getattr(env, "robot", None)
        obs_dim = int(env.observation_space.shape[0])
        act_dim = int(env.action_space.shape[0])
        joints = list(robot.joint_names) if robot is not None else []
        action_names = joints if len(joints) == act_dim else None
        layout = getattr(env, "obs_layout", None)
        obs_names = obs_names_from_layout(layout, joints) if layout else None
        info = {"action_low": env.action_space.low.tolist(), "action_high": env.action_space.high.tolist(),
                **(extra_info or {})}
        return cls(root, robot=robot.name if robot is not None else "none", task=task_name, fps=1.0 / env.dt,
                   obs_dim=obs_dim, act_dim=act_dim,
                   obs_names=obs_names, action_names=action_names, obs_layout=layout, extra_info=info)

    def add_step(self, obs, action, reward: float, *, terminated: bool = False, truncated: bool = False,
                 success: bool = False, proposal=None, authority: str | int = "policy", intervention_mask=None,
                 timestamp: float | None = None) -> None:
        """Record one step. ``proposal`` defaults to ``action``; ``intervention_mask`` to all False;
        ``timestamp`` to frame_index / fps. ``terminated``/``truncated`` end the episode only via ``end_episode``."""
        if self._closed:
            raise RuntimeError("EpisodeWriter: add_step after close()")
        obs = np.asarray(obs, np.float64).reshape(-1)
        action = np.asarray(action, np.float64).reshape(-1)
        if obs.shape != (self.obs_dim,):
            raise ValueError(f"observation.state has shape {obs.shape}; dataset expects ({self.obs_dim},)")
        if action.shape != (self.act_dim,):
            raise ValueError(f"action has shape {action.shape}; dataset expects ({self.act_dim},)")
        proposal = action if proposal is None else np.asarray(proposal, np.float64).reshape(-1)
        if proposal.shape != (self.act_dim,):
            raise ValueError(f"proposal has shape {proposal.shape}; dataset expects ({self.act_dim},)")
        mask = np.zeros(self.act_dim, bool) if intervention_mask is None else np.asarray(intervention_mask, bool)
        if mask.shape != (self.act_dim,):
            raise ValueError(f"intervention_mask has shape {mask.shape}; dataset expects ({self.act_dim},)")
        if isinstance(authority, str):
            if authority not in AUTHORITY:
                raise ValueError(f"authority: {authority!r} is not one of {list(AUTHORITY)}")
            authority = AUTHORITY[authority]
        elif int(authority) not in AUTHORITY_NAMES:
            raise ValueError(f"authority: code {authority} is not one of {AUTHORITY}")
        frame = len(self._steps)
        self._steps.append(dict(obs=obs, action=action, proposal=proposal, mask=mask, authority=int(authority),
                                reward=float(reward), terminated=bool(terminated), truncated=bool(truncated),
                                success=bool(success),
                                timestamp=frame / self.fps if timestamp is None else float(timestamp)))

    def end_episode(self, *, outcome: str | None = None, policy_version: str | None = None,
                    truncated: bool | None = None, **extra) -> dict:
        """Write the episode recorded since the last call and commit the dataset; returns its metadata.

        The episode ends on its last step. ``truncated`` (default: the last step's flag, or True when the last step
        was not terminal, e.g. an operator stopped it) marks an end without a terminal state. ``outcome`` defaults
        to ``success`` / ``failure`` / ``timeout`` as the module docstring says. ``extra`` keys become columns of
        ``meta/episodes`` (numbers, strings, lists of them, or None).
        """
        if self._closed:
            raise RuntimeError("EpisodeWriter: end_episode after close()")
        if not self._steps:
            raise ValueError("end_episode: no steps recorded since the last episode")
        self._check_extra(extra)
        steps = self._steps
        ep, n = len(self.episodes), len(steps)
        last = steps[-1]
        if truncated is None:
            truncated = last["truncated"] or not last["terminated"]
        success = np.array([s["success"] for s in steps], bool)
        if outcome is None:
            outcome = "success" if success[-1] else ("timeout" if truncated else "failure")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: {outcome!r} is not one of {OUTCOMES}")
        columns = self._episode_columns(steps, ep, bool(truncated), success)
        stats = {k: v3.feature_stats(columns[k]) for k in self.features}
        meta = {"episode_index": ep, "tasks": [self.task], "length": n, "outcome": outcome,
                "success_step": int(np.argmax(success)) if success.any() else None,
                "return": math.fsum(s["reward"] for s in steps),
                "policy_version": None if policy_version is None else str(policy_version), **extra}
        self._commit(v3.frames_table(columns, self.features), meta, stats)
        self._steps = []
        public = {**meta, "task": self.task, "robot": self.robot}
        self.episodes.append(public)
        return public

    def close(self) -> Path:
        """Finish: every episode is already on disk; an episode in progress is dropped (not half-written)."""
        if self._closed:
            return self.root
        self._steps = []
        if not self.episodes:
            raise ValueError(f"{self.root}: no episodes recorded; nothing to close")
        self._closed = True
        return self.root

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.episodes:
            self.close()

    # ---- internals --------------------------------------------------------------------------------------------------
    def _check_extra(self, extra: dict) -> None:
        reserved = set(v3.EPISODE_COLUMNS) | set(EPISODE_FIELDS) | set(_DERIVED)
        for key, value in extra.items():
            if key in reserved or "/" in key:
                raise ValueError(f"end_episode: {key!r} is a reserved episode column (or has a '/'); use another "
                                 "name")
            try:
                pa.array([value])
            except (pa.ArrowException, TypeError, ValueError) as e:
                raise ValueError(f"end_episode: {key}={value!r} cannot be stored in a parquet column ({e})") from None

    def _episode_columns(self, steps: list[dict], ep: int, truncated: bool, success: np.ndarray) -> dict:
        n = len(steps)
        done = np.zeros(n, bool)
        done[-1] = True
        trunc = np.zeros(n, bool)
        trunc[-1] = truncated
        mask = np.stack([s["mask"] for s in steps])
        return {
            "observation.state": np.stack([s["obs"] for s in steps]).astype(np.float32),
            "action": np.stack([s["action"] for s in steps]).astype(np.float32),
            "next.reward": np.array([s["reward"] for s in steps], np.float32),
            "next.done": done, "next.truncated": trunc, "next.success": success,
            PROPOSAL: np.stack([s["proposal"] for s in steps]).astype(np.float32),
            AUTHORITY_KEY: np.array([s["authority"] for s in steps], np.int64),
            MASK: mask, IS_INTERVENTION: mask.any(1),
            "timestamp": np.array([s["timestamp"] for s in steps], np.float32),
            "frame_index": np.arange(n, dtype=np.int64),
            "episode_index": np.full(n, ep, np.int64),
            "index": np.arange(self._total_frames, self._total_frames + n, dtype=np.int64),
            "task_index": np.zeros(n, np.int64),
        }

    def _rolls(self, path: Path, count: int, adding: int) -> bool:
        """LeRobot's rule: start a new file when the current one plus ``adding`` more rows at its average size per
        row would reach ``data_files_size_in_mb``."""
        if count == 0 or not path.exists():
            return False
        size = path.stat().st_size / 2**20
        return size + size / count * adding >= self.data_files_size_in_mb

    def _commit(self, table: pa.Table, meta: dict, stats: dict) -> None:
        """Prepare every file of the new state beside its name, then rename them all (data first, info.json last);
        nothing changes on disk, nor in this writer, when a preparation fails."""
        n, start = table.num_rows, self._total_frames
        data_file, tables = self._data_file, self._data_tables
        data_path = self.root / v3.DATA_PATH.format(chunk_index=data_file[0], file_index=data_file[1])
        if self._rolls(data_path, sum(t.num_rows for t in tables), n):
            data_file, tables = v3.next_file(*data_file, self.chunks_size), []
        tables = [*tables, table]
        meta_file, rows = self._meta_file, self._meta_rows
        meta_path = self.root / v3.EPISODES_PATH.format(chunk_index=meta_file[0], file_index=meta_file[1])
        if self._rolls(meta_path, len(rows), 1):
            meta_file, rows = v3.next_file(*meta_file, self.chunks_size), []
        row = {"episode_index": meta["episode_index"], "tasks": meta["tasks"], "length": n,
               "data/chunk_index": data_file[0], "data/file_index": data_file[1],
               "dataset_from_index": start, "dataset_to_index": start + n, **v3.episode_stats_columns(stats),
               "meta/episodes/chunk_index": meta_file[0], "meta/episodes/file_index": meta_file[1],
               **{k: v for k, v in meta.items() if k not in ("episode_index", "tasks", "length")}}
        rows = [*rows, row]
        total_stats = stats if self._total_stats is None else \
            {f: v3.aggregate_stats([self._total_stats[f], stats[f]]) for f in self.features}
        files = [
            (self.root / v3.DATA_PATH.format(chunk_index=data_file[0], file_index=data_file[1]),
             v3.parquet_writer(tables)),
            (self.root / v3.EPISODES_PATH.format(chunk_index=meta_file[0], file_index=meta_file[1]),
             v3.parquet_writer([_episodes_table(rows)])),
            *([(self.root / v3.TASKS_PATH, v3.tasks_writer([self.task]))] if not self.episodes else []),
            (self.root / v3.STATS_PATH, v3.json_writer(v3.stats_to_json(total_stats))),
            (self.root / v3.INFO_PATH, v3.json_writer(self._info(meta["episode_index"] + 1, start + n))),
        ]
        pending: list[tuple[Path, Path]] = []
        try:
            for path, write in files:
                pending.append((v3.write_beside(path, write), path))
        except BaseException:
            v3.discard(pending)
            raise
        v3.commit(pending)
        self._data_file, self._data_tables = data_file, tables
        self._meta_file, self._meta_rows = meta_file, rows
        self._total_stats = total_stats
        self._total_frames = start + n

    def _info(self, total_episodes: int, total_frames: int) -> dict:
        return {
            "codebase_version": CODEBASE_VERSION, "fps": _lerobot_fps(self.fps), "features": self.features,
            "total_episodes": total_episodes, "total_frames": total_frames, "total_tasks": 1,
            "chunks_size": self.chunks_size, "data_files_size_in_mb": self.data_files_size_in_mb,
            "video_files_size_in_mb": v3.DEFAULT_VIDEO_FILES_SIZE_IN_MB,
            "data_path": v3.DATA_PATH, "video_path": None, "robot_type": self.robot,
            "splits": {"train": f"0:{total_episodes}"},
            "r2s": {"format": FORMAT, "format_version": FORMAT_VERSION, "robot": self.robot, "task": self.task,
                    "obs_layout": self.obs_layout, "authority_codes": AUTHORITY,
                    **self.extra_info},
        }


def _episodes_table(rows: list[dict]) -> pa.Table:
    """``meta/episodes`` rows as a table: LeRobot's columns and ours typed, the recorder's extras inferred."""
    names = list(dict.fromkeys(k for r in rows for k in r))
    arrays, fields = [], []
    for name in names:
        values = [r.get(name) for r in rows]
        if name in v3.EPISODE_COLUMNS or name in EPISODE_FIELDS:
            typ = v3.EPISODE_COLUMNS.get(name) or EPISODE_FIELDS[name]
        elif name.startswith("stats/"):
            typ = pa.list_(pa.int64() if name.endswith("/count") else pa.float64())
        else:
            typ = None
        arr = pa.array(values, type=typ)
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


# ---- reading ----------------------------------------------------------------------------------------------------
class EpisodeDataset:
    """A LeRobotDataset v3.0 folder loaded and validated: ``frames(keys)``, ``episodes``, ``stats``, ``info``.

    Numeric columns are held in memory, concatenated in episode order (``episode_starts[i]`` is the first row of
    episode i). ``info`` is info.json with our ``r2s`` entries merged in at the top level (``info["task"]``,
    ``info["robot"]`` …). Validation on load: the meta files, every column's presence, dtype and shape, the
    episodes' metadata against the frames (lengths, indices, files), the totals; for an r2s dataset also our
    schema, finiteness of the float columns, the done/truncated flags, authority codes and the intervention flags.
    The first problem raises ``DatasetError`` naming where it is. Files are only read, never written.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        raw = v3.read_json(self.root / v3.INFO_PATH, " (not a LeRobot v3.0 / r2s episode dataset, or one whose "
                                                     "first episode was never written)")
        self.is_r2s = self._check_info(raw)
        self.info = {**{k: v for k, v in raw.items() if k != "r2s"}, **raw.get("r2s", {})}
        self.features: dict[str, dict] = raw["features"]
        self.tasks = v3.read_tasks(self.root)
        rows = v3.read_episodes(self.root, raw["chunks_size"])
        v3.check_episode_table(rows, raw["total_episodes"], raw["total_frames"], self._info_path)
        self._check_episode_rows(rows)
        self.stats = self._read_stats()
        loadable = [k for k, ft in self.features.items() if v3.is_numeric(ft)]
        self._columns = v3.load_numeric_columns(self.root, raw, rows, loadable)
        # LeRobot stores a feature of shape [1] as a plain column; observations and actions stay [frames, 1]
        vectors = {k for k, (_, kind) in _SPEC.items() if kind != "scalar"} if self.is_r2s else \
            {"observation.state", "action"}
        for k in vectors & set(self._columns):
            self._columns[k] = self._columns[k].reshape(len(self._columns[k]), -1)
        lengths = np.array([r["length"] for r in rows], np.int64)
        self.episode_lengths = lengths
        self.episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        self._data_files = [str(self.root / raw["data_path"].format(chunk_index=r["data/chunk_index"],
                                                                   file_index=r["data/file_index"])) for r in rows]
        self._check_frames(rows)
        robot = self.info.get("robot", raw.get("robot_type"))
        self.episodes: list[dict] = [
            {**{k: v for k, v in r.items() if k != "_where"}, "task": r["tasks"][0] if r["tasks"] else None,
             "robot": robot} for r in rows]

    # ---- public views ---------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.info["total_frames"])

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def obs_dim(self) -> int:
        return int(self.features["observation.state"]["shape"][0])

    @property
    def act_dim(self) -> int:
        return int(self.features["action"]["shape"][0])

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    def frames(self, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Columns over all frames, episode after episode: {key: array [total_frames, *shape]} (read-only views;
        scalar features [total_frames]). Keys may use the older names of ``ALIASES``."""
        keys = list(self._columns if keys is None else keys)
        unknown = [k for k in keys if ALIASES.get(k, k) not in self._columns]
        if unknown:
            raise KeyError(f"frames: unknown feature(s) {unknown}; the dataset has {list(self._columns)}")
        out = {}
        for k in keys:
            v = self._columns[ALIASES.get(k, k)].view()
            v.flags.writeable = False
            out[k] = v
        return out

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The columns of episode ``i``."""
        s, n = int(self.episode_starts[i]), int(self.episode_lengths[i])
        return {k: v[s:s + n] for k, v in self.frames(keys).items()}

    def success_rate(self) -> float:
        return float(np.mean([m["outcome"] == "success" for m in self._r2s_episodes("success_rate")]))

    def mean_return(self) -> float:
        return float(np.mean([m["return"] for m in self._r2s_episodes("mean_return")]))

    def windows(self, obs_steps: int = 1, horizon: int = 1, obs_key: str = "observation.state",
                action_key: str = "action") -> tuple[np.ndarray, np.ndarray]:
        """Training windows for chunked policies: (obs [N, obs_steps, obs_dim], actions [N, horizon, act_dim])."""
        cols = self.frames([obs_key, action_key])
        obs_idx, act_idx = window_indices(self.episode_lengths, obs_steps, horizon)
        return cols[obs_key][obs_idx], cols[action_key][act_idx]

    def _r2s_episodes(self, what: str) -> list[dict]:
        if not self.is_r2s:
            raise DatasetError(f"{self.root}: {what} needs r2s's episode fields (outcome, return); this dataset was "
                               "not written by r2s")
        return self.episodes

    # ---- loading and validation -----------------------------------------------------------------------------------
    @property
    def _info_path(self) -> str:
        return str(self.root / v3.INFO_PATH)

    def _check_info(self, info: dict) -> bool:
        """LeRobot's required info.json fields, and our schema when the dataset says it is ours; returns that."""
        where = self._info_path
        if info.get("format") == FORMAT:  # an r2s dataset of the .npz era
            raise DatasetError(f"{where}: format {FORMAT!r} v{info.get('format_version')} (one .npz per episode); "
                               f"this code reads v{FORMAT_VERSION} (LeRobotDataset v3.0 parquet): record it again")
        if info.get("codebase_version") != CODEBASE_VERSION:
            raise DatasetError(f"{where}: codebase_version is {info.get('codebase_version')!r}; this code reads "
                               f"LeRobotDataset {CODEBASE_VERSION!r}")
        for key in ("fps", "features", "total_episodes", "total_frames", "chunks_size", "data_path"):
            if key not in info:
                raise DatasetError(f"{where}: missing key {key!r}")
        if not (isinstance(info["fps"], int | float) and info["fps"] > 0):
            raise DatasetError(f"{where}: fps is {info['fps']!r}; expected a positive number")
        features = info["features"]
        for name, feat in features.items():
            shape = feat.get("shape") if isinstance(feat, dict) else None
            if not (isinstance(shape, list) and shape and all(isinstance(d, int) and d > 0 for d in shape)):
                raise DatasetError(f"{where}: features[{name!r}].shape is {shape!r}; expected a list of positive ints")
            if "/" in name:
                raise DatasetError(f"{where}: feature name {name!r} has a '/' (LeRobot forbids it)")
        for name, ft in v3.DEFAULT_FEATURES.items():
            feat = features.get(name)
            if feat is None or feat.get("dtype") != ft["dtype"] or feat.get("shape") != [1]:
                raise DatasetError(f"{where}: features[{name!r}] is {feat!r}; LeRobot v3.0 expects {ft}")
        r2s = info.get("r2s")
        if not isinstance(r2s, dict) or r2s.get("format") != FORMAT:
            return False
        if r2s.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: r2s.format_version is {r2s.get('format_version')!r}; this code reads "
                               f"{FORMAT_VERSION}")
        for key in ("robot", "task"):
            if key not in r2s:
                raise DatasetError(f"{where}: r2s lacks key {key!r}")
        for name, (dtype, kind) in _SPEC.items():
            feat = features.get(name)
            if feat is None:
                raise DatasetError(f"{where}: features lacks {name!r}")
            if feat.get("dtype") != dtype:
                raise DatasetError(f"{where}: features[{name!r}].dtype is {feat.get('dtype')!r}; expected {dtype!r}")
            if len(feat["shape"]) != 1 or (kind == "scalar" and feat["shape"] != [1]):
                raise DatasetError(f"{where}: features[{name!r}].shape is {feat['shape']!r}; expected "
                                   f"{'[1] (a per-frame scalar)' if kind == 'scalar' else '[n]'}")
        act_shapes = {tuple(features[k]["shape"]) for k in ("action", PROPOSAL, MASK)}
        if len(act_shapes) != 1:
            raise DatasetError(f"{where}: action, {PROPOSAL} and {MASK} shapes differ: {act_shapes}")
        return True

    def _check_episode_rows(self, rows: list[dict]) -> None:
        total_tasks = self.info.get("total_tasks", len(self.tasks))
        if total_tasks != len(self.tasks):
            raise DatasetError(f"{self._info_path}: total_tasks is {total_tasks}; meta/tasks.parquet lists "
                               f"{len(self.tasks)}")
        for row in rows:
            where = f"{row['_where']} (episode {row['episode_index']})"
            unknown = [t for t in row["tasks"] if t not in self.tasks]
            if unknown:
                raise DatasetError(f"{where}: tasks {unknown} are not in meta/tasks.parquet {self.tasks}")
            if not self.is_r2s:
                continue
            for key in EPISODE_FIELDS:
                if key not in row:
                    raise DatasetError(f"{where}: episode metadata lacks {key!r}")
            if row["outcome"] not in OUTCOMES:
                raise DatasetError(f"{where}: outcome {row['outcome']!r} is not one of {OUTCOMES}")
            if not isinstance(row["return"], float) or not math.isfinite(row["return"]):
                raise DatasetError(f"{where}: return is {row['return']!r}; expected a finite number")

    def _read_stats(self) -> _AliasDict:
        raw = v3.read_json(self.root / v3.STATS_PATH)
        where = self.root / v3.STATS_PATH
        required = STATS_FEATURES if self.is_r2s else ()
        stats = _AliasDict()
        for key, feat in self.features.items():
            if key not in raw:
                if key in required:
                    raise DatasetError(f"{where}: lacks feature {key!r}")
                continue
            if not v3.is_numeric(feat):
                continue
            dim = feat["shape"][0]
            stats[key] = {}
            for s in ("mean", "std", "min", "max"):
                v = np.asarray(raw[key].get(s, []), np.float64)
                if v.shape != (dim,) or not np.all(np.isfinite(v)):
                    raise DatasetError(f"{where}: {key}.{s} has shape {v.shape} (or non-finite values); expected "
                                       f"({dim},) finite")
                stats[key][s] = v
            for s, v in raw[key].items():
                if s not in stats[key]:
                    stats[key][s] = np.asarray(v)
        return stats

    def _where(self, row: int) -> str:
        """'<data file> (episode e), frame f' of a global row."""
        ep = int(np.searchsorted(self.episode_starts, row, side="right") - 1)
        return f"{self._data_files[ep]} (episode {ep}), frame {row - int(self.episode_starts[ep])}"

    def _check_frames(self, rows: list[dict]) -> None:
        cols, n = self._columns, len(self)
        bad = np.flatnonzero((cols["task_index"] < 0) | (cols["task_index"] >= len(self.tasks)))
        if len(bad):
            r = int(bad[0])
            raise DatasetError(f"{self._where(r)}: column 'task_index' is {cols['task_index'][r]}; "
                               f"meta/tasks.parquet has {len(self.tasks)} tasks")
        if not self.is_r2s:
            return
        for name in FINITE_FEATURES:
            bad = ~np.isfinite(cols[name])
            if bad.any():
                r = int(np.argwhere(bad)[0][0])
                dims = np.flatnonzero(bad[r]).tolist() if bad.ndim > 1 else []
                raise DatasetError(f"{self._where(r)}: column {name!r} has NaN/inf"
                                   + (f" at dims {dims}" if dims else ""))
        last = np.zeros(n, bool)
        last[self.episode_starts + self.episode_lengths - 1] = True
        checks = (
            ("next.done", cols["next.done"] != last, "must be True on the episode's last frame only"),
            ("next.truncated", cols["next.truncated"] & ~last, "is set before the episode's last frame"),
            (AUTHORITY_KEY, ~np.isin(cols[AUTHORITY_KEY], list(AUTHORITY_NAMES)), f"is not a code of {AUTHORITY}"),
            (IS_INTERVENTION, cols[IS_INTERVENTION] != cols[MASK].any(1), f"disagrees with {MASK!r} (it is True "
             "exactly where some dimension was overridden)"),
        )
        for name, bad, message in checks:
            if bad.any():
                r = int(np.flatnonzero(bad)[0])
                raise DatasetError(f"{self._where(r)}: column {name!r} {message} (got {cols[name][r]!r})")
        task_codes = np.repeat([self.tasks.index(r["tasks"][0]) for r in rows], self.episode_lengths)
        bad = np.flatnonzero(cols["task_index"] != task_codes)
        if len(bad):
            r = int(bad[0])
            raise DatasetError(f"{self._where(r)}: column 'task_index' is {cols['task_index'][r]}; the episode's "
                               f"task is index {task_codes[r]}")
        for i, row in enumerate(rows):
            s, e = int(self.episode_starts[i]), int(self.episode_starts[i] + self.episode_lengths[i])
            success = cols["next.success"][s:e]
            first = int(np.argmax(success)) if success.any() else None
            if row["success_step"] != first:
                raise DatasetError(f"{row['_where']} (episode {i}): success_step is {row['success_step']!r}; "
                                   f"the first frame with next.success is {first!r}")


# ---- training windows ---------------------------------------------------------------------------------------------
def window_indices(episode_lengths: Sequence[int], obs_steps: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the training windows of every frame, over episodes laid out back to back.

    For frame t of an episode spanning rows [s, e): observation rows ``max(s, t − obs_steps + 1 + j)``,
    j = 0 … obs_steps−1 (oldest first, the episode's first frame repeated before its start), and action rows
    ``min(e − 1, t + j)``, j = 0 … horizon−1 (the episode's last action repeated after its end).
    Returns (obs_idx [N, obs_steps], act_idx [N, horizon]), N = sum of lengths.
    """
    if obs_steps < 1 or horizon < 1:
        raise ValueError(f"obs_steps={obs_steps}, horizon={horizon}; both must be ≥ 1")
    lengths = np.asarray(episode_lengths, np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    t = np.arange(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
    ep = np.repeat(np.arange(len(lengths)), lengths)
    s, e = starts[ep][:, None], ends[ep][:, None]
    obs_idx = np.maximum(s, t[:, None] + np.arange(-obs_steps + 1, 1)[None, :])
    act_idx = np.minimum(e - 1, t[:, None] + np.arange(horizon)[None, :])
    return obs_idx, act_idx


def write_stats(root: str | Path) -> Path:
    """Recompute ``meta/stats.json`` from the data files (after an explicit repair or a merge); returns its path.
    The same statistics as the writer's: per-episode stats aggregated (``lerobot_v3.aggregate_stats``)."""
    root = Path(root)
    info = v3.read_json(root / v3.INFO_PATH)
    rows = v3.read_episodes(root, info["chunks_size"])
    v3.check_episode_table(rows, info["total_episodes"], info["total_frames"], str(root / v3.INFO_PATH))
    names = [k for k, ft in info["features"].items() if v3.is_numeric(ft)]
    cols = v3.load_numeric_columns(root, info, rows, names)
    bounds = np.cumsum([0] + [r["length"] for r in rows])
    stats = {k: v3.aggregate_stats([v3.feature_stats(cols[k][a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
             for k in names}
    path = root / v3.STATS_PATH
    v3.atomic_write(path, v3.json_writer(v3.stats_to_json(stats)))
    return path
