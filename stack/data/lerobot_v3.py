"""The LeRobotDataset v3.0 layout, written and read with pyarrow: paths, features, stats, atomic files, validation.

This module knows the format, not r2s's schema (that is ``stack.data.episodes``). A dataset folder::

    meta/info.json                              codebase_version "v3.0", fps, features, totals, paths, splits …
    meta/stats.json                             {feature: {min, max, mean, std, count, q01, q10, q50, q90, q99}}
    meta/tasks.parquet                          task (the pandas index, a string) → task_index
    meta/episodes/chunk-000/file-000.parquet    one row per episode: where its frames are, its stats/* …
    data/chunk-000/file-000.parquet             the frames of several episodes, one row group per episode

A feature of shape [1] is a plain column of its dtype; shape [n] a ``fixed_size_list<dtype>[n]`` column (what
LeRobot's writer produces through Hugging Face ``datasets``). Files roll to ``file-001`` … when the current one
would exceed ``data_files_size_in_mb``, and to ``chunk-001`` after ``chunks_size`` files.

Every file is written beside its final name, fsynced and renamed into place (``atomic_write``), so a crash never
leaves half a file. Readers raise ``DatasetError`` naming the file, the field, the episode and the frame.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
DATA_PATH = "data/" + CHUNK_FILE
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE
DEFAULT_CHUNKS_SIZE = 1000
"""Files per ``chunk-XXX`` folder (LeRobot's default)."""
DEFAULT_DATA_FILES_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILES_SIZE_IN_MB = 200
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
QUANTILE_KEYS = tuple(f"q{round(q * 100):02d}" for q in QUANTILES)
STAT_KEYS = ("min", "max", "mean", "std", "count", *QUANTILE_KEYS)

DEFAULT_FEATURES: dict[str, dict] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
"""The per-frame bookkeeping columns every LeRobot v3.0 dataset has."""

EPISODE_COLUMNS: dict[str, pa.DataType] = {
    "episode_index": pa.int64(),
    "tasks": pa.list_(pa.string()),
    "length": pa.int64(),
    "data/chunk_index": pa.int64(),
    "data/file_index": pa.int64(),
    "dataset_from_index": pa.int64(),
    "dataset_to_index": pa.int64(),
    "meta/episodes/chunk_index": pa.int64(),
    "meta/episodes/file_index": pa.int64(),
}
"""The columns of ``meta/episodes/*.parquet`` that locate an episode (besides its ``stats/<feature>/<stat>``)."""

NUMERIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16",
                  "float32", "float64")
_FILE_RE = re.compile(r"^file-(\d+)\.parquet$")
_CHUNK_RE = re.compile(r"^chunk-(\d+)$")


class DatasetError(ValueError):
    """A dataset on disk is malformed; the message names the file, the field, the episode and the frame."""


# ---- paths ---------------------------------------------------------------------------------------------------------
def next_file(chunk_index: int, file_index: int, chunks_size: int) -> tuple[int, int]:
    """The (chunk, file) after this one: the next file, or the first file of the next chunk."""
    return (chunk_index + 1, 0) if file_index >= chunks_size - 1 else (chunk_index, file_index + 1)


def chunk_files(folder: Path) -> list[tuple[int, int, Path]]:
    """(chunk_index, file_index, path) of every ``chunk-XXX/file-YYY.parquet`` under ``folder``, in order.
    Leftover temporary files of an interrupted write (``.file-….tmp``) are not listed."""
    found = []
    if folder.is_dir():
        for chunk in folder.iterdir():
            c = _CHUNK_RE.match(chunk.name)
            if c and chunk.is_dir():
                for f in chunk.iterdir():
                    m = _FILE_RE.match(f.name)
                    if m:
                        found.append((int(c.group(1)), int(m.group(1)), f))
    return sorted(found)


# ---- atomic files --------------------------------------------------------------------------------------------------
def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_beside(path: Path, write: Callable[[Path], None]) -> Path:
    """Write a file under a temporary name beside ``path`` (``write(tmp)``) and fsync it; returns the temporary
    path, to be put in place with ``commit``. On failure the temporary file is removed and the error re-raised."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def commit(pending: Sequence[tuple[Path, Path]]) -> None:
    """Rename prepared files into place, in order (``[(tmp, final), …]``), then fsync their folders."""
    for tmp, final in pending:
        os.replace(tmp, final)
    for folder in {final.parent for _, final in pending}:
        _fsync_dir(folder)


def discard(pending: Sequence[tuple[Path, Path]]) -> None:
    for tmp, _ in pending:
        tmp.unlink(missing_ok=True)


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Write ``path`` so that a crash leaves either the old file or the complete new one: beside, fsync, rename."""
    commit([(write_beside(path, write), path)])


