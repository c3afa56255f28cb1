"""The episode schema of r2s and its on-disk dataset: numpy ``.npz`` frames + JSON metadata, LeRobotDataset-v3 names.

Layout of a dataset folder (the names of LeRobotDataset v3.0; the frames are ``.npz`` instead of parquet so the core
install needs no pyarrow, and each episode is one file instead of several episodes packed per file)::

    meta/info.json          format, robot, task, fps, features {name: {dtype, shape, names}}, totals, obs layout
    meta/episodes.jsonl     one JSON object per episode: index, length, return, outcome, success_step, policy_version …
    meta/stats.json         per float feature: mean, std, min, max, count (what normalisation reads)
    data/chunk-000/episode_000000.npz   the per-frame columns of one episode (``CHUNK_SIZE`` episodes per chunk)

Per-frame columns (``FRAME_FEATURES``), frame t of an episode:

* ``observation.state`` [obs_dim]: the observation the action was chosen on (layout: ``info["obs_layout"]``);
* ``action`` [act_dim]: the executed action, in the robot's units (joint targets in rad, or torques);
* ``action.proposal`` [act_dim]: what the policy proposed (= ``action`` where no one intervened);
* ``authority``: who commanded the executed action, ``AUTHORITY`` code (0 policy, 1 human, 2 baseline);
* ``intervention_mask`` [act_dim] bool: the action dimensions someone other than the policy overrode;
* ``episode_index``, ``frame_index`` (0 … length−1, contiguous), ``index`` (global frame number), ``timestamp`` (s);
* ``next.reward``: the reward for executing ``action``; ``next.success``: the task's success flag after it;
* ``next.done``: True on the episode's last frame only (LeRobot's meaning); ``next.truncated``: the episode ended
  there without reaching a terminal state (time limit, operator stop) — so the MDP terminal is done ∧ ¬truncated.

Per episode (``meta/episodes.jsonl``): ``outcome`` (``success`` when the last frame reports success, else ``failure``
when it ended in a terminal state, else ``timeout``), ``success_step`` (first frame with ``next.success``, or null),
``policy_version``, ``robot``, ``task``, ``length``, ``return`` (undiscounted, float64 sum of the rewards given to
the writer), plus any extra keys the recorder adds (``seed``, ``expert`` …).

``EpisodeDataset`` validates everything it loads and refuses a malformed dataset with a ``DatasetError`` naming the
file, field, episode and frame; it only ever opens files for reading, so a refusal loses nothing.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

FORMAT = "r2s-episodes"
FORMAT_VERSION = 1
CODEBASE_VERSION = "v3.0"
"""The LeRobotDataset version whose names and meta files this layout follows."""
CHUNK_SIZE = 1000
"""Episodes per ``data/chunk-XXX`` folder."""
DATA_PATH = "data/chunk-{chunk:03d}/episode_{episode:06d}.npz"

AUTHORITY: dict[str, int] = {"policy": 0, "human": 1, "baseline": 2}
"""Authority codes of the ``authority`` column (who commanded the executed action)."""
AUTHORITY_NAMES: dict[int, str] = {v: k for k, v in AUTHORITY.items()}
OUTCOMES = ("success", "failure", "timeout")

# name -> (dtype, per-frame shape as a function of (obs_dim, act_dim))
_SPEC: dict[str, tuple[str, str]] = {
    "observation.state": ("float32", "obs"),
    "action": ("float32", "act"),
    "action.proposal": ("float32", "act"),
    "authority": ("int64", "scalar"),
    "intervention_mask": ("bool", "act"),
    "episode_index": ("int64", "scalar"),
    "frame_index": ("int64", "scalar"),
    "index": ("int64", "scalar"),
    "timestamp": ("float32", "scalar"),
    "next.reward": ("float32", "scalar"),
    "next.done": ("bool", "scalar"),
    "next.truncated": ("bool", "scalar"),
    "next.success": ("bool", "scalar"),
}
FRAME_FEATURES: tuple[str, ...] = tuple(_SPEC)
STATS_FEATURES: tuple[str, ...] = ("observation.state", "action", "action.proposal", "next.reward")
"""Features ``meta/stats.json`` describes (the float ones normalisation reads)."""
FINITE_FEATURES: tuple[str, ...] = ("observation.state", "action", "action.proposal", "timestamp", "next.reward")


class DatasetError(ValueError):
    """A dataset on disk is malformed; the message names the file, the field, the episode and the frame."""


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


def _frame_shape(features: dict, name: str) -> tuple[int, ...]:
    """Shape of one frame's value as stored: () for the scalar columns (declared [1], as LeRobot does)."""
    return () if _SPEC[name][1] == "scalar" else tuple(features[name]["shape"])


