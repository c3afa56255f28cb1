"""``r2s logs convert``: a bag → a LeRobotDataset v3.0 folder → a bag, and ``read_log`` of the last equal to the
first, field by field, step by step, episode by episode (an episode with a partial intervention, one without an
outcome, a missed tick, jitter, missing rewards, a late safety decision, a hold); the dataset is LeRobot's layout on
the fps grid; malformed datasets are refused naming the file, the field and what was expected; the CLI both ways."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (the `ros` extra)")
pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")

from stack.data import DatasetError, EpisodeDataset, EpisodeWriter  # noqa: E402
from stack.data import lerobot_v3 as v3  # noqa: E402
from stack.data.convert import (  # noqa: E402
    IS_REPEAT,
    STEP_INDEX,
    dataset_to_bag,
    dataset_to_log,
    grid_slots,
    log_to_dataset,
)
from stack.data.logs import STEP_FIELDS, read_log, summary  # noqa: E402
from tests.stack.test_logs import PERIOD, PRE_STEP, VERSION, _obs, _proposal, build  # noqa: E402

EPISODE_FIELDS = ("index", "outcome", "success_step", "robot", "task", "policy_version", "values",
                  "unstepped_reward")
JITTER = (0, 9_000_000, -12_000_000, None, 4_000_000, -7_000_000, 11_000_000)
"""Episode 2's robot-clock offsets from the 20 Hz grid (< half a period); None: the policy missed that tick."""


def make_bag(path):
    """``test_logs.build``'s two episodes (a late decision, two rewards in a step, a human on j0, j1 for two steps, a
    reward before the first step) and a third cut short (no end event: no outcome): jittered stamps, one missed tick,
    a human on two of six joints, a hold, steps without a reward."""
    g = build(path)
    stamp = 3_000 * PERIOD
    g.episode("start", stamp, episode=2, seed=42)
    for k, jitter in enumerate(JITTER):
        if jitter is None:
            continue
        human = [np.full(6, 700.0 + k)] if k in (1, 2) else None
        g.step(stamp + (k + 1) * PERIOD + jitter, _obs(2, k), _proposal(2, k), human=human, hold=k == 5,
               reward=None if k in (0, 4) else 20.0 + k, success=k == 6)
    g.close()
    return g


