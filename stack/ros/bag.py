"""A rosbag2 bag of MCAP files, written from serialized (CDR) messages: what ``ros2 bag record -s mcap`` writes.

A bag is a directory: ``<name>_0.mcap``, ``<name>_1.mcap``, … (rotated by size and/or duration; each file complete
in itself, with its own schemas and channels) and a rosbag2 ``metadata.yaml`` (format version 9) listing them.

What a killed writer loses: ``metadata.yaml`` is written (atomically) when the bag is created, when each file is
opened and at every rotation and close, so it always lists the file being written. Messages go into compressed
chunks; a chunk is written out (and the stream flushed to the OS) when it reaches ``chunk_size`` bytes or when its
oldest message is ``flush_period_s`` old (``maybe_flush``; the recorder calls it on a timer, so a quiet topic's last
message is not kept back). A process killed at any moment (SIGKILL) therefore loses at most the last
``flush_period_s`` of messages (default 100 ms): what the OS has been handed survives the process. An unfinished
file (no summary, no footer; possibly a half-written last chunk) is read back by ``read_bag``, which recovers every
complete record and warns where the file stops. Power loss is another matter: files are fsynced only at rotation
and close.

Message definitions and type hashes come from the ``rosbags`` type store (ROS 2 Kilted definitions); a type it does
not know is read from the installed ROS package's ``.msg`` file (``ament_index``).

No rclpy here: ``BagWriter`` and ``read_bag`` are plain Python (``mcap``, ``mcap_ros2``, ``rosbags``, ``yaml``).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
import time
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from mcap.records import Schema
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
    """``add_topic`` each topic once, ``write`` serialized messages, ``maybe_flush`` now and then, ``close``
    (idempotent) at the end.

    ``max_bytes`` / ``max_duration_s`` > 0 start a new file when the current one reaches either (checked before each
    write; the size is that of the messages written, before compression). ``flush_period_s`` > 0 bounds how long a
    written message may stay in memory (the module doc: the data a killed process loses); 0 leaves it to
    ``chunk_size``."""

    def __init__(self, path: str | os.PathLike, max_bytes: int = 0, max_duration_s: float = 0.0,
                 compression: str = "", chunk_size: int = 256 * 1024, custom_data: dict[str, str] | None = None,
                 flush_period_s: float = 0.1):
        self.path = Path(path)
        if self.path.exists() and any(self.path.iterdir()):
            raise FileExistsError(f"bag directory {self.path} exists and is not empty; not overwriting")
        if compression not in _COMPRESSION:
            raise ValueError(f"compression: {compression!r}; expected one of {sorted(_COMPRESSION)}")
        if flush_period_s < 0:
            raise ValueError(f"flush_period_s: {flush_period_s}; expected >= 0 (0: flush by chunk size only)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.max_duration_ns = int(max_duration_s * 1e9)
        self.compression = _COMPRESSION[compression]
        self.chunk_size = chunk_size
        self.flush_period_s = float(flush_period_s)
        self.custom_data = dict(custom_data or {})
        self.topics: dict[str, _Topic] = {}
        self.files: list[_File] = []
        self._stream = None
        self._writer: Writer | None = None
        self._schemas: dict[str, int] = {}
        self._unflushed_since: float | None = None
        """``time.monotonic()`` of the oldest message not yet handed to the OS (None: nothing pending)."""
        self.closed = False
        self.write_metadata()  # an empty bag is a bag too: a reader finds what it is before the first message

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
        if self._unflushed_since is None:
            self._unflushed_since = time.monotonic()
        self.maybe_flush()

    def flush_due_in(self) -> float | None:
        """Seconds until pending messages must be flushed (0: now; None: nothing pending or no period)."""
        if self._unflushed_since is None or not self.flush_period_s:
            return None
        return max(0.0, self._unflushed_since + self.flush_period_s - time.monotonic())

    def maybe_flush(self) -> bool:
        """Flush if the oldest pending message is ``flush_period_s`` old; whether it flushed."""
        due = self.flush_due_in()
        if due is None or due > 0:
            return False
        self.flush()
        return True

    def flush(self) -> None:
        """Write the chunk in progress and hand everything to the OS (no fsync)."""
        if self._writer is not None:
            self._writer.flush()
        self._unflushed_since = None

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
        self._stream.flush()  # the header: a file killed before its first chunk is still recognisably MCAP
        self._schemas = {}
        self.files.append(f)
        self.write_metadata()
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
        self._unflushed_since = None
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


# ---- reading ----------------------------------------------------------------------------------------------------
class BagRecoveryWarning(UserWarning):
    """``read_bag`` met a file it could read only in part (unfinished, corrupt, not MCAP, no metadata.yaml)."""


_MAGIC = b"\x89MCAP0\r\n"
_OP_FOOTER, _OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END = 0x02, 0x03, 0x04, 0x05, 0x06, 0x0F
_KNOWN_OPCODES = set(range(0x01, 0x11))
_COMPRESSIONS = ("", "zstd", "lz4")


class _Corrupt(ValueError):
    pass


class _Cursor:
    """Little-endian reads from a buffer that refuse to run past its end (MCAP's primitive types)."""

    def __init__(self, buf, pos: int = 0, end: int | None = None):
        self.buf, self.pos, self.end = buf, pos, len(buf) if end is None else end

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > self.end:
            raise _Corrupt(f"field of {n} bytes runs past the record's end")
        out = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return out

    def u(self, fmt: str) -> int:
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))[0]

    def string(self) -> str:
        try:
            return self.take(self.u("<I")).decode()
        except UnicodeDecodeError as e:
            raise _Corrupt(f"string is not UTF-8 ({e})") from None