def json_writer(obj) -> Callable[[Path], None]:
    text = json.dumps(obj, indent=4) + "\n"
    return lambda p: p.write_text(text)


# ---- features and arrow types ----------------------------------------------------------------------------------------
def is_numeric(feature: dict) -> bool:
    """A number or a vector of numbers (what this reader loads; images, videos and strings it leaves out)."""
    return feature.get("dtype") in NUMERIC_DTYPES and len(feature.get("shape", ())) == 1


def arrow_type(feature: dict) -> pa.DataType:
    """The column type of a numeric feature: its dtype for shape [1], ``fixed_size_list<dtype>[n]`` for [n]."""
    value = pa.from_numpy_dtype(np.dtype(feature["dtype"]))
    shape = list(feature["shape"])
    return value if shape == [1] else pa.list_(value, shape[0])


def hf_features_metadata(features: dict[str, dict]) -> bytes:
    """The ``huggingface`` schema metadata LeRobot's data files carry (the Hugging Face ``datasets`` feature types),
    so tools that read the parquet files through ``datasets`` see the same types as for LeRobot's own files."""
    hf = {}
    for name, ft in features.items():
        value = {"dtype": ft["dtype"], "_type": "Value"}
        hf[name] = value if list(ft["shape"]) == [1] else {"feature": value, "length": ft["shape"][0],
                                                          "_type": "List"}
    return json.dumps({"info": {"features": hf}}).encode()


def frames_table(columns: dict[str, np.ndarray], features: dict[str, dict]) -> pa.Table:
    """A table of one episode's frames, one column per feature, in the order of ``features``."""
    arrays = []
    for name, ft in features.items():
        x = np.ascontiguousarray(columns[name], dtype=np.dtype(ft["dtype"]))
        if list(ft["shape"]) == [1]:
            arrays.append(pa.array(x.reshape(len(x))))
        else:
            arrays.append(pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), ft["shape"][0]))
    schema = pa.schema([pa.field(n, arrow_type(ft)) for n, ft in features.items()],
                       metadata={b"huggingface": hf_features_metadata(features)})
    return pa.Table.from_arrays(arrays, schema=schema)


def parquet_writer(tables: Sequence[pa.Table]) -> Callable[[Path], None]:
    """Writes ``tables`` into one parquet file, one row group each (one per episode, as LeRobot does)."""
    def write(path: Path) -> None:
        schema = tables[0].schema  # dictionary-encode the integer and bool columns only: floats rarely repeat
        small = [f.name for f in schema if not (pa.types.is_floating(f.type) or pa.types.is_list(f.type)
                                                or pa.types.is_fixed_size_list(f.type))]
        with pq.ParquetWriter(path, schema, compression="snappy", use_dictionary=small) as w:
            for t in tables:
                w.write_table(t, row_group_size=max(len(t), 1))
    return write


def tasks_writer(tasks: Sequence[str]) -> Callable[[Path], None]:
    """``meta/tasks.parquet``: columns task_index, task, with the pandas metadata that makes ``task`` the index
    (LeRobot reads it with ``pandas.read_parquet`` and looks tasks up by that index)."""
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "attributes": {}, "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }
    schema = pa.schema([("task_index", pa.int64()), ("task", pa.string())],
                       metadata={b"pandas": json.dumps(pandas_meta).encode()})
    table = pa.table({"task_index": list(range(len(tasks))), "task": list(tasks)}, schema=schema)
    return lambda p: pq.write_table(table, p)


