"""A rosbag2 bag of MCAP files, written from serialized (CDR) messages: what ``ros2 bag record -s mcap`` writes.

A bag is a directory: ``<name>_0.mcap``, ``<name>_1.mcap``, … (rotated by size and/or duration; each file complete
in itself, with its own schemas and channels) and a rosbag2 ``metadata.yaml`` (format version 9) listing them,
rewritten atomically after every rotation and at close, so a bag cut short by a crash still lists every finished
file. Message definitions and type hashes come from the ``rosbags`` type store (ROS 2 Kilted definitions); a type
it does not know is read from the installed ROS package's ``.msg`` file (``ament_index``).

No rclpy here: ``BagWriter`` is plain Python (``mcap``, ``rosbags``, ``yaml``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.writer import CompressionType, Writer

_COMPRESSION = {"": CompressionType.NONE, "none": CompressionType.NONE, "zstd": CompressionType.ZSTD,
                "lz4": CompressionType.LZ4}


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


_STORE = None
_RECORD_OVERHEAD = 31
"""Bytes an MCAP message record adds to its payload (opcode, length, channel, sequence, two times)."""


def message_definition(msgtype: str) -> tuple[str, str]:
    """(concatenated ros2msg definition, RIHS01 type hash) of ``pkg/msg/Type``."""
    global _STORE
    if _STORE is None:
        _STORE = _typestore()
    if msgtype not in _STORE.fielddefs:
        _register_from_share(_STORE, msgtype)
    text, _ = _STORE.generate_msgdef(msgtype, ros_version=2)
    return text, _STORE.hash_rihs01(msgtype)


def _register_from_share(store, msgtype: str, seen: set | None = None) -> None:
    """Add ``msgtype`` (and the types it uses) to ``store`` from the installed package's .msg file."""
    from ament_index_python.packages import get_package_share_directory
    from rosbags.typesys import get_types_from_msg

    seen = set() if seen is None else seen
    if msgtype in seen or msgtype in store.fielddefs:
        return
    seen.add(msgtype)
    pkg, _, name = msgtype.split("/")
    path = Path(get_package_share_directory(pkg)) / "msg" / f"{name}.msg"
    text = path.read_text()
    types = get_types_from_msg(text, msgtype)
    for ref in set(re.findall(r"^\s*([a-zA-Z_]\w*/\w+)", text, re.M)):  # pkg/Type fields
        p, t = ref.split("/")
        _register_from_share(store, f"{p}/msg/{t}", seen)
    store.register(types)


@dataclass
class _Topic:
    name: str
    msgtype: str
    msgdef: str
    type_hash: str
    qos: str
    count: int = 0


@dataclass
class _File:
    path: Path
    start_ns: int | None = None
    end_ns: int = 0
    count: int = 0
    bytes: int = 0
    """Uncompressed message bytes written (+ each record's overhead): the size estimate rotation uses."""
    channels: dict[str, int] = field(default_factory=dict)


