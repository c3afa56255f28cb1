"""Intervention logs ⇄ LeRobotDataset v3.0: ``log_to_dataset`` (a bag → a dataset folder) and ``dataset_to_bag``
(such a folder → a bag that ``read_log`` and the ROS 2 tools read). ``r2s logs convert`` is these two.

**The dataset** is a LeRobotDataset v3.0 folder (``stack.data.lerobot_v3``: ``meta/info.json``, ``meta/stats.json``,
``meta/tasks.parquet``, ``meta/episodes/chunk-000/file-000.parquet``, ``data/chunk-000/file-000.parquet`` …) marked
``info["r2s"]["format"] == "r2s-log"``. One LeRobot episode per recorded episode (one with no policy step is left
out, and said so: LeRobot's episodes have ≥ 1 frame); the steps outside every episode (the arm homing between them)
are kept beside, in ``meta/r2s_outside_steps.parquet`` (the step columns below; LeRobot does not read it). Per
frame (``FRAME_FEATURES``), beside LeRobot's ``index``, ``episode_index``, ``frame_index``, ``timestamp``
(= frame_index / fps) and ``task_index``:

==========================================  =========================================================================
``observation.state`` [obs] float64          the observation the policy stepped on (``Episode.steps["observation"]``)
``action`` [act] float64                     the executed command (NaN: none recorded)
``complementary_info.proposal`` [act]        the policy's proposal (NaN: none recorded, or the policy refused)
``complementary_info.authority`` int64       0 policy, 1 human, 2 baseline, −1 no decision recorded
``complementary_info.intervention_mask``     [act] bool: the dimensions the policy did not command
``complementary_info.is_intervention``       any of them (HIL-SERL's flag)
``complementary_info.safety_status`` string  ``ok`` | ``homing`` | ``hold: …``
``next.reward`` float64, ``next.success``    the reward for the step (NaN: none recorded), the task's flag after it
``next.done``                                True on the episode's last frame only
``robot_time_ns`` int64                      the observation's ``header.stamp`` (the robot's clock)
``complementary_info.time_ns``, ``…log_time_ns``, ``…executed_stamp_ns``   the other clocks of the step (int64)
``complementary_info.step_index`` int64      which recorded step of the episode the frame holds
``complementary_info.is_repeat`` bool        the frame repeats the step before it (a grid slot no step fell in)
==========================================  =========================================================================

Per episode (``meta/episodes``): LeRobot's columns and ``stats/*``, and ``outcome`` (null: no end event was recorded),
``success_step``, ``robot``, ``policy_version`` (the ONNX content hash), ``recorder_episode`` (the recorder's episode
number), ``unstepped_reward``, ``steps`` (recorded steps), ``event_values`` (every value of its start and end events,
JSON). The task is LeRobot's (``tasks``). ``info["r2s"]`` keeps the bag's ``custom_data``, the observation and action
names, where fps came from, and the reader's warnings.

**Resampling** onto the dataset's fixed frame grid (``grid_slots``): frames are 1/fps apart, fps from the control
rate (``--fps``, else the policy's ``control_rate_hz`` in ``/r2s/policy/info``, else the median period of the
robot clock between steps). Step i of an episode goes to slot round((stamp_i − stamp_0) · fps) of the robot clock —
the nearest grid point, so jitter below half a period moves no step — or, when that slot is taken or behind (two
steps within one period, a clock that went back), to the slot right after the previous step's: no step is ever
dropped or merged, the grid only stretches. A slot no step fell in (a missed tick) repeats the step in force (a
controller holds its last command): same fields, ``is_repeat`` True, ``next.reward`` 0 (the step's reward stays on
its own frame, so a sum over frames is the log's). The robot's exact clock stays in ``robot_time_ns``.

**Back to a bag** (``dataset_to_log`` + ``write_bag``): the frames with ``is_repeat`` False are the steps, exactly;
each (and each step outside the episodes) is written as the node graph publishes it (proposal, observation with
its three clocks, the safety node's decision, reward and success just after), each episode between its start and
end events (no end event where ``outcome`` is null), after a policy info naming its robot and policy version (and
the dataset's fps as ``control_rate_hz``); ``read_log`` of that bag gives back
every field of every step and episode (``tests/stack/test_logs_convert.py``). A dataset that is not of this format,
or is malformed, raises ``DatasetError`` naming the file, the field, the episode, the frame and what was expected.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from stack.data import lerobot_v3 as v3
from stack.data.episodes import AUTHORITY, AUTHORITY_NAMES, AUTHORITY_KEY, IS_INTERVENTION, MASK, OUTCOMES, PROPOSAL
from stack.data.lerobot_v3 import DatasetError
from stack.data.logs import STEP_FIELDS, UNKNOWN_AUTHORITY, BagLog, Episode

LOG_FORMAT, LOG_FORMAT_VERSION = "r2s-log", 1
STATUS = "complementary_info.safety_status"
STEP_INDEX, IS_REPEAT = "complementary_info.step_index", "complementary_info.is_repeat"
OUTSIDE_PATH = "meta/r2s_outside_steps.parquet"
"""The steps outside every episode (the arm homing between episodes), one row each with the step columns; only
when there are some. LeRobot does not read it; ``dataset_to_log`` puts them back into ``BagLog.outside``."""

_STEP_COLUMNS: dict[str, tuple[str, str, str]] = {
    "observation.state": ("observation", "float64", "obs"),
    "action": ("executed", "float64", "act"),
    PROPOSAL: ("proposal", "float64", "act"),
    AUTHORITY_KEY: ("authority", "int64", "scalar"),
    MASK: ("intervention_mask", "bool", "act"),
    STATUS: ("safety_status", "string", "scalar"),
    "next.reward": ("reward", "float64", "scalar"),
    "next.success": ("success", "bool", "scalar"),
    "robot_time_ns": ("stamp_ns", "int64", "scalar"),
    "complementary_info.time_ns": ("time_ns", "int64", "scalar"),
    "complementary_info.log_time_ns": ("log_time_ns", "int64", "scalar"),
    "complementary_info.executed_stamp_ns": ("executed_stamp_ns", "int64", "scalar"),
}
"""feature → (``Episode.steps`` field, dtype, shape kind): the step fields, one column each."""
_DERIVED_COLUMNS: dict[str, str] = {IS_INTERVENTION: "bool", "next.done": "bool", STEP_INDEX: "int64",
                                    IS_REPEAT: "bool"}
FRAME_FEATURES = (*_STEP_COLUMNS, *_DERIVED_COLUMNS, *v3.DEFAULT_FEATURES)
EPISODE_FIELDS: dict[str, pa.DataType] = {
    "outcome": pa.string(), "success_step": pa.int64(), "robot": pa.string(), "policy_version": pa.string(),
    "recorder_episode": pa.int64(), "unstepped_reward": pa.float64(), "steps": pa.int64(),
    "event_values": pa.string()}
"""Our columns of ``meta/episodes`` (besides LeRobot's and ``stats/*``)."""
assert set(STEP_FIELDS) == {f for f, _, _ in _STEP_COLUMNS.values()}, "every step field has its column"


class ConvertWarning(UserWarning):
    """Something of the log that a LeRobot dataset cannot hold (an episode without steps) was left out."""


# ---- the grid -----------------------------------------------------------------------------------------------------
def grid_slots(stamps_ns: np.ndarray, fps: float) -> np.ndarray:
    """The frame (grid slot) of each step of an episode: the nearest slot of its robot-clock offset from the first
    step, or the slot after the previous step's when that one is taken or behind (the module docstring)."""
    period_ns = 1e9 / fps
    slots = np.empty(len(stamps_ns), np.int64)
    prev = -1
    for i, s in enumerate(np.asarray(stamps_ns, np.int64).tolist()):
        k = math.floor((s - int(stamps_ns[0])) / period_ns + 0.5)
        prev = slots[i] = max(k, prev + 1)
    return slots


def _fps(log: BagLog, fps: float | None) -> tuple[float, str]:
    """The frame rate and where it came from: given, the policy's control rate, or the robot clock's median step."""
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps: {fps}; expected a positive number")
        return float(fps), "given"
    rate = _policy_control_rate(log.path)
    if rate:
        return rate, "control_rate_hz of /r2s/policy/info"
    periods = np.concatenate([np.diff(e.steps["stamp_ns"]) for e in log.episodes if e.length > 1] or [[]])
    periods = periods[periods > 0]
    if not len(periods):
        raise ValueError(f"{log.path}: no two steps to measure the control rate from; give the fps (--fps)")
    measured = 1e9 / float(np.median(periods))
    near = round(measured)  # a jittered clock: keep the nominal rate it runs at
    return (float(near) if near and abs(measured - near) <= 0.02 * near else round(measured, 3)), \
        "median robot-clock period between steps"


def _policy_control_rate(path: Path) -> float | None:
    from stack.ros import topics as T
    from stack.ros.bag import read_bag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # read_log has already warned about any damage
        try:
            rows = read_bag(path, decode=[T.POLICY_INFO]).get(T.POLICY_INFO, [])
        except FileNotFoundError:
            return None
    for _log, m in reversed(rows):
        values = {kv.key: kv.value for s in getattr(m, "status", [])[:1] for kv in s.values}
        try:
            rate = float(values.get("control_rate_hz", ""))
        except ValueError:
            continue
        if rate > 0:
            return rate
    return None


# ---- bag → dataset ------------------------------------------------------------------------------------------------
def _features(obs_names: list[str], action_names: list[str]) -> dict[str, dict]:
    dims = {"obs": (len(obs_names), obs_names), "act": (len(action_names), action_names)}
    features = {}
    for name, (_, dtype, kind) in _STEP_COLUMNS.items():
        dim, names = dims.get(kind, (1, None))
        features[name] = {"dtype": dtype, "shape": [max(dim, 1)], "names": list(names) if names else None}
    for name, dtype in _DERIVED_COLUMNS.items():
        features[name] = {"dtype": dtype, "shape": [1], "names": None}
    return {**features, **{k: dict(v) for k, v in v3.DEFAULT_FEATURES.items()}}


def _frame_columns(ep: Episode, slots: np.ndarray, episode_index: int, start: int, task_index: int,
                   fps: float) -> dict[str, np.ndarray]:
    n = int(slots[-1]) + 1
    step = np.searchsorted(slots, np.arange(n), side="right") - 1  # the step in force at each slot
    repeat = slots[step] != np.arange(n)
    cols = {name: ep.steps[field][step] for name, (field, _, _) in _STEP_COLUMNS.items()}
    cols["next.reward"] = np.where(repeat, 0.0, cols["next.reward"])
    done = np.zeros(n, bool)
    done[-1] = True
    cols.update({IS_INTERVENTION: cols[MASK].reshape(n, -1).any(1), "next.done": done, STEP_INDEX: step,
                 IS_REPEAT: repeat, "timestamp": np.arange(n) / fps, "frame_index": np.arange(n),
                 "episode_index": np.full(n, episode_index), "index": np.arange(start, start + n),
                 "task_index": np.full(n, task_index)})
    return cols


def _table(columns: dict[str, np.ndarray], features: dict[str, dict]) -> pa.Table:
    """One episode's frames: numbers as ``lerobot_v3`` lays them out, strings as a string column."""
    arrays, fields = [], []
    for name, ft in features.items():
        if ft["dtype"] == "string":
            arr = pa.array([str(v) for v in columns[name]], pa.string())
        else:
            x = np.ascontiguousarray(columns[name], dtype=np.dtype(ft["dtype"]))
            arr = pa.array(x.reshape(len(x))) if ft["shape"] == [1] else \
                pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), ft["shape"][0])
        arrays.append(arr)
        fields.append(pa.field(name, arr.type))
    return pa.Table.from_arrays(arrays, schema=pa.schema(
        fields, metadata={b"huggingface": v3.hf_features_metadata(features)}))


