"""``stack.data.logs`` without ROS: a bag written the way the r2s node graph and the recorder write it (same topics,
types, order and stamps, through the recorder's own ``BagWriter``) reads back into the steps and episodes it was
built from, field by field; ``r2s logs info`` summarises it; a damaged bag is read up to (and past) the damage with a
warning naming the file and the byte offset, never an exception, never a readable episode dropped."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (the `ros` extra)")
pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")

from stack.data.episodes import AUTHORITY  # noqa: E402
from stack.data.logs import UNKNOWN_AUTHORITY, read_log, summary  # noqa: E402
from stack.ros import topics as T  # noqa: E402
from stack.ros.bag import BagRecoveryWarning, BagWriter  # noqa: E402

JOINTS = [f"j{i}" for i in range(6)]
OBS_NAMES = [f"joint_pos[{i}]" for i in range(6)] + [f"goal[{i}]" for i in range(3)]
PERIOD = 50_000_000  # 20 Hz, ns
HUMAN_MASK = np.array([1, 1, 0, 0, 0, 0], bool)
VERSION = "sha256:0123abcd"
PRE_STEP = -3.25


def _store():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class Graph:
    """Publishes into a ``BagWriter`` what the nodes publish, in their order: per policy step the proposal then the
    observation (policy node), the executed command, authority, mask and status (safety node), the reward and the
    success flag (sim robot); episode events and the latched policy info. ``publish_time`` is the sender's time,
    ``log_time`` the recorder's arrival time, which may reorder messages of different topics (``jitter``)."""

    def __init__(self, path, per_chunk: bool = True, max_bytes: int = 0):
        self.store, self.t = _store(), 10_000_000_000
        self.bag = BagWriter(path, compression="zstd", flush_period_s=0, chunk_size=1 << 20, max_bytes=max_bytes,
                             custom_data={"recorder": "r2s", "robot": "so101", "task": "reach"})
        self.per_chunk = per_chunk
        self.rng = np.random.default_rng(0)
        for name, (msgtype, _) in T.TYPES.items():
            self.bag.add_topic(name, msgtype)
        self.expected: list[dict] = []  # the steps, as built
        self.outside: list[dict] = []
        self.pending = None  # a decision the safety node publishes late

    def _types(self):
        return self.store.types

    def _header(self, stamp):
        t = self._types()
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                nanosec=stamp % 10**9), frame_id="")

    def send(self, topic, msg, jitter: int = 0):
        self.t += 1_000  # 1 µs between publications
        data = bytes(self.store.serialize_cdr(msg, T.TYPES[topic][0]))
        self.bag.write(topic, data, self.t + 200_000 + jitter, publish_time_ns=self.t)

    def _traj(self, stamp, names, positions):
        t = self._types()
        point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(positions, float), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=PERIOD))
        return t["trajectory_msgs/msg/JointTrajectory"](header=self._header(stamp), joint_names=list(names),
                                                        points=[point])

    def policy_info(self):
        t = self._types()
        values = [t["diagnostic_msgs/msg/KeyValue"](key=k, value=v) for k, v in
                  {"robot": "so101", "policy_version": VERSION, "run_id": "run-7"}.items()]
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name="policy", message=VERSION,
                                                           hardware_id="so101", values=values)
        self.send(T.POLICY_INFO, t["diagnostic_msgs/msg/DiagnosticArray"](header=self._header(self.t),
                                                                           status=[status]))
        if self.per_chunk:
            self.bag.flush()

    def episode(self, event, stamp, **values):
        t = self._types()
        values = {"robot": "so101", "task": "reach", **values}
        if "policy_version" not in values:
            values["policy_version"] = VERSION  # what the recorder adds
        kvs = [t["diagnostic_msgs/msg/KeyValue"](key=k, value=str(v)) for k, v in values.items()]
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name="episode", message=event,
                                                           hardware_id="so101", values=kvs)
        self.send(T.EPISODE, t["diagnostic_msgs/msg/DiagnosticArray"](header=self._header(stamp), status=[status]))
        if self.per_chunk:
            self.bag.flush()

    def decision(self, stamp, executed, authority, mask, status, jitter=0):
        t = self._types()
        self.send(T.EXECUTED, self._traj(stamp, JOINTS, executed), jitter=jitter)
        self.send(T.AUTHORITY, t["std_msgs/msg/String"](data=authority))
        self.send(T.INTERVENTION_MASK, t["std_msgs/msg/Float64MultiArray"](
            layout=t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.asarray(mask, float)))
        self.send(T.SAFETY_STATUS, t["std_msgs/msg/String"](data=status))

    def reward(self, reward, success=False):
        t = self._types()
        self.send(T.REWARD, t["std_msgs/msg/Float64"](data=float(reward)))
        self.send(T.SUCCESS, t["std_msgs/msg/Bool"](data=bool(success)))

    def step(self, stamp, obs, proposal, reward=None, success=False, human=None, hold=False, jitter=0, extra=(),
             late=False):
        """One policy step at ``stamp``; ``human``: the teleop command(s) (a list) the safety node executes instead;
        ``hold``: the safety node holds (stamped with its own clock); ``extra``: rewards of further sim control steps
        before the next policy step (the policy missed a tick); ``late``: the safety node answers after the policy
        published its next step (a slow safety node)."""
        t = self._types()
        self.send(T.PROPOSAL, self._traj(stamp, JOINTS, proposal))
        self.send(T.OBSERVATION, t["sensor_msgs/msg/JointState"](
            header=self._header(stamp), name=OBS_NAMES, position=np.asarray(obs, float), velocity=np.zeros(0),
            effort=np.zeros(0)))
        if self.pending is not None:
            self.decision(*self.pending)
            self.pending = None
        row = {"stamp": stamp, "obs": obs, "proposal": proposal, "reward": reward, "success": success}
        if hold:
            held = np.asarray(obs[:6]) - 1.0
            self.decision(stamp + 7_000, held, "policy", np.ones(6), "hold: e-stop")
            row.update(executed=held, authority=AUTHORITY["policy"], mask=np.ones(6, bool), status="hold: e-stop",
                       executed_stamp=stamp + 7_000)
        elif human is not None:
            for i, cmd in enumerate(human):  # teleop at its own rate: the last one is in force at the next step
                self.decision(stamp + 3_000 + i, cmd, "human", HUMAN_MASK, "ok", jitter=jitter)
            row.update(executed=human[-1], authority=AUTHORITY["human"], mask=HUMAN_MASK, status="ok",
                       executed_stamp=stamp + 3_000 + len(human) - 1)
        else:
            executed = np.asarray(proposal) + 0.25  # the limiter moved it
            if late:
                self.pending = (stamp, executed, "policy", np.zeros(6), "ok")
            else:
                self.decision(stamp, executed, "policy", np.zeros(6), "ok", jitter=jitter)
            row.update(executed=executed, authority=AUTHORITY["policy"], mask=np.zeros(6, bool), status="ok",
                       executed_stamp=stamp)
        if reward is not None:
            for r in (reward, *extra):
                self.reward(r, success)
            row["reward"] = reward + sum(extra)
        self.t += PERIOD
        if self.per_chunk:
            self.bag.flush()  # one chunk per step: damage tests can cut between steps
        return row

    def close(self):
        self.bag.close()
        return self.bag.files[-1].path