def episode_path(episode_index: int) -> str:
    return DATA_PATH.format(chunk=episode_index // CHUNK_SIZE, episode=episode_index)


def compute_stats(columns: dict[str, np.ndarray], keys: Iterable[str] = STATS_FEATURES) -> dict[str, dict]:
    """Per-dimension mean, std (population), min, max and count of each feature in ``keys`` (float64 arithmetic)."""
    stats = {}
    for key in keys:
        x = np.asarray(columns[key], np.float64)
        x = x.reshape(len(x), -1) if x.ndim > 1 else x.reshape(-1, 1)
        stats[key] = {
            "mean": x.mean(0).tolist(), "std": x.std(0).tolist(),
            "min": x.min(0).tolist(), "max": x.max(0).tolist(), "count": int(len(x)),
        }
    return stats


def _atomic_write(path: Path, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a JSON file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# ---- writing ----------------------------------------------------------------------------------------------------
class EpisodeWriter:
    """Append steps, end episodes, close: writes a dataset folder as described in the module docstring.

    ``add_step`` takes one step: the observation the action was chosen on, the executed action and what the env
    returned for it. Each ``end_episode`` writes that episode's ``.npz`` and appends its line to
    ``meta/episodes.jsonl`` at once, so a crash loses at most the episode in progress; ``close`` writes
    ``meta/info.json`` and ``meta/stats.json``. Refuses to write into a folder that already holds a dataset.
    """

    def __init__(self, root: str | Path, *, robot: str, task: str, fps: float, obs_dim: int, act_dim: int,
                 obs_names: Sequence[str] | None = None, action_names: Sequence[str] | None = None,
                 obs_layout: Sequence | None = None, extra_info: dict | None = None):
        self.root = Path(root)
        if (self.root / "meta").exists() or (self.root / "data").exists():
            raise FileExistsError(f"{self.root}: already holds a dataset (meta/ or data/); choose an empty folder")
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "meta").mkdir()
        self.robot, self.task, self.fps = robot, task, float(fps)
        self.obs_dim, self.act_dim = int(obs_dim), int(act_dim)
        self.features = make_features(self.obs_dim, self.act_dim, obs_names, action_names)
        self.obs_layout = [dict(name=s.name, size=s.size, source=s.source) for s in obs_layout] if obs_layout else None
        self.extra_info = dict(extra_info or {})
        self.episodes: list[dict] = []
        self._steps: list[dict] = []
        self._total_frames = 0
        self._stats_columns: dict[str, list[np.ndarray]] = {k: [] for k in STATS_FEATURES}
        self._closed = False

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
            raise ValueError(f"action.proposal has shape {proposal.shape}; dataset expects ({self.act_dim},)")
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
        """Write the episode recorded since the last call; returns its metadata line.

        The episode ends on its last step. ``truncated`` (default: the last step's flag, or True when the last step
        was not terminal, e.g. an operator stopped it) marks an end without a terminal state. ``outcome`` defaults
        to ``success`` / ``failure`` / ``timeout`` as the module docstring says.
        """
        if not self._steps:
            raise ValueError("end_episode: no steps recorded since the last episode")
        steps, self._steps = self._steps, []
        n = len(steps)
        ep = len(self.episodes)
        last = steps[-1]
        if truncated is None:
            truncated = last["truncated"] or not last["terminated"]
        done = np.zeros(n, bool)
        done[-1] = True
        trunc = np.zeros(n, bool)
        trunc[-1] = bool(truncated)
        success = np.array([s["success"] for s in steps], bool)
        columns = {
            "observation.state": np.stack([s["obs"] for s in steps]).astype(np.float32),
            "action": np.stack([s["action"] for s in steps]).astype(np.float32),
            "action.proposal": np.stack([s["proposal"] for s in steps]).astype(np.float32),
            "authority": np.array([s["authority"] for s in steps], np.int64),
            "intervention_mask": np.stack([s["mask"] for s in steps]),
            "episode_index": np.full(n, ep, np.int64),
            "frame_index": np.arange(n, dtype=np.int64),
            "index": np.arange(self._total_frames, self._total_frames + n, dtype=np.int64),
            "timestamp": np.array([s["timestamp"] for s in steps], np.float32),
            "next.reward": np.array([s["reward"] for s in steps], np.float32),
            "next.done": done,
            "next.truncated": trunc,
            "next.success": success,
        }
        if outcome is None:
            outcome = "success" if success[-1] else ("timeout" if truncated else "failure")
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome: {outcome!r} is not one of {OUTCOMES}")
        hits = np.flatnonzero(success)
        meta = {
            "episode_index": ep,
            "length": n,
            "return": float(math.fsum(s["reward"] for s in steps)),
            "outcome": outcome,
            "success_step": int(hits[0]) if len(hits) else None,
            "policy_version": policy_version,
            "robot": self.robot,
            "task": self.task,
            "data_path": episode_path(ep),
            **extra,
        }
        path = self.root / meta["data_path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            np.savez(f, **columns)
        with open(self.root / "meta" / "episodes.jsonl", "a") as f:
            f.write(json.dumps(meta) + "\n")
        for key in STATS_FEATURES:
            self._stats_columns[key].append(columns[key])
        self.episodes.append(meta)
        self._total_frames += n
        return meta

    def close(self) -> Path:
        """Write ``meta/info.json`` and ``meta/stats.json``; an episode in progress is dropped (not half-written)."""
        if self._closed:
            return self.root
        self._steps = []
        if not self.episodes:
            raise ValueError(f"{self.root}: no episodes recorded; nothing to close")
        info = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "codebase_version": CODEBASE_VERSION,
            "robot": self.robot, "task": self.task, "fps": self.fps,
            "total_episodes": len(self.episodes), "total_frames": self._total_frames,
            "chunks_size": CHUNK_SIZE, "data_path": DATA_PATH, "features": self.features,
            "obs_layout": self.obs_layout, **self.extra_info,
        }
        columns = {k: np.concatenate(v) for k, v in self._stats_columns.items()}
        _atomic_write(self.root / "meta" / "stats.json", json.dumps(compute_stats(columns), indent=1) + "\n")
        _atomic_write(self.root / "meta" / "info.json", json.dumps(info, indent=2) + "\n")
        self._closed = True
        return self.root

    def __enter__(self) -> EpisodeWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.episodes:
            self.close()


# ---- reading ----------------------------------------------------------------------------------------------------
class EpisodeDataset:
    """A dataset folder loaded and validated: ``frames(keys)``, ``episodes``, ``stats``, ``info``.

    All columns are held in memory, concatenated in episode order (``episode_starts[i]`` is the first row of episode
    i). Validation (on load) checks the meta files, every column's presence, dtype and shape, finiteness of the float
    columns, contiguous ``frame_index`` and ``index``, ``episode_index``, the done/truncated flags and the totals;
    the first problem raises ``DatasetError`` naming where it is. Files are only read, never written.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = self._read_json("meta/info.json")
        self._check_info()
        self.features: dict[str, dict] = self.info["features"]
        self.episodes: list[dict] = self._read_episodes()
        self.stats: dict[str, dict[str, np.ndarray]] = self._read_stats()
        parts: dict[str, list[np.ndarray]] = {k: [] for k in FRAME_FEATURES}
        start = 0
        for meta in self.episodes:
            cols = self._read_episode(meta, start)
            for k in FRAME_FEATURES:
                parts[k].append(cols[k])
            start += meta["length"]
        if start != self.info["total_frames"]:
            raise DatasetError(f"{self.root}/meta/info.json: total_frames is {self.info['total_frames']}, "
                               f"the episodes hold {start} frames")
        self._columns = {k: np.concatenate(v) for k, v in parts.items()}
        lengths = np.array([m["length"] for m in self.episodes], np.int64)
        self.episode_lengths = lengths
        self.episode_starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)

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
        """Columns over all frames, episode after episode: {key: array [total_frames, *shape]} (read-only views)."""
        keys = list(FRAME_FEATURES if keys is None else keys)
        unknown = [k for k in keys if k not in self._columns]
        if unknown:
            raise KeyError(f"frames: unknown feature(s) {unknown}; the dataset has {list(self._columns)}")
        out = {}
        for k in keys:
            v = self._columns[k].view()
            v.flags.writeable = False
            out[k] = v
        return out

    def episode(self, i: int, keys: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """The columns of episode ``i``."""
        s, n = int(self.episode_starts[i]), int(self.episode_lengths[i])
        return {k: v[s:s + n] for k, v in self.frames(keys).items()}

    def success_rate(self) -> float:
        return float(np.mean([m["outcome"] == "success" for m in self.episodes]))

    def mean_return(self) -> float:
        return float(np.mean([m["return"] for m in self.episodes]))

    def windows(self, obs_steps: int = 1, horizon: int = 1, obs_key: str = "observation.state",
                action_key: str = "action") -> tuple[np.ndarray, np.ndarray]:
        """Training windows for chunked policies: (obs [N, obs_steps, obs_dim], actions [N, horizon, act_dim])."""
        cols = self.frames([obs_key, action_key])
        obs_idx, act_idx = window_indices(self.episode_lengths, obs_steps, horizon)
        return cols[obs_key][obs_idx], cols[action_key][act_idx]

    # ---- loading and validation -----------------------------------------------------------------------------------
    def _read_json(self, rel: str):
        path = self.root / rel
        if not path.is_file():
            raise DatasetError(f"{path}: missing (not an r2s episode dataset, or an unfinished one: was the writer "
                               "closed?)")
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: not valid JSON ({e})") from None

    def _check_info(self) -> None:
        info, where = self.info, f"{self.root}/meta/info.json"
        for key in ("format", "robot", "task", "fps", "total_episodes", "total_frames", "features"):
            if key not in info:
                raise DatasetError(f"{where}: missing key {key!r}")
        if info["format"] != FORMAT or info.get("format_version") != FORMAT_VERSION:
            raise DatasetError(f"{where}: format {info['format']!r} v{info.get('format_version')}; this code reads "
                               f"{FORMAT!r} v{FORMAT_VERSION}")
        for name, (dtype, kind) in _SPEC.items():
            feat = info["features"].get(name)
            if feat is None:
                raise DatasetError(f"{where}: features lacks {name!r}")
            if feat.get("dtype") != dtype:
                raise DatasetError(f"{where}: features[{name!r}].dtype is {feat.get('dtype')!r}; expected {dtype!r}")
            shape = feat.get("shape")
            if not (isinstance(shape, list) and len(shape) == 1 and isinstance(shape[0], int) and shape[0] > 0):
                raise DatasetError(f"{where}: features[{name!r}].shape is {shape!r}; expected [n] with n > 0")
            if kind == "scalar" and shape != [1]:
                raise DatasetError(f"{where}: features[{name!r}].shape is {shape!r}; a per-frame scalar is [1]")
        act_shapes = {tuple(info["features"][k]["shape"]) for k in ("action", "action.proposal", "intervention_mask")}
        if len(act_shapes) != 1:
            raise DatasetError(f"{where}: action, action.proposal and intervention_mask shapes differ: {act_shapes}")

    def _read_episodes(self) -> list[dict]:
        path = self.root / "meta" / "episodes.jsonl"
        if not path.is_file():
            raise DatasetError(f"{path}: missing")
        episodes = []
        for line_no, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                meta = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{path}:{line_no}: not valid JSON ({e})") from None
            for key in ("episode_index", "length", "return", "outcome", "success_step", "data_path"):
                if key not in meta:
                    raise DatasetError(f"{path}:{line_no}: episode metadata lacks {key!r}")
            if meta["episode_index"] != len(episodes):
                raise DatasetError(f"{path}:{line_no}: episode_index {meta['episode_index']}; expected "
                                   f"{len(episodes)} (episodes must be numbered 0, 1, 2 … in order)")
            if not isinstance(meta["length"], int) or meta["length"] < 1:
                raise DatasetError(f"{path}:{line_no}: episode {meta['episode_index']} has length {meta['length']!r}")
            if meta["outcome"] not in OUTCOMES:
                raise DatasetError(f"{path}:{line_no}: episode {meta['episode_index']} outcome {meta['outcome']!r} "
                                   f"is not one of {OUTCOMES}")
            episodes.append(meta)
        if len(episodes) != self.info["total_episodes"]:
            raise DatasetError(f"{self.root}/meta/info.json: total_episodes is {self.info['total_episodes']}, "
                               f"{path} lists {len(episodes)}")
        return episodes

    def _read_stats(self) -> dict[str, dict[str, np.ndarray]]:
        raw = self._read_json("meta/stats.json")
        stats = {}
        for key in STATS_FEATURES:
            if key not in raw:
                raise DatasetError(f"{self.root}/meta/stats.json: lacks feature {key!r}")
            dim = self.features[key]["shape"][0]
            stats[key] = {}
            for s in ("mean", "std", "min", "max"):
                v = np.asarray(raw[key].get(s, []), np.float64)
                if v.shape != (dim,) or not np.all(np.isfinite(v)):
                    raise DatasetError(f"{self.root}/meta/stats.json: {key}.{s} has shape {v.shape} (or non-finite "
                                       f"values); expected ({dim},) finite")
                stats[key][s] = v
        return stats

    def _read_episode(self, meta: dict, global_start: int) -> dict[str, np.ndarray]:
        ep, n = meta["episode_index"], meta["length"]
        path = self.root / meta["data_path"]
        where = f"{path} (episode {ep})"
        if not path.is_file():
            raise DatasetError(f"{where}: data file missing")
        try:
            with np.load(path, allow_pickle=False) as z:
                cols = {k: z[k] for k in z.files}
        except Exception as e:  # truncated zip, pickled objects, …
            raise DatasetError(f"{where}: cannot read ({type(e).__name__}: {e})") from None
        for name in FRAME_FEATURES:
            if name not in cols:
                raise DatasetError(f"{where}: column {name!r} is missing")
            x = cols[name]
            dtype = self.features[name]["dtype"]
            if x.dtype != np.dtype(dtype):
                raise DatasetError(f"{where}: column {name!r} has dtype {x.dtype}; info.json says {dtype}")
            expected = (n, *_frame_shape(self.features, name))
            if x.shape != expected:
                raise DatasetError(f"{where}: column {name!r} has shape {x.shape}; expected {expected} "
                                   f"[length, *features[{name!r}].shape]")
        for name in FINITE_FEATURES:
            bad = ~np.isfinite(cols[name])
            if bad.any():
                frame = int(np.argwhere(bad)[0][0])
                dims = np.flatnonzero(bad[frame]).tolist() if bad.ndim > 1 else []
                raise DatasetError(f"{where}, frame {frame}: column {name!r} has NaN/inf"
                                   + (f" at dims {dims}" if dims else ""))
        _first_mismatch(cols["frame_index"], np.arange(n), f"{where}: column 'frame_index' is not contiguous "
                        "0 … length−1")
        _first_mismatch(cols["episode_index"], np.full(n, ep), f"{where}: column 'episode_index' differs from {ep}")
        _first_mismatch(cols["index"], np.arange(global_start, global_start + n),
                        f"{where}: column 'index' (global frame number) is not contiguous from {global_start}")
        done = np.zeros(n, bool)
        done[-1] = True
        _first_mismatch(cols["next.done"], done, f"{where}: column 'next.done' must be True on the last frame only")
        _first_mismatch(cols["next.truncated"] & ~done, np.zeros(n, bool),
                        f"{where}: column 'next.truncated' is set before the last frame")
        codes = cols["authority"]
        bad = ~np.isin(codes, list(AUTHORITY_NAMES))
        if bad.any():
            f = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{where}, frame {f}: column 'authority' has code {codes[f]}; expected {AUTHORITY}")
        return cols


def _first_mismatch(got: np.ndarray, expected: np.ndarray, message: str) -> None:
    bad = np.flatnonzero(np.asarray(got) != np.asarray(expected))
    if len(bad):
        f = int(bad[0])
        raise DatasetError(f"{message} (frame {f}: got {got[f]!r}, expected {expected[f]!r})")


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
    """Recompute ``meta/stats.json`` from the data files (after an explicit repair or a merge); returns its path."""
    root = Path(root)
    metas = [json.loads(line) for line in (root / "meta" / "episodes.jsonl").read_text().splitlines() if line.strip()]
    parts: dict[str, list[np.ndarray]] = {k: [] for k in STATS_FEATURES}
    for meta in metas:
        with np.load(root / meta["data_path"], allow_pickle=False) as z:
            for k in STATS_FEATURES:
                parts[k].append(z[k])
    path = root / "meta" / "stats.json"
    _atomic_write(path, json.dumps(compute_stats({k: np.concatenate(v) for k, v in parts.items()}), indent=1) + "\n")
    return path