def _chunk_records(body: bytes) -> bytes:
    """The (decompressed, CRC-checked) records of a Chunk record's body."""
    c = _Cursor(body)
    c.u("<Q"), c.u("<Q")  # message start / end time
    size, crc = c.u("<Q"), c.u("<I")
    compression = c.string()
    data = c.take(c.u("<Q"))
    # Decompressed at most one byte past the declared size, a piece at a time: a damaged size field (say 2**60) must
    # cost a warning, not a MemoryError.
    if compression == "zstd":
        import zstandard

        try:
            reader = zstandard.ZstdDecompressor().stream_reader(data)
            pieces, total = [], 0
            while total <= size:
                piece = reader.read(min(1 << 20, size + 1 - total))
                if not piece:
                    break
                pieces.append(piece)
                total += len(piece)
            data = b"".join(pieces)
        except (zstandard.ZstdError, MemoryError) as e:
            raise _Corrupt(f"zstd chunk does not decompress ({type(e).__name__}: {e})") from None
    elif compression == "lz4":
        import lz4.frame

        try:
            data = lz4.frame.LZ4FrameDecompressor().decompress(data, max_length=min(size + 1, 1 << 62))
        except (RuntimeError, MemoryError, OverflowError) as e:
            raise _Corrupt(f"lz4 chunk does not decompress ({type(e).__name__}: {e})") from None
    elif compression:
        raise _Corrupt(f"unknown chunk compression {compression!r}")
    if len(data) != size:
        raise _Corrupt(f"chunk holds {len(data)} bytes, its header says {size}")
    if crc and zlib.crc32(data) != crc:
        raise _Corrupt("chunk CRC mismatch")
    return data


def _plausible_chunk(buf, pos: int) -> bool:
    """Whether a Chunk record could start at ``pos`` (its lengths agree with each other and with the file)."""
    try:
        c = _Cursor(buf, pos)
        if c.u("<B") != _OP_CHUNK:
            return False
        length = c.u("<Q")
        if pos + 9 + length > len(buf):
            return False
        c.take(28)  # times, uncompressed size, crc
        n = c.u("<I")
        if n > 4 or c.take(n).decode(errors="replace") not in _COMPRESSIONS:
            return False
        return c.u("<Q") == length - 40 - n
    except _Corrupt:
        return False