class BagWriter:
    """``add_topic`` each topic once, ``write`` serialized messages, ``close`` (idempotent) at the end.

    ``max_bytes`` / ``max_duration_s`` > 0 start a new file when the current one reaches either (checked before each
    write; the size is that of the messages written, before compression)."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = 0, max_duration_s: float = 0.0,
                 compression: str = "", chunk_size: int = 256 * 1024, custom_data: dict[str, str] | None = None):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"bag directory {self.path} exists and is not empty; not overwriting")
        if compression not in _COMPRESSION:
            raise ValueError(f"compression: {compression!r}; expected one of {sorted(_COMPRESSION)}")
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.max_duration_ns = int(max_duration_s * 1e9)
        self.compression = _COMPRESSION[compression]
        self.chunk_size = chunk_size
        self.custom_data = dict(custom_data or {})
        self.topics: dict[str, _Topic] = {}
        self.files: list[_File] = []
        self._stream = None
        self._writer: Writer | None = None
        self._schemas: dict[str, int] = {}
        self.closed = False

    # ---- topics and messages --------------------------------------------------------------------------------------
    def add_topic(self, name: str, msgtype: str, qos: str = "") -> None:
        """``msgtype`` as ``pkg/msg/Type``; ``qos``: the offered QoS profiles as rosbag2 YAML (may be empty)."""
        if name in self.topics:
            if self.topics[name].msgtype != msgtype:
                raise ValueError(f"topic {name}: already recorded as {self.topics[name].msgtype}, not {msgtype}")
            return
        msgdef, type_hash = message_definition(msgtype)
        self.topics[name] = _Topic(name, msgtype, msgdef, type_hash, qos)

    def write(self, topic: str, data: bytes, log_time_ns: int, publish_time_ns: int | None = None) -> None:
        if self.closed:
            raise RuntimeError(f"bag {self.path} is closed")
        t = self.topics[topic]
        f = self._file_for(log_time_ns)
        channel = f.channels.get(topic)
        if channel is None:
            channel = self._register(t, f)
        self._writer.add_message(channel, log_time_ns, bytes(data),
                                 publish_time_ns if publish_time_ns is not None else log_time_ns, t.count)
        t.count += 1
        f.count += 1
        f.bytes += len(data) + _RECORD_OVERHEAD
        f.start_ns = log_time_ns if f.start_ns is None else min(f.start_ns, log_time_ns)
        f.end_ns = max(f.end_ns, log_time_ns)

    @property
    def message_count(self) -> int:
        return sum(t.count for t in self.topics.values())

    # ---- files ----------------------------------------------------------------------------------------------------
    def _file_for(self, log_time_ns: int) -> _File:
        if self._writer is not None:
            f = self.files[-1]
            too_big = self.max_bytes and f.bytes >= self.max_bytes
            too_long = self.max_duration_ns and f.start_ns is not None and \
                log_time_ns - f.start_ns >= self.max_duration_ns
            if not (too_big or too_long):
                return f
            self._finish_file()
        return self._open_file()

    def _open_file(self) -> _File:
        f = _File(self.path / f"{self.path.name}_{len(self.files)}.mcap")
        self._stream = open(f.path, "wb")
        self._writer = Writer(self._stream, chunk_size=self.chunk_size, compression=self.compression)
        self._writer.start(profile="ros2", library="r2s recorder")
        self._schemas = {}
        self.files.append(f)
        return f

    def _register(self, t: _Topic, f: _File) -> int:
        schema = self._schemas.get(t.msgtype)
        if schema is None:
            schema = self._writer.register_schema(t.msgtype, "ros2msg", t.msgdef.encode())
            self._schemas[t.msgtype] = schema
        f.channels[t.name] = self._writer.register_channel(
            t.name, "cdr", schema, {"offered_qos_profiles": t.qos, "topic_type_hash": t.type_hash})
        return f.channels[t.name]

    def _finish_file(self) -> None:
        self._writer.finish()
        self._stream.flush()
        os.fsync(self._stream.fileno())
        self._stream.close()
        self._writer = self._stream = None
        self.write_metadata()

    def close(self) -> None:
        if self.closed:
            return
        if self._writer is not None:
            self._finish_file()
        else:
            self.write_metadata()
        self.closed = True

    # ---- metadata.yaml --------------------------------------------------------------------------------------------
    def write_metadata(self) -> None:
        files = [f for f in self.files if f.path.exists()]
        starts = [f.start_ns for f in files if f.start_ns is not None]
        start = min(starts) if starts else 0
        end = max((f.end_ns for f in files), default=0)
        info = {
            "version": 9,
            "storage_identifier": "mcap",
            "relative_file_paths": [f.path.name for f in files],
            "duration": {"nanoseconds": max(0, end - start)},
            "starting_time": {"nanoseconds_since_epoch": start},
            "message_count": sum(f.count for f in files),
            "topics_with_message_count": [
                {"topic_metadata": {"name": t.name, "type": t.msgtype, "serialization_format": "cdr",
                                    "offered_qos_profiles": [], "type_description_hash": t.type_hash},
                 "message_count": t.count}
                for t in self.topics.values()
            ],
            "compression_format": "",
            "compression_mode": "",
            "files": [
                {"path": f.path.name, "starting_time": {"nanoseconds_since_epoch": f.start_ns or 0},
                 "duration": {"nanoseconds": max(0, f.end_ns - (f.start_ns or 0))}, "message_count": f.count}
                for f in files
            ],
            "custom_data": self.custom_data or None,
            "ros_distro": os.environ.get("ROS_DISTRO", "kilted"),
        }
        tmp = self.path / "metadata.yaml.tmp"
        tmp.write_text(yaml.safe_dump({"rosbag2_bagfile_information": info}, sort_keys=False))
        os.replace(tmp, self.path / "metadata.yaml")


def read_bag(path: str | os.PathLike) -> dict[str, list]:
    """Every message of a bag's MCAP files (in file order), decoded as ROS 2 messages with ``mcap_ros2``:
    ``{topic: [(log_time_ns, message), ...]}``. Plain Python, no rclpy: what a laptop without ROS reads a robot's
    log with."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    path = Path(path)
    def index(file: Path) -> int:  # <name>_<i>.mcap, in rotation order (not text order: _10 after _9)
        m = re.search(r"_(\d+)\.mcap$", file.name)
        return int(m.group(1)) if m else 0

    files = sorted(path.glob("*.mcap"), key=index) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"read_bag: no .mcap file in {path}")
    out: dict[str, list] = {}
    for file in files:
        with open(file, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            for _schema, channel, message, decoded in reader.iter_decoded_messages(log_time_order=True):
                out.setdefault(channel.topic, []).append((message.log_time, decoded))
    return out