def _obs(episode, k):
    return [100 * episode + k + 0.01 * j for j in range(9)]


def _proposal(episode, k):
    return [100 * episode + k + 0.5 + 0.001 * j for j in range(6)]


def build(path, per_chunk=True, jitter=0, max_bytes=0):
    """Two episodes (5 and 6 steps) with a held step between them; a human takes joints j0, j1 over for steps 2 and
    3 of episode 1 (two teleop commands in step 2). Every value is distinct: a swapped field or an off-by-one shows.
    The sim's first control step of episode 1 runs before the policy's first step in it (reward ``PRE_STEP``, no
    step's), the policy misses a tick in episode 0's step 1 (two rewards in it), and the safety node answers episode
    0's step 2 only after step 3's observation."""
    g = Graph(path, per_chunk, max_bytes)
    g.policy_info()
    stamp = 1_000 * PERIOD
    episodes = []
    for e, (n, outcome) in enumerate(((5, "success"), (6, "timeout"))):
        g.episode("start", stamp, episode=e, seed=40 + e)
        stamp += 1
        if e == 1:
            g.reward(PRE_STEP)
        rows = []
        for k in range(n):
            stamp += PERIOD
            human = None
            if e == 1 and k in (2, 3):
                human = [np.full(6, 900.0 + 10 * k + i) for i in range(2 if k == 2 else 1)]
            success = e == 0 and k == n - 1
            rows.append(g.step(stamp, _obs(e, k), _proposal(e, k), reward=10 * e + k + 0.5, success=success,
                               human=human, jitter=jitter * (-1) ** k, extra=(0.125,) if (e, k) == (0, 1) else (),
                               late=(e, k) == (0, 2)))
        success_step = n if outcome == "success" else ""
        g.episode("end", stamp + PERIOD, episode=e, outcome=outcome, length=n, success_step=success_step,
                  **{"return": sum(r["reward"] for r in rows) + (PRE_STEP if e == 1 else 0.0)})
        stamp += PERIOD
        # The observation stamped with the end (the terminal state) and one between episodes: outside both.
        g.outside.append(g.step(stamp, _obs(e, 50), _proposal(e, 50), hold=True))
        stamp += 2 * PERIOD
        episodes.append(rows)
    g.expected = episodes
    return g