def _stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """``lerobot_v3.feature_stats`` over the recorded values only: a NaN (nothing recorded) is left out, and a
    dimension with no value at all gets zeros (stats.json must stay finite)."""
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    if np.isfinite(x).all():
        return v3.feature_stats(x)
    x = np.where(np.isfinite(x), x, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN dimensions
        q = np.nanquantile(x, v3.QUANTILES, axis=0)
        out = {"min": np.nanmin(x, 0), "max": np.nanmax(x, 0), "mean": np.nanmean(x, 0), "std": np.nanstd(x, 0),
               **{k: q[i] for i, k in enumerate(v3.QUANTILE_KEYS)}}
    return {**{k: np.nan_to_num(v, nan=0.0) for k, v in out.items()}, "count": np.array([len(x)])}


def _numeric(features: dict[str, dict]) -> list[str]:
    return [k for k, ft in features.items() if v3.is_numeric(ft)]


def log_to_dataset(log: BagLog, out: str | os.PathLike, fps: float | None = None,
                   data_files_size_in_mb: float = v3.DEFAULT_DATA_FILES_SIZE_IN_MB) -> dict:
    """Write ``log`` (``read_log``) as an r2s-log LeRobotDataset v3.0 folder ``out`` (new or empty); returns a
    summary (episodes, frames, steps, repeated frames, fps and its source, episodes left out)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out}: exists and is not an empty folder; not overwriting")
    fps, fps_source = _fps(log, fps)
    kept = [e for e in log.episodes if e.length]
    left_out = [i for i, e in enumerate(log.episodes) if not e.length]
    for i in left_out:
        warnings.warn(f"log_to_dataset: episode {log.episodes[i].index} of {log.path} has no policy step; left out "
                      "(a LeRobot episode has at least one frame)", ConvertWarning, stacklevel=2)
    if not kept:
        raise ValueError(f"{log.path}: no episode with a policy step; nothing to convert")
    features = _features(log.obs_names, log.action_names)
    numeric = _numeric(features)
    tasks = list(dict.fromkeys(e.task for e in kept))
    data_file, files, tables, rows, every = (0, 0), {}, [], [], []
    start = 0
    for i, ep in enumerate(kept):
        cols = _frame_columns(ep, grid_slots(ep.steps["stamp_ns"], fps), i, start, tasks.index(ep.task), fps)
        table = _table(cols, features)
        if tables and sum(t.nbytes for t in tables) + table.nbytes > data_files_size_in_mb * 2**20:
            data_file, tables = v3.next_file(*data_file, v3.DEFAULT_CHUNKS_SIZE), []
        tables.append(table)
        files[data_file] = tables
        n = table.num_rows
        stats = {k: _stats(cols[k]) for k in numeric}
        every.append({k: cols[k] for k in numeric})
        rows.append({"episode_index": i, "tasks": [ep.task], "length": n, "data/chunk_index": data_file[0],
                     "data/file_index": data_file[1], "dataset_from_index": start, "dataset_to_index": start + n,
                     **v3.episode_stats_columns(stats), "meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0,
                     "outcome": ep.outcome, "success_step": ep.success_step, "robot": ep.robot,
                     "policy_version": ep.policy_version, "recorder_episode": ep.index,
                     "unstepped_reward": float(ep.unstepped_reward), "steps": ep.length,
                     "event_values": json.dumps(ep.values, sort_keys=True)})
        start += n
    total = {k: _stats(np.concatenate([c[k] for c in every])) for k in numeric}
    robots = sorted({e.robot for e in kept if e.robot})
    info = {
        "codebase_version": v3.CODEBASE_VERSION, "fps": int(fps) if float(fps).is_integer() else fps,
        "features": features, "total_episodes": len(kept), "total_frames": start, "total_tasks": len(tasks),
        "chunks_size": v3.DEFAULT_CHUNKS_SIZE, "data_files_size_in_mb": data_files_size_in_mb,
        "video_files_size_in_mb": v3.DEFAULT_VIDEO_FILES_SIZE_IN_MB, "data_path": v3.DATA_PATH, "video_path": None,
        "robot_type": robots[0] if len(robots) == 1 else ",".join(robots) or None,
        "splits": {"train": f"0:{len(kept)}"},
        "r2s": {"format": LOG_FORMAT, "format_version": LOG_FORMAT_VERSION, "source": str(log.path),
                "custom_data": dict(log.custom_data), "obs_names": list(log.obs_names),
                "action_names": list(log.action_names), "fps_source": fps_source,
                "authority_codes": {**AUTHORITY, "unknown": UNKNOWN_AUTHORITY},
                "steps": sum(e.length for e in kept), "steps_outside_episodes": int(len(log.outside["time_ns"])),
                "left_out_episodes": [log.episodes[i].index for i in left_out], "warnings": list(log.warnings)},
    }
    out.mkdir(parents=True, exist_ok=True)
    if len(log.outside["time_ns"]):
        step_features = {name: features[name] for name in _STEP_COLUMNS}
        outside = {name: log.outside[field] for name, (field, _, _) in _STEP_COLUMNS.items()}
        v3.atomic_write(out / OUTSIDE_PATH, v3.parquet_writer([_table(outside, step_features)]))
    for (chunk, file), ts in files.items():
        v3.atomic_write(out / v3.DATA_PATH.format(chunk_index=chunk, file_index=file), v3.parquet_writer(ts))
    v3.atomic_write(out / v3.EPISODES_PATH.format(chunk_index=0, file_index=0), v3.parquet_writer([_rows(rows)]))
    v3.atomic_write(out / v3.TASKS_PATH, v3.tasks_writer(tasks))
    v3.atomic_write(out / v3.STATS_PATH, v3.json_writer(v3.stats_to_json(total)))
    v3.atomic_write(out / v3.INFO_PATH, v3.json_writer(info))  # last: without it the folder is not a dataset
    return {"dataset": str(out), "episodes": len(kept), "frames": start, "steps": info["r2s"]["steps"],
            "repeated_frames": start - info["r2s"]["steps"], "fps": fps, "fps_source": fps_source,
            "left_out_episodes": info["r2s"]["left_out_episodes"],
            "steps_outside_episodes": info["r2s"]["steps_outside_episodes"]}


def _rows(rows: list[dict]) -> pa.Table:
    """The ``meta/episodes`` rows as a table, every column typed (a column of nulls keeps its type)."""
    names = list(rows[0])
    types = {**v3.EPISODE_COLUMNS, **EPISODE_FIELDS}
    arrays = [pa.array([r[k] for r in rows], type=types.get(k) or (
        pa.list_(pa.int64() if k.endswith("/count") else pa.float64()))) for k in names]
    return pa.Table.from_arrays(arrays, names=names)


# ---- dataset → log ------------------------------------------------------------------------------------------------
def _check_info(info: dict, where: str) -> tuple[list[str], list[str]]:
    if info.get("codebase_version") != v3.CODEBASE_VERSION:
        raise DatasetError(f"{where}: codebase_version is {info.get('codebase_version')!r}; expected "
                           f"{v3.CODEBASE_VERSION!r}")
    r2s = info.get("r2s")
    if not isinstance(r2s, dict) or r2s.get("format") != LOG_FORMAT:
        got = r2s.get("format") if isinstance(r2s, dict) else None
        raise DatasetError(f"{where}: r2s.format is {got!r}; expected {LOG_FORMAT!r} (a dataset `r2s logs convert "
                           "--to lerobot` wrote)")
    if r2s.get("format_version") != LOG_FORMAT_VERSION:
        raise DatasetError(f"{where}: r2s.format_version is {r2s.get('format_version')!r}; expected "
                           f"{LOG_FORMAT_VERSION}")
    for key in ("fps", "features", "total_episodes", "total_frames", "chunks_size", "data_path"):
        if key not in info:
            raise DatasetError(f"{where}: missing key {key!r}")
    if not (isinstance(info["fps"], int | float) and info["fps"] > 0):
        raise DatasetError(f"{where}: fps is {info['fps']!r}; expected a positive number")
    names = []
    for key in ("obs_names", "action_names", "custom_data"):
        value = r2s.get(key)
        if not isinstance(value, dict if key == "custom_data" else list):
            raise DatasetError(f"{where}: r2s.{key} is {value!r}; expected a "
                               f"{'mapping' if key == 'custom_data' else 'list of names'}")
        names.append(value)
    expected = _features(names[0], names[1])
    for name, ft in expected.items():
        got = info["features"].get(name)
        if not isinstance(got, dict) or got.get("dtype") != ft["dtype"] or got.get("shape") != ft["shape"]:
            raise DatasetError(f"{where}: features[{name!r}] is {got!r}; expected dtype {ft['dtype']!r}, shape "
                               f"{ft['shape']}")
    extra = sorted(set(info["features"]) - set(expected))
    if extra:
        raise DatasetError(f"{where}: features {extra} are not of the r2s-log format (expected {list(expected)})")
    return names[0], names[1]


def _strings(root: Path, info: dict, rows: list[dict], name: str) -> np.ndarray:
    out = []
    for chunk, file in v3.episodes_by_file(rows):
        path = root / info["data_path"].format(chunk_index=chunk, file_index=file)
        col = pq.read_table(path, columns=[name]).column(name)
        if not pa.types.is_string(col.type) or col.null_count:
            raise DatasetError(f"{path}: column {name!r} has type {col.type} (or nulls); expected strings")
        out += col.to_pylist()
    return np.array(out, dtype=object)


def _episode_where(row: dict) -> str:
    return f"{row['_where']} (episode {row['episode_index']})"


def _check_episode_row(row: dict, tasks: list[str]) -> None:
    where = _episode_where(row)
    for key in EPISODE_FIELDS:
        if key not in row:
            raise DatasetError(f"{where}: column {key!r} is missing (expected {EPISODE_FIELDS[key]})")
    if row["outcome"] is not None and row["outcome"] not in OUTCOMES:
        raise DatasetError(f"{where}: outcome is {row['outcome']!r}; expected one of {OUTCOMES} or null (no end "
                           "event recorded)")
    if row["outcome"] is None and row["success_step"] is not None:
        raise DatasetError(f"{where}: success_step is {row['success_step']!r} but outcome is null; expected null "
                           "(a success step comes with the end event)")
    for key in ("robot", "policy_version", "event_values"):
        if row[key] is None:
            raise DatasetError(f"{where}: {key} is null; expected a string")
    if row["unstepped_reward"] is None or not math.isfinite(row["unstepped_reward"]):
        raise DatasetError(f"{where}: unstepped_reward is {row['unstepped_reward']!r}; expected a finite number")
    try:
        values = json.loads(row["event_values"])
    except json.JSONDecodeError as e:
        raise DatasetError(f"{where}: event_values is not JSON ({e})") from None
    if not (isinstance(values, dict) and all(isinstance(v, str) for v in values.values())):
        raise DatasetError(f"{where}: event_values is {row['event_values']!r}; expected a JSON object of strings")
    row["event_values"] = values
    if len(row["tasks"]) != 1 or row["tasks"][0] not in tasks:
        raise DatasetError(f"{where}: tasks is {row['tasks']!r}; expected one task of meta/tasks.parquet {tasks}")


def _episode_steps(cols: dict[str, np.ndarray], s: int, e: int, row: dict, fps: float, data: str) -> dict:
    """The recorded steps of one episode's frames [s, e) (in the data file ``data``), checked against the grid's
    rules."""
    n = e - s
    repeat, step = cols[IS_REPEAT][s:e], cols[STEP_INDEX][s:e]
    expected_step = np.cumsum(~repeat) - 1
    checks = (
        (IS_REPEAT, repeat[:1], np.zeros(1, bool), "is False on the first frame (nothing to repeat)"),
        (STEP_INDEX, step, expected_step, "counts the frames that are not repeats (0, 1, …)"),
        ("next.done", cols["next.done"][s:e], np.arange(n) == n - 1, "is True on the last frame only"),
        (IS_INTERVENTION, cols[IS_INTERVENTION][s:e], cols[MASK][s:e].any(1), f"is {MASK!r} of any dimension"),
        ("timestamp", np.abs(cols["timestamp"][s:e] - np.arange(n) / fps) > 1e-4, np.zeros(n, bool),
         "is frame_index / fps (within 1e-4 s)"),
        (AUTHORITY_KEY, np.isin(cols[AUTHORITY_KEY][s:e], [*AUTHORITY_NAMES, UNKNOWN_AUTHORITY]), np.ones(n, bool),
         f"is a code of {AUTHORITY} or {UNKNOWN_AUTHORITY} (none recorded)"),
    )
    for name, got, expected, rule in checks:
        bad = np.flatnonzero(np.asarray(got) != np.asarray(expected))
        if len(bad):
            f = int(bad[0])
            raise DatasetError(f"{data} (episode {row['episode_index']}), frame {f}: column {name!r} is "
                               f"{np.asarray(cols[name][s + f]).tolist()!r}; expected it {rule}")
    if int((~repeat).sum()) != row["steps"]:
        raise DatasetError(f"{_episode_where(row)}: steps is {row['steps']}; the frames hold {int((~repeat).sum())} "
                           "recorded steps (is_repeat False)")
    keep = s + np.flatnonzero(~repeat)
    steps = {field: cols[name][keep] for name, (field, _, _) in _STEP_COLUMNS.items()}
    return steps


def _outside_steps(root: Path, info: dict, features: dict, dims: dict[str, int]) -> dict[str, np.ndarray]:
    """``OUTSIDE_PATH``'s steps (as many as ``info.json``'s r2s.steps_outside_episodes says), as step arrays."""
    n = info["r2s"].get("steps_outside_episodes")
    if not (isinstance(n, int) and n >= 0):
        raise DatasetError(f"{root / v3.INFO_PATH}: r2s.steps_outside_episodes is {n!r}; expected an integer ≥ 0")
    path = root / OUTSIDE_PATH
    if n:
        table = v3.read_parquet(path, f"the {n} steps outside the episodes")
    else:
        table = _table({name: np.zeros((0, max(dims.get(kind, 1), 1))) if kind in dims else np.zeros(0)
                        for name, (_, _, kind) in _STEP_COLUMNS.items()},
                       {name: features[name] for name in _STEP_COLUMNS})
    if table.num_rows != n:
        raise DatasetError(f"{path}: {table.num_rows} rows; info.json's r2s.steps_outside_episodes is {n}")
    out = {}
    for name, (field, _, kind) in _STEP_COLUMNS.items():
        if features[name]["dtype"] == "string":
            if name not in table.column_names or not pa.types.is_string(table.column(name).type):
                raise DatasetError(f"{path}: column {name!r} is missing or not strings; expected strings")
            out[field] = np.array(table.column(name).to_pylist(), dtype=object)
            continue
        x = v3.column_to_numpy(table, name, features[name], str(path))
        out[field] = x.reshape(n, max(dims[kind], 1))[:, :dims[kind]] if kind in dims else x
    out["intervention_mask"] = out["intervention_mask"].astype(bool)
    return out


def dataset_to_log(root: str | os.PathLike) -> BagLog:
    """An r2s-log dataset folder back into the ``BagLog`` it was written from (its episodes and the steps outside
    them exactly; ``topics`` and ``warnings`` empty), validated: a malformed one raises ``DatasetError``."""
    root = Path(root)
    where = str(root / v3.INFO_PATH)
    info = v3.read_json(root / v3.INFO_PATH, " (not a LeRobot v3.0 dataset)")
    obs_names, action_names = _check_info(info, where)
    tasks = v3.read_tasks(root)
    rows = v3.read_episodes(root, info["chunks_size"])
    v3.check_episode_table(rows, info["total_episodes"], info["total_frames"], where)
    for row in rows:
        _check_episode_row(row, tasks)
    features = info["features"]
    cols = v3.load_numeric_columns(root, info, rows, _numeric(features))
    cols[STATUS] = _strings(root, info, rows, STATUS)
    dims = {"obs": len(obs_names), "act": len(action_names)}
    for name, (_, _, kind) in _STEP_COLUMNS.items():
        if kind in dims:
            cols[name] = cols[name].reshape(len(cols[name]), max(dims[kind], 1))[:, :dims[kind]]
    cols[MASK] = cols[MASK].astype(bool)
    episodes, start = [], 0
    fps = float(info["fps"])
    for row in rows:
        n = row["length"]
        data = root / info["data_path"].format(chunk_index=row["data/chunk_index"], file_index=row["data/file_index"])
        task_index = tasks.index(row["tasks"][0])
        bad = np.flatnonzero(cols["task_index"][start:start + n] != task_index)
        if len(bad):
            raise DatasetError(f"{data} (episode {row['episode_index']}), frame {int(bad[0])}: column "
                               "'task_index' is "
                               f"{cols['task_index'][start + int(bad[0])]}; expected {task_index} (the episode's task "
                               f"{row['tasks'][0]!r})")
        steps = _episode_steps(cols, start, start + n, row, fps, str(data))
        episodes.append(Episode(index=row["recorder_episode"], outcome=row["outcome"],
                                success_step=row["success_step"], robot=row["robot"], task=row["tasks"][0],
                                policy_version=row["policy_version"], values=row["event_values"], steps=steps,
                                unstepped_reward=float(row["unstepped_reward"])))
        start += n
    outside = _outside_steps(root, info, features, dims)
    return BagLog(root, episodes, outside, {}, {str(k): str(v) for k, v in info["r2s"]["custom_data"].items()},
                  list(obs_names), list(action_names))


# ---- log → bag ----------------------------------------------------------------------------------------------------
_GAP_IN_EPISODE, _GAP_BETWEEN = 4, 10
"""Nanoseconds of source time a step (proposal before it, decision and reward after it) and an episode boundary
(end event, policy info, start event, unstepped reward) need between two observations."""


def _number(value: str | None, signed: bool) -> int | None:
    """An event value as ``read_log`` parses it (an episode number may be negative, a success step not)."""
    text = value or ""
    return int(text) if (text.lstrip("-") if signed else text).isdigit() else None


def _event_values(ep: Episode, k: int, single: bool) -> dict[str, str] | None:
    """The values to publish in the episode's events (None: none at all, a bag without episode events), checked
    against the episode's own fields, which ``read_log`` derives from them."""
    values = dict(ep.values)
    if not values and ep.index is None:
        if not single or ep.outcome is not None or ep.unstepped_reward:
            raise ValueError(f"episode {k}: no event values (a bag without episode events) but "
                             f"{'other episodes beside it' if not single else 'an outcome or unstepped reward'}; "
                             "a bag separates episodes, and bounds them, by their events")
        return None
    checks = [("episode", _number(values.get("episode"), True), ep.index)]
    if ep.outcome is not None:  # else no end event: read_log takes neither from the values
        checks += [("outcome", values.get("outcome"), ep.outcome),
                   ("success_step", _number(values.get("success_step"), False), ep.success_step)]
    elif ep.success_step is not None:
        raise ValueError(f"episode {k}: success_step {ep.success_step} without an outcome; expected None")
    if "episode" not in values:
        raise ValueError(f"episode {k}: event values lack 'episode' (every episode event has it)")
    for key, got, want in checks:
        if got != want:
            raise ValueError(f"episode {k}: event value {key!r} gives {got!r}; the episode's {key} is {want!r}")
    return values