# ---- stats ---------------------------------------------------------------------------------------------------------
def feature_stats(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-dimension min, max, mean, std (population), count [n] and the ``QUANTILES`` (exact, linear) of one
    feature over frames (rows), in float64 — the ``stats/<feature>/<stat>`` entries of an episode."""
    x = np.asarray(x, np.float64)
    x = x.reshape(len(x), -1)
    q = np.quantile(x, QUANTILES, axis=0)
    return {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0), "count": np.array([len(x)]),
            **{k: q[i] for i, k in enumerate(QUANTILE_KEYS)}}


def aggregate_stats(per_episode: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One feature's stats over several episodes, LeRobot's way: min of mins, max of maxes, the count-weighted mean
    and the pooled (population) std — exact — and, since quantiles do not aggregate, the envelope of the
    episodes' quantiles (the smallest for q ≤ 50, the largest above)."""
    counts = np.array([s["count"][0] for s in per_episode], np.float64)
    means = np.stack([s["mean"] for s in per_episode])
    total = counts.sum()
    mean = (means * counts[:, None]).sum(0) / total
    var = ((np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2) * counts[:, None]).sum(0) / total
    out = {"min": np.min([s["min"] for s in per_episode], 0), "max": np.max([s["max"] for s in per_episode], 0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(total)])}
    for k in QUANTILE_KEYS:
        values = np.stack([s[k] for s in per_episode])
        out[k] = values.min(0) if int(k[1:]) <= 50 else values.max(0)
    return out


def stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {f: {k: np.asarray(v).tolist() for k, v in s.items()} for f, s in stats.items()}


def episode_stats_columns(stats: dict[str, dict[str, np.ndarray]]) -> dict[str, list]:
    """An episode's stats as its ``stats/<feature>/<stat>`` metadata columns (lists; count a list of one int)."""
    return {f"stats/{f}/{k}": np.asarray(v).tolist() for f, s in stats.items() for k, v in s.items()}


# ---- reading -------------------------------------------------------------------------------------------------------
def read_json(path: Path, hint: str = ""):
    if not path.is_file():
        raise DatasetError(f"{path}: missing{hint}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: not valid JSON ({e})") from None


def read_parquet(path: Path, what: str) -> pa.Table:
    """Read a whole parquet file; a missing, truncated or otherwise unreadable one is a ``DatasetError``."""
    if not path.is_file():
        raise DatasetError(f"{path}: missing ({what})")
    try:
        return pq.read_table(path)
    except (pa.ArrowException, OSError) as e:
        raise DatasetError(f"{path}: cannot read the parquet file ({what}): {type(e).__name__}: {e}") from None


def column_to_numpy(table: pa.Table, name: str, feature: dict, where: str) -> np.ndarray:
    """A feature's column as an array [rows, *shape] ([rows] for shape [1]), its type checked against ``feature``:
    refuses a missing column, another dtype, or vectors of another length (a variable-length ``list`` column, as
    converted datasets may hold, is accepted when every row has the declared length)."""
    if name not in table.column_names:
        raise DatasetError(f"{where}: column {name!r} is missing (info.json declares it)")
    col = table.column(name).combine_chunks()
    dtype = np.dtype(feature["dtype"])
    shape = list(feature["shape"])
    expected = pa.from_numpy_dtype(dtype)
    n = len(col)
    if shape == [1]:
        if col.type != expected:
            raise DatasetError(f"{where}: column {name!r} has dtype {col.type}; info.json says {feature['dtype']}")
        _no_nulls(col, name, where)
        return col.to_numpy(zero_copy_only=False).astype(dtype, copy=False)
    if not (pa.types.is_fixed_size_list(col.type) or pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
        raise DatasetError(f"{where}: column {name!r} has type {col.type}; info.json says {feature['dtype']} "
                           f"vectors of shape {shape}")
    if col.type.value_type != expected:
        raise DatasetError(f"{where}: column {name!r} has dtype {col.type.value_type}; info.json says "
                           f"{feature['dtype']}")
    _no_nulls(col, name, where)
    if pa.types.is_fixed_size_list(col.type):
        width = col.type.list_size
    else:
        lengths = np.diff(col.offsets.to_numpy())
        bad = np.flatnonzero(lengths != shape[0])
        width = int(lengths[bad[0]]) if len(bad) else shape[0]
        if len(bad):
            raise DatasetError(f"{where}, row {int(bad[0])}: column {name!r} has a vector of {width} values; "
                               f"info.json says shape {shape}")
    if [width] != shape:
        raise DatasetError(f"{where}: column {name!r} has shape ({n}, {width}); expected ({n}, {shape[0]}) "
                           f"[rows, *features[{name!r}].shape]")
    return col.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False).reshape(n, width)


