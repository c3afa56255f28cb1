"""``stack.ros.bag`` without ROS: a bag written by ``BagWriter`` reads back through ``read_bag``, ``mcap``'s own reader
and ``rosbags``; and ``read_bag`` recovers every complete record of an unfinished, truncated or damaged file with a
warning naming the file and the byte offset, never an exception."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest

pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (the `ros` extra)")
pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")

from stack.ros.bag import BagRecoveryWarning, BagWriter, read_bag  # noqa: E402

TYPE = "std_msgs/msg/Float64MultiArray"
TOPIC = "/r2s/count"


def _cdr(i: int) -> bytes:
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    t = store.types
    msg = t[TYPE](layout=t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.array([float(i)] * 4))
    return bytes(store.serialize_cdr(msg, TYPE))


def _values(log) -> list[int]:
    return [int(m.data[0]) for _, m in log.get(TOPIC, [])]


def _write_chunks(path, chunks: int, per_chunk: int = 10, compression: str = "zstd"):
    """A closed one-file bag whose messages come in ``chunks`` chunks (a flush after each); returns the file and the
    byte size of the file after each chunk (where each complete chunk ends)."""
    bag = BagWriter(path, compression=compression, flush_period_s=0)
    bag.add_topic(TOPIC, TYPE)
    ends = []
    for c in range(chunks):
        for k in range(per_chunk):
            i = c * per_chunk + k
            bag.write(TOPIC, _cdr(i), 1_000_000 + i)
        bag.flush()
        ends.append(bag.files[-1].path.stat().st_size)
    bag.close()
    return bag.files[-1].path, ends


def _read_warned(path) -> tuple[dict, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = read_bag(path)
    return log, [str(w.message) for w in caught if issubclass(w.category, BagRecoveryWarning)]


def test_finished_bag_reads_the_same_through_read_bag_mcap_and_rosbags(tmp_path):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.rosbag2 import Reader

    file, _ = _write_chunks(tmp_path / "bag", chunks=3)
    log, warned = _read_warned(tmp_path / "bag")
    assert warned == [] and _values(log) == list(range(30))
    with open(file, "rb") as f:  # the summary, indexes and footer are there: the seeking reader takes it
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        assert reader.get_summary().statistics.message_count == 30
        assert [int(m.data[0]) for *_, m in reader.iter_decoded_messages()] == list(range(30))
    with Reader(tmp_path / "bag") as reader:
        assert reader.message_count == 30


def test_metadata_is_written_at_start_and_lists_the_file_being_written(tmp_path):
    import yaml

    bag = BagWriter(tmp_path / "bag", flush_period_s=0.05)
    meta = tmp_path / "bag" / "metadata.yaml"
    assert meta.is_file(), "metadata.yaml must exist before the first message"
    bag.add_topic(TOPIC, TYPE)
    bag.write(TOPIC, _cdr(0), 1)
    info = yaml.safe_load(meta.read_text())["rosbag2_bagfile_information"]
    assert info["relative_file_paths"] == ["bag_0.mcap"], "the open file is listed while it is written"
    # flush_period_s bounds what stays in memory: once it has passed, maybe_flush writes the chunk out.
    size = bag.files[0].path.stat().st_size
    assert not bag.maybe_flush() and bag.flush_due_in() > 0
    time.sleep(0.06)
    assert bag.flush_due_in() == 0 and bag.maybe_flush()
    assert bag.files[0].path.stat().st_size > size
    # Abandoned without close (a killed writer): what was flushed reads back, with a warning.
    log, warned = _read_warned(tmp_path / "bag")
    assert _values(log) == [0]
    assert warned and "bag_0.mcap" in warned[0] and "unfinished" in warned[0]


def test_truncated_file_returns_every_complete_chunk_and_warns_with_the_offset(tmp_path):
    file, ends = _write_chunks(tmp_path / "bag", chunks=4)
    raw = file.read_bytes()
    for n_chunks, end in enumerate(ends):
        for cut in (end, end + 5, (end + (ends[n_chunks + 1] if n_chunks + 1 < len(ends) else len(raw))) // 2):
            part = tmp_path / f"cut_{cut}.mcap"
            part.write_bytes(raw[:cut])
            log, warned = _read_warned(part)
            assert _values(log) == list(range(10 * (n_chunks + 1))), f"cut at byte {cut}"
            assert warned and part.name in warned[0] and "byte" in warned[0], warned
    for cut in (0, 3, 8, 12):  # nothing, part of the magic, the magic alone, part of the header
        part = tmp_path / f"head_{cut}.mcap"
        part.write_bytes(raw[:cut])
        log, warned = _read_warned(part)
        assert log == {} and warned, f"cut at byte {cut}"


def test_a_flipped_byte_costs_at_most_its_chunk(tmp_path):
    file, ends = _write_chunks(tmp_path / "bag", chunks=5, compression="")
    raw = file.read_bytes()
    starts = [0, *ends[:-1]]
    for c in range(5):
        for where in (starts[c] + 40, (starts[c] + ends[c]) // 2):  # inside chunk c (the first holds the schema)
            damaged = bytearray(raw)
            damaged[where] ^= 0xA5
            part = tmp_path / "flipped.mcap"
            part.write_bytes(bytes(damaged))
            log, warned = _read_warned(part)
            values = _values(log)
            kept = set(range(50)) - set(range(10 * c, 10 * c + 10))
            assert kept <= set(values) and set(values) <= set(range(50)), f"chunk {c}, byte {where}"
            assert values == sorted(values)
            if len(values) < 50:
                assert warned and "flipped.mcap" in warned[0] and "byte" in warned[0], warned


def test_missing_metadata_non_mcap_and_empty_files_warn_and_the_rest_is_read(tmp_path):
    bag = tmp_path / "bag"
    _write_chunks(bag, chunks=2)
    (bag / "metadata.yaml").unlink()
    (bag / "notes_7.mcap").write_text("this is not an MCAP file at all, but it is long enough")
    (bag / "empty_8.mcap").write_bytes(b"")
    log, warned = _read_warned(bag)
    assert _values(log) == list(range(20))
    text = "\n".join(warned)
    assert "no metadata.yaml" in text and "notes_7.mcap" in text and "empty_8.mcap" in text
    # A metadata.yaml that is not YAML, or lists a file that is gone: warned about, files still read.
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed")
    log, warned = _read_warned(bag)
    assert _values(log) == list(range(20)) and any("metadata.yaml: unreadable" in w for w in warned)
    (bag / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  relative_file_paths: [bag_0.mcap, bag_1.mcap]\n")
    log, warned = _read_warned(bag)
    assert _values(log) == list(range(20)) and any("bag_1.mcap, which does not exist" in w for w in warned)
    with pytest.raises(FileNotFoundError, match="no such bag"):
        read_bag(tmp_path / "nothing_here")