def _check_times(episodes: list[Episode], outside: dict[str, np.ndarray]) -> None:
    """Room for the messages the bag puts between observations: every step's source time (``time_ns``,
    ``complementary_info.time_ns``) ``_GAP_IN_EPISODE`` ns after the one before, ``_GAP_BETWEEN`` at an episode's
    first and last step."""
    times = [outside["time_ns"]] + [ep.steps["time_ns"] for ep in episodes]
    owner = np.concatenate([np.full(len(t), i - 1) for i, t in enumerate(times)])
    times = np.concatenate(times).astype(np.int64)
    order = np.argsort(times, kind="stable")
    times, owner = times[order], owner[order]
    boundary = np.append(True, (owner[1:] != owner[:-1]) & ((owner[1:] >= 0) | (owner[:-1] >= 0)))
    need = np.where(boundary, _GAP_BETWEEN, _GAP_IN_EPISODE)
    gaps = np.diff(times, prepend=0)
    bad = np.flatnonzero(gaps < need)
    if len(bad):
        i = int(bad[0])
        what = f"episode {owner[i]}" if owner[i] >= 0 else "a step outside the episodes"
        raise ValueError(f"{what}: a step's time_ns ({'complementary_info.time_ns'}) is {int(times[i])}, "
                         f"{int(gaps[i])} ns after the step before; expected ≥ {int(need[i])} ns (the messages of a "
                         "step, and an episode's events, go between)")
    for k, ep in enumerate(episodes):
        if ep.length > 1 and np.any(np.diff(ep.steps["time_ns"]) <= 0):
            raise ValueError(f"episode {k}: time_ns is not increasing; expected the steps in publication order")