def _no_nulls(col: pa.Array, name: str, where: str) -> None:
    if col.null_count:
        row = int(np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False))[0])
        raise DatasetError(f"{where}, row {row}: column {name!r} is null")


def first_mismatch(got: np.ndarray, expected: np.ndarray, message: str, frames: np.ndarray | None = None) -> None:
    """Raise ``DatasetError(message + the first differing frame)`` where ``got`` differs from ``expected``;
    ``frames`` maps rows to frame numbers to report (default: the row number)."""
    bad = np.flatnonzero(np.asarray(got) != np.asarray(expected))
    if len(bad):
        r = int(bad[0])
        frame = r if frames is None else int(frames[r])
        raise DatasetError(f"{message} (frame {frame}: got {got[r]!r}, expected {expected[r]!r})")


def read_tasks(root: Path) -> list[str]:
    """The task strings, by task_index, from ``meta/tasks.parquet`` (task_index must be 0, 1, 2 …)."""
    path = root / TASKS_PATH
    table = read_parquet(path, "the tasks")
    for name in ("task_index", "task"):
        if name not in table.column_names:
            raise DatasetError(f"{path}: column {name!r} is missing")
    if not pa.types.is_integer(table.column("task_index").type):
        raise DatasetError(f"{path}: column 'task_index' has dtype {table.column('task_index').type}; expected int64")
    idx = np.asarray(table.column("task_index").to_numpy(zero_copy_only=False))
    first_mismatch(idx, np.arange(len(idx)), f"{path}: column 'task_index' is not 0, 1, 2 … in order")
    return [str(t) for t in table.column("task").to_pylist()]


def read_episodes(root: Path, chunks_size: int) -> list[dict]:
    """Every row of ``meta/episodes/chunk-*/file-*.parquet`` as a dict (stats/* columns left out), in order,
    checked: the locating columns present and typed, each row's meta/episodes/* pointing at the file it is in."""
    files = chunk_files(root / "meta" / "episodes")
    if not files:
        raise DatasetError(f"{root}/meta/episodes: no chunk-XXX/file-YYY.parquet (episode metadata) found")
    rows: list[dict] = []
    for chunk, file, path in files:
        table = read_parquet(path, "episode metadata")
        for name, typ in EPISODE_COLUMNS.items():
            if name not in table.column_names:
                raise DatasetError(f"{path}: column {name!r} is missing")
            got = table.column(name).type
            ok = pa.types.is_list(got) and pa.types.is_string(got.value_type) if name == "tasks" \
                else pa.types.is_integer(got)
            if not ok:
                raise DatasetError(f"{path}: column {name!r} has type {got}; expected {typ}")
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        for i, row in enumerate(table.select(keep).to_pylist()):
            where = f"{path}, row {i} (episode {row['episode_index']})"
            if (row["meta/episodes/chunk_index"], row["meta/episodes/file_index"]) != (chunk, file):
                raise DatasetError(f"{where}: meta/episodes/chunk_index, file_index are "
                                   f"({row['meta/episodes/chunk_index']}, {row['meta/episodes/file_index']}); "
                                   f"the row is in chunk {chunk}, file {file}")
            row["_where"] = str(path)
            rows.append(row)
    return rows


def check_episode_table(rows: list[dict], total_episodes: int, total_frames: int, info_path: str) -> None:
    """The episodes are numbered 0, 1, 2 … in order, each spans [dataset_from_index, dataset_to_index) of
    ``length`` frames right after the previous one, and the totals agree with ``info.json``."""
    end = 0
    for i, row in enumerate(rows):
        where = f"{row['_where']} (episode {row['episode_index']})"
        if row["episode_index"] != i:
            raise DatasetError(f"{where}: episode_index {row['episode_index']}; expected {i} (episodes must be "
                               "numbered 0, 1, 2 … in order)")
        n = row["length"]
        if not isinstance(n, int) or n < 1:
            raise DatasetError(f"{where}: length {n!r}; expected an integer ≥ 1")
        if (row["dataset_from_index"], row["dataset_to_index"]) != (end, end + n):
            raise DatasetError(f"{where}: dataset_from_index, dataset_to_index are ({row['dataset_from_index']}, "
                               f"{row['dataset_to_index']}); expected ({end}, {end + n}) from the lengths")
        end += n
    if len(rows) != total_episodes:
        raise DatasetError(f"{info_path}: total_episodes is {total_episodes}; meta/episodes lists {len(rows)}")
    if end != total_frames:
        raise DatasetError(f"{info_path}: total_frames is {total_frames}; the episodes' lengths add up to {end}")