class _FileReader:
    """Every complete record of one MCAP file, finished or not: schemas, channels and messages, top level or in
    chunks. Damage is warned about (file and byte offset) and skipped: a corrupt chunk is dropped and reading
    resumes at the next plausible chunk; an unfinished record ends the file."""

    def __init__(self, path: Path, decode: bool | frozenset = True):
        self.path = path
        self.decode = decode
        self.schemas: dict[int, Schema] = {}
        self.channels: dict[int, tuple[str, str, int]] = {}  # id -> (topic, encoding, schema id)
        self.messages: list[tuple[str, int, int, object]] = []  # (topic, log time, publish time, message)
        self.unknown_channel = self.undecodable = 0
        from mcap_ros2.decoder import DecoderFactory

        self._decoders = DecoderFactory()  # caches by schema id: one per file (ids restart in every file)

    def warn(self, text: str) -> None:
        warnings.warn(f"read_bag: {self.path}: {text}", BagRecoveryWarning, stacklevel=4)

    def read(self) -> list[tuple[str, int, int, object]]:
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size < len(_MAGIC):
                    self.warn(f"{size} bytes: not an MCAP file; skipped")
                    return []
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
                    self._scan(buf)
        except OSError as e:
            self.warn(f"cannot read ({e}); skipped")
        if self.unknown_channel:
            self.warn(f"{self.unknown_channel} message(s) on channels whose definition was lost; skipped")
        if self.undecodable:
            self.warn(f"{self.undecodable} message(s) that do not decode with their schema; skipped")
        return self.messages

    def _scan(self, buf) -> None:
        pos, end = len(_MAGIC), len(buf)
        if buf[:len(_MAGIC)] != _MAGIC:
            # A damaged first byte must not cost a whole file: read on if MCAP chunks follow (another format has
            # none: a chunk's lengths must agree with each other and with the file).
            first = self._resync(buf, len(_MAGIC))
            if first is None:
                self.warn("does not start with the MCAP magic (bytes 0-7) and holds no MCAP chunk: not an MCAP "
                          "file; skipped")
                return
            self.warn(f"the MCAP magic (bytes 0-7) is damaged; reading the MCAP records from byte {first} on")
            pos = first if buf[pos] != 0x01 else pos  # the header record (opcode 0x01) may still be intact
        self._summary_definitions(buf)
        while pos < end:
            if pos + 9 > end:
                self.warn(f"ends inside a record header at byte {pos} (unfinished file: recording cut short?); "
                          f"{len(self.messages)} message(s) read before it")
                return
            opcode, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
            body_end = pos + 9 + length
            if opcode not in _KNOWN_OPCODES or body_end > end:
                if opcode in _KNOWN_OPCODES and self._resync(buf, pos + 1) is None:
                    self.warn(f"ends inside a record (opcode 0x{opcode:02x}, {length} bytes) at byte {pos} "
                              f"(unfinished file: recording cut short?); {len(self.messages)} message(s) read "
                              "before it")
                    return
                pos = self._skip_damage(buf, pos, f"no valid record at byte {pos}")
                continue
            try:
                if opcode == _OP_CHUNK:
                    self._records(_chunk_records(buf[pos + 9:body_end]), pos)
                elif opcode in (_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE):
                    self._record(opcode, _Cursor(buf, pos + 9, body_end), pos)
                elif opcode in (_OP_DATA_END, _OP_FOOTER):  # the summary only repeats what the data section held
                    if buf[end - len(_MAGIC):end] != _MAGIC:
                        self.warn(f"the summary after byte {pos} is cut short (truncated file); every message "
                                  "before it was read")
                    return
            except _Corrupt as e:
                pos = self._skip_damage(buf, pos, f"corrupt record (opcode 0x{opcode:02x}) at byte {pos}: {e}")
                continue
            pos = body_end
        self.warn(f"no summary or footer after byte {pos} (unfinished file: recording cut short?); "
                  f"{len(self.messages)} message(s) read")

    def _summary_definitions(self, buf) -> None:
        """Schemas and channels from a finished file's summary section (they are repeated there), so that messages
        still decode when the chunk that first defined their channel is damaged."""
        footer = len(buf) - len(_MAGIC) - 29  # opcode, length, summary start, summary offset start, crc
        if footer <= len(_MAGIC) or buf[len(buf) - len(_MAGIC):] != _MAGIC or buf[footer] != _OP_FOOTER:
            return
        start = struct.unpack_from("<Q", buf, footer + 9)[0]
        pos = start
        try:
            while len(_MAGIC) <= start and pos + 9 <= footer:
                opcode, length = buf[pos], struct.unpack_from("<Q", buf, pos + 1)[0]
                if pos + 9 + length > footer:
                    return
                if opcode in (_OP_SCHEMA, _OP_CHANNEL):
                    self._record(opcode, _Cursor(buf, pos + 9, pos + 9 + length), pos)
                pos += 9 + length
        except _Corrupt:
            return  # a damaged summary: the data section's own definitions still count

    def _skip_damage(self, buf, pos: int, why: str) -> int:
        nxt = self._resync(buf, pos + 1)
        if nxt is None:
            self.warn(f"{why}; nothing readable after it ({len(buf) - pos} bytes skipped)")
            return len(buf)
        self.warn(f"{why}; skipped {nxt - pos} bytes to the next chunk at byte {nxt}")
        return nxt

    @staticmethod
    def _resync(buf, start: int) -> int | None:
        pos = start
        while True:
            pos = buf.find(bytes([_OP_CHUNK]), pos)
            if pos < 0:
                return None
            if _plausible_chunk(buf, pos):
                return pos
            pos += 1

    def _records(self, data: bytes, chunk_pos: int) -> None:
        pos = 0
        while pos < len(data):
            if pos + 9 > len(data):
                raise _Corrupt(f"chunk's records end mid-header at {pos}")
            opcode, length = data[pos], struct.unpack_from("<Q", data, pos + 1)[0]
            end = pos + 9 + length
            if end > len(data):
                raise _Corrupt(f"chunk record at {pos} runs past the chunk")
            if opcode in (_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE):
                self._record(opcode, _Cursor(data, pos + 9, end), chunk_pos)
            pos = end

    def _record(self, opcode: int, c: _Cursor, pos: int) -> None:
        if opcode == _OP_SCHEMA:
            sid, name, encoding = c.u("<H"), c.string(), c.string()
            self.schemas[sid] = Schema(id=sid, name=name, encoding=encoding, data=c.take(c.u("<I")))
        elif opcode == _OP_CHANNEL:
            cid, sid, topic, encoding = c.u("<H"), c.u("<H"), c.string(), c.string()
            self.channels[cid] = (topic, encoding, sid)
        else:
            cid, _seq, log_time, publish_time = c.u("<H"), c.u("<I"), c.u("<Q"), c.u("<Q")
            data = c.take(c.end - c.pos)
            channel = self.channels.get(cid)
            if channel is None:
                self.unknown_channel += 1
                return
            topic, encoding, sid = channel
            if not (self.decode is True or (self.decode and topic in self.decode)):
                self.messages.append((topic, log_time, publish_time, data))
                return
            try:
                decoder = self._decoders.decoder_for(encoding, self.schemas.get(sid))
                if decoder is None:
                    raise ValueError(f"no decoder for {encoding!r} with schema {sid}")
                self.messages.append((topic, log_time, publish_time, decoder(data)))
            except Exception:  # a damaged payload in an undamaged-looking record: that message only
                self.undecodable += 1