class _Publisher:
    """Serializes r2s messages (the ``rosbags`` type store, no rclpy) into a ``BagWriter``."""

    def __init__(self, bag):
        from rosbags.typesys import Stores, get_typestore

        from stack.ros import topics as T

        self.bag, self.T, self.store = bag, T, get_typestore(Stores.ROS2_KILTED)
        self.types = self.store.types
        for name in (T.OBSERVATION, T.PROPOSAL, T.EXECUTED, T.AUTHORITY, T.INTERVENTION_MASK, T.SAFETY_STATUS,
                     T.REWARD, T.SUCCESS, T.EPISODE, T.POLICY_INFO):
            bag.add_topic(name, T.TYPES[name][0])

    def send(self, topic: str, msg, pub_ns: int, log_ns: int | None = None) -> None:
        data = bytes(self.store.serialize_cdr(msg, self.T.TYPES[topic][0]))
        self.bag.write(topic, data, int(pub_ns if log_ns is None else log_ns), publish_time_ns=int(pub_ns))

    def header(self, stamp: int):
        t = self.types
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp) // 10**9,
                                                                                nanosec=int(stamp) % 10**9),
                                        frame_id="")

    def trajectory(self, stamp: int, names: list[str], positions: np.ndarray):
        t = self.types
        point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(positions, np.float64), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0))
        return t["trajectory_msgs/msg/JointTrajectory"](header=self.header(stamp), joint_names=list(names),
                                                        points=[point])

    def diagnostic(self, stamp: int, name: str, message: str, values: dict[str, str]):
        t = self.types
        kvs = [t["diagnostic_msgs/msg/KeyValue"](key=str(k), value=str(v)) for k, v in values.items()]
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name=name, message=message, hardware_id="",
                                                           values=kvs)
        return t["diagnostic_msgs/msg/DiagnosticArray"](header=self.header(stamp), status=[status])

    def string(self, data: str):
        return self.types["std_msgs/msg/String"](data=str(data))