def _read(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        log = read_log(path)
    return log, [str(w.message) for w in caught]


def _check_steps(steps, rows):
    np.testing.assert_array_equal(steps["stamp_ns"], [r["stamp"] for r in rows])
    np.testing.assert_array_equal(steps["observation"], [r["obs"] for r in rows])
    np.testing.assert_array_equal(steps["proposal"], [r["proposal"] for r in rows])
    np.testing.assert_array_equal(steps["executed"], [r["executed"] for r in rows])
    np.testing.assert_array_equal(steps["executed_stamp_ns"], [r["executed_stamp"] for r in rows])
    np.testing.assert_array_equal(steps["authority"], [r["authority"] for r in rows])
    np.testing.assert_array_equal(steps["intervention_mask"], [r["mask"] for r in rows])
    assert list(steps["safety_status"]) == [r["status"] for r in rows]
    np.testing.assert_array_equal(steps["reward"], [np.nan if r["reward"] is None else r["reward"] for r in rows])
    np.testing.assert_array_equal(steps["success"], [r["success"] for r in rows])
    assert np.all(np.diff(steps["time_ns"]) > 0) and np.all(steps["log_time_ns"] > steps["time_ns"])


@pytest.mark.parametrize("jitter", [0, 900_000])
def test_steps_and_episodes_read_back_exactly_as_built(tmp_path, jitter):
    # jitter: arrival times reorder the executed command after its authority/mask/status (different DDS readers);
    # the decision is still grouped by the safety node's source times.
    g = build(tmp_path / "bag", jitter=jitter)
    g.close()
    log, warned = _read(tmp_path / "bag")
    assert warned == []
    assert log.obs_names == OBS_NAMES and log.action_names == JOINTS
    assert [e.index for e in log.episodes] == [0, 1]
    for episode, rows in zip(log.episodes, g.expected):
        _check_steps(episode.steps, rows)
    _check_steps(log.outside, g.outside)
    first, second = log.episodes
    assert (first.outcome, first.success_step, second.outcome, second.success_step) == ("success", 5, "timeout", None)
    assert first.robot == "so101" and first.task == "reach" and first.policy_version == VERSION
    assert first.values["seed"] == "40" and second.values["seed"] == "41" and second.values["length"] == "6"
    assert (first.unstepped_reward, second.unstepped_reward) == (0.0, PRE_STEP)
    for episode in log.episodes:
        assert float(episode.values["return"]) == pytest.approx(np.sum(episode.steps["reward"]) +
                                                                episode.unstepped_reward)


def test_summary_counts_interventions_outcomes_versions_and_rates(tmp_path):
    build(tmp_path / "bag").close()
    s = summary(read_log(tmp_path / "bag"))
    assert (s["episodes"], s["steps"], s["steps_outside_episodes"]) == (2, 11, 2)
    assert s["interventions"] == 1 and s["intervened_episodes"] == 1  # steps 2 and 3 of episode 1: one takeover
    assert s["human_share"] == pytest.approx(2 / 11)
    assert s["human_dim_share"] == pytest.approx(2 * 2 / (11 * 6))  # two of six joints on two steps
    assert s["outcomes"] == {"success": 1, "timeout": 1} and s["without_outcome"] == 0
    assert s["policy_versions"] == {VERSION: 2} and s["robots"] == ["so101"] and s["tasks"] == ["reach"]
    obs = s["topics"][T.OBSERVATION]
    # 13 observations (11 steps, 2 outside), one per 50 ms period as published: 20 Hz
    assert obs["count"] == 13 and obs["rate_hz"] == pytest.approx(20.0, rel=0.01)
    assert s["topics"][T.EXECUTED]["count"] == 14  # one extra teleop command
    assert [e["steps"] for e in s["per_episode"]] == [5, 6]
    assert s["per_episode"][1]["human_steps"] == 2 and s["per_episode"][0]["return"] == pytest.approx(12.625)
    assert s["warnings"] == []


def test_logs_info_cli_prints_json_and_text(tmp_path, capsys):
    from stack.cli import main

    build(tmp_path / "bag").close()
    assert main(["logs", "info", str(tmp_path / "bag"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (out["episodes"], out["steps"], out["interventions"]) == (2, 11, 1)
    assert out["human_share"] == pytest.approx(2 / 11)
    assert main(["logs", "info", str(tmp_path / "bag")]) == 0
    text = capsys.readouterr().out
    assert "2 episode(s), 11 step(s)" in text and T.OBSERVATION in text and VERSION in text
    assert main(["logs", "info", str(tmp_path / "missing")]) == 2
    assert "no such bag" in capsys.readouterr().err


# ---- damage -------------------------------------------------------------------------------------------------------
def _chunk_ends(path):
    """Byte offsets where each chunk (with its message indexes) ends, from the file's own records."""
    import struct

    raw, pos, ends = path.read_bytes(), 8, []
    while pos + 9 <= len(raw):
        opcode, length = raw[pos], struct.unpack_from("<Q", raw, pos + 1)[0]
        if opcode == 0x0F:  # data end
            break
        pos += 9 + length
        if opcode == 0x06:
            ends.append(pos)
        elif opcode == 0x07 and ends:  # message index: belongs to the chunk before
            ends[-1] = pos
    return raw, ends


def _same_prefix(episode, rows):
    """The episode holds its first steps exactly as built (a cut may end it early, never change a step)."""
    assert 0 < episode.length <= len(rows)
    _check_steps(episode.steps, rows[:episode.length])


@pytest.fixture
def built(tmp_path):
    g = build(tmp_path / "bag")
    return g, g.close()


def test_a_file_cut_mid_record_keeps_every_step_before_the_cut(tmp_path, built):
    g, file = built
    raw, ends = _chunk_ends(file)
    # Cut inside the chunk of episode 1's step 2 (chunk 0: policy info; 1: start; 2-6: steps; 7: end; 8: outside
    # step; 9: start; 10, 11: steps 0, 1; 12: step 2).
    cut = (ends[11] + ends[12]) // 2
    part = tmp_path / "cut.mcap"
    part.write_bytes(raw[:cut])
    log, warned = _read(part)
    assert any("cut.mcap" in w and f"byte {ends[11]}" in w for w in warned), warned
    assert any("episode 1 has no end event" in w for w in warned), warned
    assert len(log.episodes) == 2
    _check_steps(log.episodes[0].steps, g.expected[0])
    _same_prefix(log.episodes[1], g.expected[1])
    assert log.episodes[1].length == 2 and log.episodes[1].outcome is None
    assert summary(log)["without_outcome"] == 1


def test_flipped_bytes_in_the_middle_cost_one_step_and_every_episode_is_kept(tmp_path, built):
    g, file = built
    raw, ends = _chunk_ends(file)
    damaged = bytearray(raw)
    for where in range(ends[3] + 60, ends[3] + 64):  # inside the chunk of episode 0's step 2
        damaged[where] ^= 0xFF
    part = tmp_path / "flipped.mcap"
    part.write_bytes(bytes(damaged))
    log, warned = _read(part)
    assert any("flipped.mcap" in w and f"byte {ends[3]}" in w for w in warned), warned
    assert [e.index for e in log.episodes] == [0, 1]
    rows = g.expected[0]
    _check_steps(log.episodes[0].steps, rows[:2] + rows[3:])
    _check_steps(log.episodes[1].steps, g.expected[1])


def test_lost_episode_events_keep_every_step_in_an_episode(tmp_path, built):
    g, file = built
    raw, ends = _chunk_ends(file)
    damaged = bytearray(raw)
    for chunk in (7, 9):  # episode 0's end and episode 1's start
        damaged[ends[chunk - 1] + 60] ^= 0xFF
    part = tmp_path / "events.mcap"
    part.write_bytes(bytes(damaged))
    log, warned = _read(part)
    assert any("episode 0 has no end event" in w for w in warned) and any(
        "episode 1 has no start event" in w for w in warned), warned
    first, second = log.episodes
    # Split at the reset (the longest pause): episode 0 keeps its steps and the held terminal step after them; with
    # the start lost, nothing tells that episode 1's first sim reward came after it: that step takes it.
    _check_steps(first.steps, g.expected[0] + [{**g.outside[0], "reward": PRE_STEP}])
    _check_steps(second.steps, g.expected[1])
    assert (first.index, first.outcome, second.index, second.outcome) == (0, None, 1, "timeout")
    assert summary(log)["outcomes"] == {"none": 1, "timeout": 1}
    # Only an end lost: the episode ends where the next one starts.
    damaged = bytearray(raw)
    damaged[ends[6] + 60] ^= 0xFF
    part.write_bytes(bytes(damaged))
    log, warned = _read(part)
    first, second = log.episodes
    _check_steps(first.steps, g.expected[0] + g.outside[:1])
    _check_steps(second.steps, g.expected[1])
    assert first.outcome is None and first.values["seed"] == "40"


def test_a_rotated_bag_reads_the_same_and_a_lost_file_costs_only_its_steps(tmp_path):
    g = build(tmp_path / "bag", max_bytes=6000)
    g.close()
    files = sorted((tmp_path / "bag").glob("*.mcap"))
    assert len(files) >= 3
    log, warned = _read(tmp_path / "bag")
    assert warned == []
    for episode, rows in zip(log.episodes, g.expected, strict=True):
        _check_steps(episode.steps, rows)
    lost = files[len(files) // 2]
    lost.unlink()
    log, warned = _read(tmp_path / "bag")
    assert any(f"lists {lost.name}, which does not exist" in w for w in warned), warned
    kept = {int(s) for e in log.episodes for s in e.steps["stamp_ns"]}
    built = {r["stamp"] for rows in g.expected for r in rows}
    assert kept < built and kept  # some steps went with the file, the others are all there …
    rows = {r["stamp"]: r for rs in g.expected + [g.outside] for r in rs}
    for episode in log.episodes:  # … each observation as built; a field published into the lost file is NaN
        steps = episode.steps
        built_rows = [rows[int(s)] for s in steps["stamp_ns"]]
        np.testing.assert_array_equal(steps["observation"], np.reshape([r["obs"] for r in built_rows], (-1, 9)))
        for proposal, row in zip(steps["proposal"], built_rows):
            assert np.isnan(proposal).all() or np.array_equal(proposal, row["proposal"])


def test_damage_to_the_magic_or_the_first_bytes_does_not_lose_the_file(tmp_path, built):
    g, file = built
    raw = bytearray(file.read_bytes())
    raw[0:4] = b"\x00\x00\x00\x00"
    part = tmp_path / "magic.mcap"
    part.write_bytes(bytes(raw))
    log, warned = _read(part)
    assert any("magic.mcap" in w and "magic (bytes 0-7) is damaged" in w for w in warned), warned
    for episode, rows in zip(log.episodes, g.expected, strict=True):
        _check_steps(episode.steps, rows)


def test_missing_metadata_yaml_still_reads_every_episode(tmp_path, built):
    g, _ = built
    (tmp_path / "bag" / "metadata.yaml").unlink()
    log, warned = _read(tmp_path / "bag")
    assert any("no metadata.yaml" in w and str(tmp_path / "bag") in w for w in warned), warned
    for episode, rows in zip(log.episodes, g.expected, strict=True):
        _check_steps(episode.steps, rows)
    assert log.custom_data == {} and log.episodes[0].robot == "so101"  # from the episode events themselves


def test_a_file_of_another_format_is_skipped_with_a_warning_beside_a_readable_one(tmp_path, built, capsys):
    from stack.cli import main

    g, _ = built
    (tmp_path / "bag" / "bag_1.mcap").write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)  # a zip, say
    log, warned = _read(tmp_path / "bag")
    assert any("bag_1.mcap" in w and "not an MCAP file" in w for w in warned), warned
    assert [e.length for e in log.episodes] == [5, 6]
    other = tmp_path / "notes.txt"
    other.write_text("not a bag\n" * 20)
    assert main(["logs", "info", str(other), "--json"]) == 0  # a warning and an empty summary, not a traceback
    captured = capsys.readouterr()
    out = json.loads(captured.out.strip().splitlines()[-1])
    assert out["episodes"] == 0 and out["steps"] == 0 and "notes.txt" in captured.err
    assert any("not an MCAP file" in w for w in out["warnings"])


def test_random_damage_never_raises_and_never_loses_data_silently(tmp_path, built):
    g, file = built
    raw = file.read_bytes()
    whole = summary(read_log(tmp_path / "bag"))
    rng = np.random.default_rng(5)
    part = tmp_path / "fuzz.mcap"
    for trial in range(40):
        damaged = bytearray(raw)
        if trial % 2:
            damaged = damaged[:int(rng.integers(0, len(raw)))]
        else:
            for where in rng.integers(0, len(raw), size=int(rng.integers(1, 4))):
                damaged[where] ^= int(rng.integers(1, 256))
        part.write_bytes(bytes(damaged))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            s = summary(read_log(part))
        recovery = [w for w in caught if issubclass(w.category, BagRecoveryWarning)]
        if (s["steps"], s["steps_outside_episodes"]) != (whole["steps"], whole["steps_outside_episodes"]):
            assert recovery and all("fuzz.mcap" in str(w.message) for w in recovery), trial
        assert s["steps"] <= whole["steps"]


def test_a_bag_without_episode_events_is_one_episode_without_an_outcome(tmp_path):
    g = Graph(tmp_path / "bag", per_chunk=False)
    rows = [g.step(PERIOD * (k + 1), _obs(0, k), _proposal(0, k)) for k in range(3)]
    g.close()
    log, warned = _read(tmp_path / "bag")
    assert warned == [] and len(log.episodes) == 1
    (episode,) = log.episodes
    assert episode.index is None and episode.outcome is None and episode.policy_version == ""
    _check_steps(episode.steps, rows)
    assert summary(log)["outcomes"] == {"none": 1}


def test_lost_decision_parts_leave_the_other_steps_in_place(tmp_path):
    g = Graph(tmp_path / "bag", per_chunk=False)
    rows = [g.step(PERIOD * (k + 1), _obs(0, k), _proposal(0, k), reward=k) for k in range(4)]
    g.close()
    # Drop step 1's executed command from the bag (as a recorder that had not matched the topic yet would).
    from stack.ros.bag import read_bag

    msgs = read_bag(tmp_path / "bag", publish_time=True)
    dropped = msgs[T.EXECUTED].pop(1)
    import stack.data.logs as logs

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        steps, _, _, _ = logs._steps(msgs, T)
    assert any("recorded in part" in str(w.message) for w in caught)
    assert dropped[2].header.stamp.sec * 10**9 + dropped[2].header.stamp.nanosec == rows[1]["stamp"]
    assert np.isnan(steps["executed"][1]).all() and steps["authority"][1] == AUTHORITY["policy"]
    keep = [0, 2, 3]
    np.testing.assert_array_equal(steps["executed"][keep], [rows[k]["executed"] for k in keep])
    np.testing.assert_array_equal(steps["reward"], [0, 1, 2, 3])
    assert UNKNOWN_AUTHORITY not in steps["authority"]


def test_a_topic_recorded_with_another_type_is_ignored_with_a_warning(tmp_path):
    store = _store()
    bag = BagWriter(tmp_path / "bag", flush_period_s=0)
    bag.add_topic(T.OBSERVATION, "std_msgs/msg/String")  # someone else's publisher on an r2s name
    bag.add_topic(T.REWARD, "std_msgs/msg/String")
    for topic in (T.OBSERVATION, T.REWARD):
        bag.write(topic, bytes(store.serialize_cdr(store.types["std_msgs/msg/String"](data="x"),
                                                   "std_msgs/msg/String")), 1_000)
    bag.close()
    log, warned = _read(tmp_path / "bag")
    assert any(f"on {T.OBSERVATION} are not of the type" in w for w in warned), warned
    assert log.episodes == [] and summary(log)["topics"][T.OBSERVATION]["count"] == 1