def _bag_files(path: Path) -> list[Path]:
    """A bag directory's MCAP files in rotation order: those ``metadata.yaml`` lists, then any other ``*.mcap``."""
    def index(file: Path) -> int:  # <name>_<i>.mcap, in rotation order (not text order: _10 after _9)
        m = re.search(r"_(\d+)\.mcap$", file.name)
        return int(m.group(1)) if m else 0

    found = sorted(path.glob("*.mcap"), key=index)
    meta = path / "metadata.yaml"
    listed: list[Path] = []
    if not meta.is_file():
        warnings.warn(f"read_bag: {path}: no metadata.yaml; reading its {len(found)} .mcap file(s) in rotation "
                      "order", BagRecoveryWarning, stacklevel=3)
    else:
        try:
            loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20x faster on a long metadata.yaml
            info = yaml.load(meta.read_text(), Loader=loader)["rosbag2_bagfile_information"]
            listed = [path / str(name) for name in info["relative_file_paths"]]
        except Exception as e:
            warnings.warn(f"read_bag: {meta}: unreadable ({type(e).__name__}: {e}); reading the .mcap files in "
                          "rotation order", BagRecoveryWarning, stacklevel=3)
        for f in listed:
            if not f.is_file():
                warnings.warn(f"read_bag: {meta} lists {f.name}, which does not exist", BagRecoveryWarning,
                              stacklevel=3)
    files = [f for f in listed if f.is_file()]
    return files + [f for f in found if f not in files]


def read_bag(path: str | os.PathLike, decode: bool | Iterable[str] = True,
             publish_time: bool = False) -> dict[str, list]:
    """Every message of a bag (directory) or one MCAP file, decoded as ROS 2 messages with ``mcap_ros2``:
    ``{topic: [(log_time_ns, message), ...]}``, files in rotation order, each file's messages in log-time order.
    ``decode=False`` gives the CDR bytes instead (a collection of topics: those decoded, the rest bytes — decoding
    is most of the time a read takes); ``publish_time=True`` gives ``(log_time_ns, publish_time_ns,
    message)`` (the recorder stores the sender's DDS source time there: the order one node published in). Plain
    Python, no rclpy: what a laptop without ROS reads a robot's log with.

    Damage never raises: an unfinished file (a killed recorder), a truncated or corrupt one, a file that is not
    MCAP or a missing ``metadata.yaml`` gives a ``BagRecoveryWarning`` naming the file and the byte offset, and
    every complete record is still returned. Only a path with no MCAP file at all is an error."""
    path = Path(path)
    if path.is_dir():
        files = _bag_files(path)
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"read_bag: {path}: no such bag directory or MCAP file")
    if not files:
        raise FileNotFoundError(f"read_bag: no .mcap file in {path}")
    if not isinstance(decode, bool):
        decode = frozenset(decode)
    out: dict[str, list] = {}
    for file in files:
        messages = _FileReader(file, decode).read()
        messages.sort(key=lambda m: m[1])  # stable: arrival order kept among equal times
        for topic, log_time, pub_time, msg in messages:
            out.setdefault(topic, []).append((log_time, pub_time, msg) if publish_time else (log_time, msg))
    return out