def write_bag(log: BagLog, out: str | os.PathLike, compression: str = "zstd",
              control_rate_hz: float | None = None) -> Path:
    """Write ``log``'s episodes as a bag (rosbag2 MCAP, ``metadata.yaml`` with its ``custom_data``) that ``read_log``
    reads back into the same steps and episodes (the module docstring); ``out`` must not hold files.
    ``control_rate_hz`` goes into the policy info (where ``log_to_dataset`` takes its fps from)."""
    from stack.ros.bag import BagWriter

    episodes = list(log.episodes)
    values = [_event_values(ep, k, len(episodes) == 1) for k, ep in enumerate(episodes)]
    outside = log.outside
    _check_times(episodes, outside)
    bag = BagWriter(out, compression=compression, flush_period_s=0, custom_data=dict(log.custom_data))
    p = _Publisher(bag)
    T = p.T
    decided = False  # a decision is in force from the first one on (read_log gives every later step one)
    between = iter(np.argsort(outside["time_ns"], kind="stable").tolist())
    pending = next(between, None)
    try:
        for ep, vals in zip(episodes, values):
            if not ep.length:
                continue
            steps = ep.steps
            t0, stamps = int(steps["time_ns"][0]), steps["stamp_ns"]
            while pending is not None and outside["time_ns"][pending] < t0:  # before this episode: the arm homing
                decided = _send_step(p, log, outside, pending, decided)
                pending = next(between, None)
            policy = {"robot": ep.robot, "policy_version": ep.policy_version}
            if control_rate_hz:
                policy["control_rate_hz"] = f"{control_rate_hz:g}"
            p.send(T.POLICY_INFO, p.diagnostic(t0 - 6, "policy", ep.policy_version, policy), t0 - 6)
            if vals is not None:
                p.send(T.EPISODE, p.diagnostic(int(stamps.min()) - 1, "episode", "start", vals), t0 - 5)
            if ep.unstepped_reward:
                p.send(T.REWARD, p.types["std_msgs/msg/Float64"](data=float(ep.unstepped_reward)), t0 - 4)
            for k in range(ep.length):
                decided = _send_step(p, log, steps, k, decided)
            if vals is not None and ep.outcome is not None:
                p.send(T.EPISODE, p.diagnostic(int(stamps.max()) + 1, "episode", "end", vals),
                       int(steps["time_ns"][-1]) + 3)
        while pending is not None:
            decided = _send_step(p, log, outside, pending, decided)
            pending = next(between, None)
    finally:
        bag.close()
    return Path(out)