def episodes_by_file(rows: list[dict]) -> dict[tuple[int, int], list[dict]]:
    """Episode rows grouped by their data file, in file order (each file's episodes consecutive)."""
    groups: dict[tuple[int, int], list[dict]] = {}
    last = (-1, -1)
    for row in rows:
        key = (row["data/chunk_index"], row["data/file_index"])
        if key < last:
            raise DatasetError(f"{row['_where']} (episode {row['episode_index']}): data/chunk_index, file_index "
                               f"{key} come before the previous episode's {last}; files must follow episode order")
        if key != last and key in groups:
            raise DatasetError(f"{row['_where']} (episode {row['episode_index']}): data file {key} is shared by "
                               "episodes that are not consecutive")
        groups.setdefault(key, []).append(row)
        last = key
    return groups


def load_numeric_columns(root: Path, info: dict, rows: list[dict], names: Iterable[str]) -> dict[str, np.ndarray]:
    """The columns ``names`` over all frames, file after file, with each file checked against the features and the
    episode metadata: readable, every declared column present and typed, nothing undeclared, as many rows as its
    episodes' lengths, and episode_index / index / frame_index as the metadata says. Data files that no episode
    points at are refused (LeRobot's loader would read them as frames)."""
    features, data_path = info["features"], info["data_path"]
    names = list(names)
    groups = episodes_by_file(rows)
    expected_paths = {(root / data_path.format(chunk_index=c, file_index=f)).resolve() for c, f in groups}
    for _, _, path in chunk_files(root / "data"):
        if path.resolve() not in expected_paths:
            raise DatasetError(f"{path}: a data file that no episode in meta/episodes points at (frames of an "
                               "episode whose write was interrupted before its metadata, or a stray file)")
    parts: dict[str, list[np.ndarray]] = {k: [] for k in names}
    declared = set(features)
    for (chunk, file), eps in groups.items():
        path = root / data_path.format(chunk_index=chunk, file_index=file)
        first, last = eps[0]["episode_index"], eps[-1]["episode_index"]
        where = f"{path} (episode{'s' if first != last else ''} {first}{f'–{last}' if first != last else ''})"
        table = read_parquet(path, f"frames of {where.split(' (', 1)[1][:-1]}")
        extra = [c for c in table.column_names if c not in declared]
        if extra:
            raise DatasetError(f"{where}: column(s) {extra} are not declared in meta/info.json features")
        n = sum(e["length"] for e in eps)
        if table.num_rows != n:
            raise DatasetError(f"{where}: {table.num_rows} rows; meta/episodes says its episodes hold {n} frames "
                               f"(lengths {[e['length'] for e in eps]})")
        cols = {k: column_to_numpy(table, k, features[k], where) for k in features if is_numeric(features[k])}
        ep = np.repeat([e["episode_index"] for e in eps], [e["length"] for e in eps])
        frame = np.concatenate([np.arange(e["length"]) for e in eps])
        start = eps[0]["dataset_from_index"]
        _check_rows(cols, ep, frame, start, path)
        for k in names:
            parts[k].append(cols[k])
    return {k: np.concatenate(v) for k, v in parts.items()}


def _check_rows(cols: dict[str, np.ndarray], ep: np.ndarray, frame: np.ndarray, start: int, path: Path) -> None:
    """episode_index, frame_index and index of a data file's rows against the metadata; reports episode + frame."""
    for name, expected, what in (("episode_index", ep, "differs from meta/episodes"),
                                 ("frame_index", frame, "is not contiguous 0 … length−1"),
                                 ("index", np.arange(start, start + len(ep)), "(global frame number) is not "
                                  "contiguous with dataset_from_index")):
        bad = np.flatnonzero(cols[name] != expected)
        if len(bad):
            r = int(bad[0])
            raise DatasetError(f"{path} (episode {int(ep[r])}), frame {int(frame[r])}: column {name!r} {what} "
                               f"(got {cols[name][r]}, expected {expected[r]})")