def _read(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        return read_log(path), [str(w.message) for w in caught]


def assert_same_episodes(got, want):
    """Every field of every step and of every episode, and the steps outside the episodes."""
    assert len(got.episodes) == len(want.episodes)
    assert (got.obs_names, got.action_names) == (want.obs_names, want.action_names)
    for i, (a, b) in enumerate(zip(got.episodes, want.episodes)):
        for name in EPISODE_FIELDS:
            assert getattr(a, name) == getattr(b, name), (i, name, getattr(a, name), getattr(b, name))
        _same_steps(a.steps, b.steps, f"episode {i}")
    _same_steps(got.outside, want.outside, "outside")


def _same_steps(a, b, what):
    assert set(a) == set(b) == set(STEP_FIELDS)
    for name in b:
        assert a[name].dtype == b[name].dtype, (what, name)
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{what}: {name}")


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    path = tmp_path_factory.mktemp("convert") / "bag"
    make_bag(path)
    log, warned = _read(path)
    assert any("episode 2 has no end event" in w for w in warned), warned
    return log


def test_the_original_bag_is_what_the_round_trip_must_keep(original):
    assert len(original.outside["time_ns"]) == 2  # the terminal observations between the episodes
    first, second, third = original.episodes
    assert [e.length for e in original.episodes] == [5, 6, 6]
    assert (first.outcome, second.outcome, third.outcome) == ("success", "timeout", None)
    assert second.unstepped_reward == PRE_STEP and third.unstepped_reward == 0.0
    human = third.steps["authority"] == 1
    assert human.tolist() == [False, True, True, False, False, False]
    assert third.steps["intervention_mask"][human].sum(1).tolist() == [2, 2]  # two of six joints
    assert np.isnan(third.steps["reward"]).sum() == 2 and third.steps["safety_status"][4] == "hold: e-stop"


@pytest.mark.parametrize("fps", [None, 10.0, 40.0])
def test_bag_to_dataset_to_bag_keeps_every_field_of_every_step(tmp_path, original, fps):
    # fps 20 (the control rate, measured), 10 (two steps per slot: the grid stretches) and 40 (a repeat between
    # every two steps): the steps come back exactly whatever the grid.
    result = log_to_dataset(original, tmp_path / "ds", fps=fps)
    assert (result["episodes"], result["steps"]) == (3, 17)
    assert_same_episodes(dataset_to_log(tmp_path / "ds"), original)
    dataset_to_bag(tmp_path / "ds", tmp_path / "bag")
    back, warned = _read(tmp_path / "bag")
    assert warned == ["read_log: episode 2 has no end event (recording cut short?): its steps to the end of the bag "
                      "are kept, without an outcome"]
    assert_same_episodes(back, original)
    assert back.custom_data == original.custom_data
    for key in ("episodes", "steps", "steps_outside_episodes", "interventions", "intervened_episodes",
                "human_share", "human_dim_share", "hold_share", "outcomes", "policy_versions", "robots", "tasks",
                "per_episode"):
        assert summary(back)[key] == summary(original)[key], key


def test_the_dataset_is_lerobot_v3_on_the_fps_grid(tmp_path, original):
    result = log_to_dataset(original, tmp_path / "ds")
    assert result["fps"] == 20.0 and result["repeated_frames"] == 1  # episode 2's missed tick
    root = tmp_path / "ds"
    for name in ("meta/info.json", "meta/stats.json", "meta/tasks.parquet", "meta/episodes/chunk-000/file-000.parquet",
                 "data/chunk-000/file-000.parquet"):
        assert (root / name).is_file(), name
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 20 and info["total_frames"] == 18
    assert info["robot_type"] == "so101" and info["r2s"]["steps_outside_episodes"] == 2
    stats = json.loads((root / "meta/stats.json").read_text())
    assert all(np.isfinite(v).all() for s in stats.values() for v in s.values())  # NaN rewards left out
    frames = pq.read_table(root / "data/chunk-000/file-000.parquet").to_pydict()
    for name in ("index", "episode_index", "frame_index", "timestamp", "task_index", "observation.state", "action",
                 "complementary_info.proposal", "complementary_info.is_intervention",
                 "complementary_info.intervention_mask", "complementary_info.authority", "next.reward",
                 "robot_time_ns"):
        assert name in frames, name
    assert frames["index"] == list(range(18))
    np.testing.assert_allclose(frames["timestamp"], np.asarray(frames["frame_index"]) / 20.0, atol=1e-6)
    third = [i for i, e in enumerate(frames["episode_index"]) if e == 2]
    repeat = [frames[IS_REPEAT][i] for i in third]
    assert repeat == [False, False, False, True, False, False, False]  # the missed tick, held
    assert [frames[STEP_INDEX][i] for i in third] == [0, 1, 2, 2, 3, 4, 5]
    stamps = original.episodes[2].steps["stamp_ns"]
    assert [frames["robot_time_ns"][i] for i in third] == [*stamps[:3], stamps[2], *stamps[3:]]
    held = third[3]
    assert frames["next.reward"][held] == 0.0 and frames["observation.state"][held] == frames["observation.state"][
        held - 1]
    episodes = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet").to_pydict()
    assert episodes["outcome"] == ["success", "timeout", None] and episodes["success_step"] == [5, None, None]
    assert episodes["policy_version"] == [VERSION] * 3 and episodes["length"] == [5, 6, 7]
    assert episodes["unstepped_reward"] == [0.0, PRE_STEP, 0.0]
    ds = EpisodeDataset(root)  # the project's LeRobot v3.0 reader validates it as a (generic) LeRobot dataset
    assert not ds.is_r2s and len(ds) == 18 and ds.num_episodes == 3
    np.testing.assert_array_equal(ds.episode(2, ["observation.state"])["observation.state"][[0, 1, 2, 4, 5, 6]],
                                  original.episodes[2].steps["observation"])


def test_an_episode_without_an_outcome_between_two_others_round_trips(tmp_path):
    # Its end event was lost: it ends where the next starts, and the reward the sim gave before the next episode's
    # first step is the next episode's unstepped reward, not also this one's.
    from tests.stack.test_logs import Graph

    g = Graph(tmp_path / "bag")
    g.policy_info()
    stamp = 1_000 * PERIOD
    for e, n in enumerate((3, 4, 2)):
        g.episode("start", stamp, episode=e, seed=e)
        if e:
            g.reward(PRE_STEP * e)
        rows = [g.step(stamp + (k + 1) * PERIOD, _obs(e, k), _proposal(e, k), reward=k + 0.5,
                       human=[np.full(6, 5.0 + k)] if (e, k) == (1, 2) else None) for k in range(n)]
        stamp += (n + 1) * PERIOD
        if e != 1:
            g.episode("end", stamp, episode=e, outcome="failure", length=n, success_step="",
                      **{"return": sum(r["reward"] for r in rows)})
        stamp += 2 * PERIOD
    g.close()
    log, warned = _read(tmp_path / "bag")
    assert any("episode 1 has no end event" in w for w in warned), warned
    assert [e.outcome for e in log.episodes] == ["failure", None, "failure"]
    assert [e.unstepped_reward for e in log.episodes] == [0.0, PRE_STEP, 2 * PRE_STEP]
    log_to_dataset(log, tmp_path / "ds")
    dataset_to_bag(tmp_path / "ds", tmp_path / "back")
    assert_same_episodes(_read(tmp_path / "back")[0], log)


def test_grid_slots_take_the_nearest_slot_and_never_merge_steps():
    period = 50_000_000
    assert grid_slots(np.array([0, 1, 2, 3]) * period + [0, 20_000_000, -20_000_000, 0], 20.0).tolist() == [0, 1, 2, 3]
    assert grid_slots(np.array([0, 1, 3, 4]) * period, 20.0).tolist() == [0, 1, 3, 4]  # a missed tick: a gap
    # two steps within one period, a clock that goes back: the next free slot, the grid stretches
    assert grid_slots(np.array([0, period, period + 10, period // 2, 3 * period]), 20.0).tolist() == [0, 1, 2, 3, 4]
    assert grid_slots(np.array([7, 7 + 74_000_000]), 20.0).tolist() == [0, 1]  # 1.48 periods: the nearest


# ---- malformed datasets ---------------------------------------------------------------------------------------------
def _edit_info(root, edit):
    path = root / "meta/info.json"
    info = json.loads(path.read_text())
    edit(info)
    path.write_text(json.dumps(info))


def _edit_column(path, name, values):
    table = pq.read_table(path)
    i = table.column_names.index(name)
    table = table.set_column(i, table.schema.field(name), pa.array(values, table.schema.field(name).type))
    pq.write_table(table, path)


def _with_info(key, value):
    def edit(info):
        if "." in key:
            outer, inner = key.split(".")
            info[outer][inner] = value
        else:
            info[key] = value
    return edit


@pytest.mark.parametrize("damage, expected", [
    (lambda r: _edit_info(r, _with_info("codebase_version", "v2.1")), ["meta/info.json", "codebase_version",
                                                                       "'v2.1'", "expected 'v3.0'"]),
    (lambda r: _edit_info(r, _with_info("r2s.format", "r2s-episodes")), ["r2s.format", "expected 'r2s-log'"]),
    (lambda r: _edit_info(r, lambda i: i["features"]["action"].update(dtype="float32")),
     ["features['action']", "expected dtype 'float64'"]),
    (lambda r: _edit_column(r / "data/chunk-000/file-000.parquet", STEP_INDEX, [0] * 18),
     ["data/chunk-000/file-000.parquet", "(episode 0), frame 1", STEP_INDEX, "expected it counts"]),
    (lambda r: _edit_column(r / "data/chunk-000/file-000.parquet", "complementary_info.authority", [7] * 18),
     ["frame 0", "complementary_info.authority", "is 7"]),
    (lambda r: _edit_column(r / "meta/episodes/chunk-000/file-000.parquet", "outcome", ["won", None, None]),
     ["meta/episodes/chunk-000/file-000.parquet", "(episode 0)", "outcome is 'won'", "expected one of"]),
    (lambda r: _edit_column(r / "meta/episodes/chunk-000/file-000.parquet", "event_values", ["{", "{}", "{}"]),
     ["(episode 0)", "event_values is not JSON"]),
    (lambda r: _edit_column(r / "meta/episodes/chunk-000/file-000.parquet", "steps", [5, 6, 9]),
     ["(episode 2)", "steps is 9", "6 recorded steps"]),
    (lambda r: (r / "data/chunk-000/file-000.parquet").unlink(), ["data/chunk-000/file-000.parquet", "missing"]),
])
def test_a_malformed_dataset_is_refused_naming_file_field_and_expected_value(tmp_path, original, damage, expected):
    root = tmp_path / "ds"
    log_to_dataset(original, root)
    damage(root)
    with pytest.raises(DatasetError) as e:
        dataset_to_bag(root, tmp_path / "bag")
    for text in expected:
        assert text in str(e.value), (text, str(e.value))
    assert not (tmp_path / "bag").exists()  # validated before anything is written


def test_event_values_that_contradict_the_episode_are_refused(tmp_path, original):
    root = tmp_path / "ds"
    log_to_dataset(original, root)
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    values = pq.read_table(path).column("event_values").to_pylist()
    values[1] = json.dumps({**json.loads(values[1]), "outcome": "success"})
    _edit_column(path, "event_values", values)
    with pytest.raises(DatasetError, match=r"episode 1: event value 'outcome' gives 'success'; the episode's outcome "
                                           r"is 'timeout'"):
        dataset_to_bag(root, tmp_path / "bag")


# ---- the CLI --------------------------------------------------------------------------------------------------------
def test_cli_converts_both_ways_and_logs_info_agrees(tmp_path, capsys):
    from stack.cli import main

    make_bag(tmp_path / "bag")
    assert main(["logs", "convert", str(tmp_path / "bag"), "--to", "lerobot", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr()
    result = json.loads(out.out.strip().splitlines()[-1])
    assert (result["episodes"], result["frames"], result["steps"], result["fps"]) == (3, 18, 17, 20.0)
    assert "episode 2 has no end event" in out.err
    assert main(["logs", "convert", str(tmp_path / "ds"), "--to", "mcap", str(tmp_path / "back")]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 17
    infos = []
    for bag in ("bag", "back"):
        assert main(["logs", "info", str(tmp_path / bag), "--json"]) == 0
        infos.append(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))
    for key in ("episodes", "steps", "interventions", "human_share"):
        assert infos[0][key] == infos[1][key], key
    from rosbags.rosbag2 import Reader  # another rosbag2 reader: metadata.yaml and the MCAP files agree

    with Reader(tmp_path / "back") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        assert reader.message_count == sum(counts.values()) and counts["/r2s/policy/observation"] == 19
    assert (infos[1]["episodes"], infos[1]["steps"], infos[1]["interventions"]) == (3, 17, 2)
    assert infos[1]["human_share"] == pytest.approx(4 / 17)
    # refusals: exit 2 and the reason, never a traceback
    assert main(["logs", "convert", str(tmp_path / "missing"), "--to", "lerobot", str(tmp_path / "x")]) == 2
    assert "no such bag" in capsys.readouterr().err
    assert main(["logs", "convert", str(tmp_path / "bag"), "--to", "lerobot", str(tmp_path / "ds")]) == 2
    assert "not an empty folder" in capsys.readouterr().err
    demos = tmp_path / "demos"
    with EpisodeWriter(demos, robot="so101", task="reach", fps=20, obs_dim=2, act_dim=1) as w:
        w.add_step([0.0, 1.0], [0.5], 1.0)
        w.end_episode()
    assert main(["logs", "convert", str(demos), "--to", "mcap", str(tmp_path / "y")]) == 2
    assert "r2s.format is 'r2s-episodes'; expected 'r2s-log'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["logs", "convert", str(tmp_path / "bag"), "--to", "csv", str(tmp_path / "z")])


def test_fps_comes_from_the_policys_control_rate(tmp_path, original):
    from stack.ros import topics as T

    g = build(tmp_path / "bag")  # its policy info has no control_rate_hz: measured from the robot clock
    t = g._types()
    values = [t["diagnostic_msgs/msg/KeyValue"](key="control_rate_hz", value="25")]
    status = t["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name="policy", message=VERSION, hardware_id="so101",
                                                       values=values)
    g.send(T.POLICY_INFO, t["diagnostic_msgs/msg/DiagnosticArray"](header=g._header(g.t), status=[status]))
    g.close()
    result = log_to_dataset(read_log(tmp_path / "bag"), tmp_path / "a")
    assert (result["fps"], result["fps_source"]) == (25.0, "control_rate_hz of /r2s/policy/info")
    assert log_to_dataset(original, tmp_path / "b")["fps_source"] == "median robot-clock period between steps"
    assert log_to_dataset(original, tmp_path / "c", fps=40.0)["fps_source"] == "given"
    # the bag written back carries the dataset's rate: converting it again lands on the same grid
    dataset_to_bag(tmp_path / "c", tmp_path / "back")
    again = log_to_dataset(_read(tmp_path / "back")[0], tmp_path / "d")
    assert (again["fps"], again["fps_source"], again["frames"]) == (40.0, "control_rate_hz of /r2s/policy/info",
                                                                    json.loads((tmp_path / "c" / v3.INFO_PATH)
                                                                               .read_text())["total_frames"])