def _send_step(p: _Publisher, log: BagLog, steps: dict, k: int, decided: bool) -> bool:
    """One step as the nodes publish it: proposal, observation, the safety node's decision, reward and success."""
    T, types = p.T, p.types
    t, stamp = int(steps["time_ns"][k]), int(steps["stamp_ns"][k])
    proposal = steps["proposal"][k]
    if np.isfinite(proposal).any():  # all NaN: none recorded (a refused proposal reads back NaN all the same)
        p.send(T.PROPOSAL, p.trajectory(stamp, log.action_names, proposal), t - 1)
    p.send(T.OBSERVATION, types["sensor_msgs/msg/JointState"](
        header=p.header(stamp), name=list(log.obs_names), position=np.asarray(steps["observation"][k], np.float64),
        velocity=np.zeros(0), effort=np.zeros(0)), t, int(steps["log_time_ns"][k]))
    executed, exec_stamp = steps["executed"][k], int(steps["executed_stamp_ns"][k])
    authority, mask, status = int(steps["authority"][k]), steps["intervention_mask"][k], str(steps["safety_status"][k])
    has_command = exec_stamp != 0 or np.isfinite(executed).any()
    if decided or has_command or authority != UNKNOWN_AUTHORITY or mask.any() or status:
        if has_command:
            p.send(T.EXECUTED, p.trajectory(exec_stamp, log.action_names, executed), t + 1)
        if authority != UNKNOWN_AUTHORITY:
            p.send(T.AUTHORITY, p.string(AUTHORITY_NAMES[authority]), t + 1)
        p.send(T.INTERVENTION_MASK, types["std_msgs/msg/Float64MultiArray"](
            layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0),
            data=np.asarray(mask, np.float64)), t + 1)
        p.send(T.SAFETY_STATUS, p.string(status), t + 1)
        decided = True
    if not math.isnan(float(steps["reward"][k])):
        p.send(T.REWARD, types["std_msgs/msg/Float64"](data=float(steps["reward"][k])), t + 2)
    if bool(steps["success"][k]):
        p.send(T.SUCCESS, types["std_msgs/msg/Bool"](data=True), t + 2)
    return decided


def dataset_to_bag(root: str | os.PathLike, out: str | os.PathLike) -> dict:
    """An r2s-log dataset folder → a bag ``out``; returns a summary (episodes, steps)."""
    log = dataset_to_log(root)
    fps = v3.read_json(Path(root) / v3.INFO_PATH)["fps"]
    try:
        write_bag(log, out, control_rate_hz=fps)
    except ValueError as e:
        raise DatasetError(f"{Path(root) / v3.EPISODES_PATH.format(chunk_index=0, file_index=0)}: {e}") from None
    return {"bag": str(out), "episodes": len(log.episodes), "steps": sum(e.length for e in log.episodes)}


def convert_cli(src: str, to: str, out: str, fps: float | None = None) -> int:
    """``r2s logs convert SRC --to lerobot|mcap OUT``: warnings (damage read past, episodes left out) on stderr, one
    line of JSON on stdout; 2 with the reason on stderr when it cannot convert."""
    import sys

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if to == "lerobot":
                from stack.data.logs import read_log

                result = log_to_dataset(read_log(src), out, fps=fps)
            elif to == "mcap":
                if fps is not None:
                    raise ValueError("--fps applies to --to lerobot only (a bag has no frame grid)")
                result = dataset_to_bag(src, out)
            else:
                raise ValueError(f"--to {to!r}; expected 'lerobot' or 'mcap'")
    except (FileNotFoundError, FileExistsError, DatasetError, ValueError) as e:
        print(f"r2s logs convert: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(json.dumps(result))
    return 0
