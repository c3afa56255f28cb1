"""Episodes the operator marks, without ROS: reading the marks, turning them into episode events with outcomes, the
keyboard keys, parking the arm at home between episodes, and what a bag of such episodes gives ``r2s logs info``
and ``r2s replay`` (an episode ended without an outcome is kept, counted, and excluded from outcome labels)."""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from robots.spec import JointSpec, RobotSpec
from stack.ros.episode_tracker import OPERATOR_EVENTS, OperatorEpisodes, operator_event, operator_marked
from stack.ros.keyboard_operator import KEYS, marks, publish_marks
from stack.ros.messages import BadMessage
from stack.ros.safety import SafetySupervisor


def test_marks_are_read_with_case_blanks_and_a_note_and_anything_else_is_refused():
    assert operator_event("start") == ("start", "")
    assert operator_event("  SUCCESS \n") == ("success", "")
    assert operator_event("failure:  dropped   the cube ") == ("failure", "dropped the cube")
    assert operator_event("end:" + "x" * 500)[1] == "x" * 200  # the note is capped
    for bad, match in (("", "not an episode mark"), ("restart", "'restart'"), ("succes", "'succes'"),
                       ("start end", "'start end'"), ("\x00\xff" * 1000, "not an episode mark"),
                       (None, "NoneType"), (b"start", "bytes"), (7, "int")):
        with pytest.raises(BadMessage, match=match):
            operator_event(bad, "/r2s/episode_event")


def test_marks_become_episode_events_with_outcome_or_none():
    eps = OperatorEpisodes()
    refused = eps.mark("success", 0.5)
    assert not refused.accepted and refused.events == [] and "no episode is open" in refused.reply
    m = eps.mark("start", 1.0, by="/r2s/episode/start")
    assert m.accepted and m.events == [("start", {"episode": "0", "source": "operator"})]
    m = eps.mark("success", 3.5, note="clean grasp", by="key")
    assert m.reply == "episode 0 ended with outcome success"
    assert m.events == [("end", {"episode": "0", "source": "operator", "duration_s": "2.500",
                                 "reason": "operator success (key)", "outcome": "success", "note": "clean grasp"})]
    assert not eps.mark("failure", 4.0).accepted  # ended already: an outcome comes before, instead of, end
    eps.mark("start", 5.0)
    m = eps.mark("end", 6.0)
    (event, values), = m.events
    assert event == "end" and "outcome" not in values and "excluded from outcome labels" in m.reply
    eps.mark("start", 7.0)
    m = eps.mark("start", 8.0)  # a start with an episode open: that one ends first, without an outcome
    assert [e for e, _ in m.events] == ["end", "start"]
    assert "outcome" not in m.events[0][1] and m.events[0][1]["episode"] == "2" and m.events[1][1]["episode"] == "3"
    eps.mark("failure", 9.0)
    assert eps.stop(10.0) == []
    eps.mark("start", 11.0)
    (event, values), = eps.stop(12.0)
    assert event == "end" and values["reason"] == "stopped" and "outcome" not in values
    assert eps.counts == {"episodes": 5, "success": 1, "failure": 1, "without_outcome": 3, "refused": 2}
    with pytest.raises(ValueError, match="expected one of"):
        eps.mark("pause", 13.0)


def test_keyboard_keys_and_lines_publish_marks_until_quit():
    assert sorted(KEYS.values()) == sorted(OPERATOR_EVENTS)
    err = io.StringIO()
    typed = io.StringIO("s\nY\n\ns\nfailure: slipped\nx\ne\nq\ns\n")
    sent = []
    assert publish_marks(typed, sent.append, err=err) == 5
    assert sent == ["start", "success", "start", "failure: slipped", "end"]  # nothing after q
    assert "unknown key 'x'" in err.getvalue()
    assert list(marks(io.StringIO("sxyq"), keys_at_once=True, err=io.StringIO())) == ["start", "success"]


# ---- parking at home between episodes -----------------------------------------------------------------------------
ARM = RobotSpec(name="toy_arm_acc", joints=(JointSpec("a", -3.0, 3.0, 2.0, 1.0, 10.0),), control_mode="position",
                control_rate_hz=10.0, model_source="r2s:toy.xml")  # 0.2 rad and 1 rad/s of speed change per period


def _run(sup, t0, n, target):
    """n periods of fresh policy commands to ``target``, the arm following the command; (statuses, commands)."""
    statuses, cmds = [], []
    for k in range(n):
        t = t0 + 0.1 * k
        if cmds:
            sup.measured([cmds[-1]], t=t)
        elif sup._last is not None:
            sup.measured(sup._last, t=t)
        sup.command("policy", [target], t=t, stamp_ns=int(t * 1e9))
        d = sup.decide(t)
        statuses.append(d.status)
        cmds.append(d.command[0])
    return statuses, cmds


def test_between_episodes_the_arm_homes_on_the_limited_path_and_holds_there_until_the_next_start():
    sup = SafetySupervisor(ARM, timeout_s=10.0)
    sup.measured([1.5], t=0.0)
    statuses, cmds = _run(sup, 0.0, 3, 1.5)
    assert statuses == ["ok"] * 3
    sup.park([0.0])  # the episode ended: home, whatever the policy keeps sending (it wants 1.5)
    statuses, cmds = _run(sup, 0.3, 30, 1.5)
    homing = statuses.count("homing")
    assert homing >= 4 and statuses[:homing] == ["homing"] * homing  # 1.5 rad at 2 rad/s: several periods
    assert set(statuses[homing:]) == {"hold: between episodes"}
    path = np.array([1.5, *cmds])
    assert np.abs(np.diff(path)).max() <= 0.2 + 1e-9  # velocity limit
    assert np.abs(np.diff(np.diff(path))).max() <= 0.1 + 1e-9  # acceleration limit: 10 rad/s² · 0.1 s · 0.1 s
    assert cmds[-1] == pytest.approx(0.0, abs=1e-9)
    sup.unpark()  # the next episode starts at home: the policy commands again
    statuses, cmds = _run(sup, 3.3, 2, 0.1)
    assert statuses == ["ok", "ok"] and cmds[-1] == pytest.approx(0.1)


def test_a_start_during_the_homing_lets_it_arrive_first_and_an_estop_while_parked_stops_it_where_it_is():
    sup = SafetySupervisor(ARM, timeout_s=10.0)
    sup.measured([1.0], t=0.0)
    _run(sup, 0.0, 1, 1.0)
    sup.park([0.0])
    statuses, _ = _run(sup, 0.1, 2, 1.0)
    sup.unpark()
    statuses, cmds = _run(sup, 0.3, 20, 1.0)
    first_ok = statuses.index("ok")
    assert first_ok >= 2 and set(statuses[:first_ok]) == {"homing"}
    assert cmds[first_ok - 1] == pytest.approx(0.0, abs=1e-9)
    sup.park([0.0])
    _run(sup, 2.3, 1, 1.0)
    sup.estop()
    statuses, _ = _run(sup, 2.4, 3, 1.0)
    assert set(statuses) == {"hold: e-stop"}
    sup.reset_estop()
    statuses, cmds = _run(sup, 2.7, 3, 1.0)
    assert set(statuses) == {"hold: between episodes"}  # still parked; nothing moves it home until the next start
    assert np.ptp(cmds) < 0.25


def test_an_operator_start_is_no_reset_so_a_jump_after_it_stays_a_fault():
    # The safety node resyncs (accepts a joint_states jump, restarts the limiter from it) only at a start that is
    # not operator_marked: a sim reset moves the robot, an operator's start on a real robot does not.
    (_, start), = OperatorEpisodes().mark("start", 0.0).events
    assert operator_marked(start) and not operator_marked({"episode": "0", "robot": "so101", "seed": "0"})
    for resync, refused in ((False, True), (True, False)):
        sup = SafetySupervisor(ARM, timeout_s=10.0)
        sup.measured([0.0], t=0.0)
        _run(sup, 0.0, 3, 0.0)
        if resync:
            sup.resync(0.3)
        assert (sup.measured([2.5], t=0.35) is not None) == refused  # 2.5 rad in 50 ms: a glitch on a real robot
        if refused:
            assert sup.decide(0.35).command[0] == pytest.approx(0.0)  # held where it was, not sent to 2.5


def test_an_episode_ended_during_an_estop_does_not_home_after_its_reset():
    sup = SafetySupervisor(ARM, timeout_s=10.0)
    sup.measured([1.0], t=0.0)
    _run(sup, 0.0, 2, 1.0)
    sup.estop()
    sup.park([0.0])  # the operator marks the failure after pressing the e-stop
    statuses, _ = _run(sup, 0.2, 2, 1.0)
    assert set(statuses) == {"hold: e-stop"}
    sup.reset_estop()
    statuses, cmds = _run(sup, 0.4, 5, 1.0)
    assert set(statuses) == {"hold: between episodes"} and cmds == pytest.approx([1.0] * 5)  # no move home
    sup.unpark()
    assert _run(sup, 0.9, 1, 1.0)[0] == ["ok"]


def test_before_the_first_start_the_arm_holds_where_it_is():
    sup = SafetySupervisor(ARM, timeout_s=10.0)
    sup.measured([0.7], t=0.0)
    sup.park()  # the safety node at activation, with home_between_episodes
    statuses, cmds = _run(sup, 0.0, 5, 2.0)
    assert set(statuses) == {"hold: between episodes"} and cmds == pytest.approx([0.7] * 5)
    sup.unpark()
    statuses, _ = _run(sup, 0.5, 1, 2.0)
    assert statuses == ["ok"]


# ---- the bag: logs info and replay --------------------------------------------------------------------------------
def _operator_bag(path, version):
    """Four operator-marked episodes of 6 steps: success, end (no outcome), failure, and one cut by a restart."""
    from tests.stack.test_log_replay import FakeGraph

    rng = np.random.default_rng(3)
    g = FakeGraph(path)
    eps = OperatorEpisodes()
    for marks_ in (("start", "success"), ("start", "end"), ("start", "failure"), ("start",), ("start", "success")):
        for k, mark in enumerate(marks_):
            if k == 1:
                for _ in range(6):
                    q = rng.uniform(-0.5, 0.5, 6)
                    obs = np.concatenate([q, rng.normal(0, 0.1, 6), rng.uniform(0, 0.2, 9)])
                    g.step(obs, q, q, False)
            for event, values in eps.mark(mark, g.t * 1e-9).events:
                g.episode(event, int(values.pop("episode")), version, **values)
        if len(marks_) == 1:  # steps, then the next start cuts it
            for _ in range(6):
                q = rng.uniform(-0.5, 0.5, 6)
                g.step(np.concatenate([q, np.zeros(15)]), q, q, False)
    g.close()
    return path


def test_logs_info_counts_the_episodes_without_an_outcome_in_text_and_json(tmp_path, capsys):
    pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (the `ros` extra)")
    pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")
    from stack.cli import main
    from stack.data.logs import read_log

    bag = _operator_bag(tmp_path / "bag", "v1")
    log = read_log(bag)
    assert [e.outcome for e in log.episodes] == ["success", None, "failure", None, "success"]
    assert [e.length for e in log.episodes] == [6] * 5  # every episode kept with its steps
    assert all(e.values["source"] == "operator" for e in log.episodes) and log.warnings == []
    assert main(["logs", "info", str(bag), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["episodes"] == 5 and out["without_outcome"] == 2
    assert out["outcomes"] == {"success": 2, "failure": 1, "none": 2}
    assert main(["logs", "info", str(bag)]) == 0
    assert "(2 without an outcome: excluded from outcome labels)" in capsys.readouterr().out


def test_replay_leaves_the_episodes_without_an_outcome_out_of_the_training_set(tmp_path):
    pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")
    from stack.data import EpisodeDataset
    from stack.data.logs import read_log
    from stack.log_replay import logs_to_dataset

    log = read_log(_operator_bag(tmp_path / "bag", "v1"))
    stats = logs_to_dataset([log], tmp_path / "ds", "push", {}, "v1", stale_version=-100)
    assert stats["without_outcome"] == 2 and stats["episodes"] == 3 and stats["steps"] == 18
    ds = EpisodeDataset(tmp_path / "ds")
    assert [e["outcome"] for e in ds.episodes] == ["success", "failure", "success"]
    assert not math.isnan(ds.episodes[0]["return"])


def test_deploy_refuses_operator_marks_beside_a_simulated_task_that_marks_its_own(tmp_path):
    from stack.ros.deploy import DeployError, deploy

    policy = tmp_path / "p.onnx"
    policy.write_bytes(b"")  # never loaded: refused before any node starts
    with pytest.raises(DeployError, match="marks its own episodes"):
        deploy(str(policy), robot="so101", sim=True, task="push", operator_episodes=True, status=False)


def test_a_reactivated_tracker_numbers_on_and_never_repeats_an_episode():
    first = OperatorEpisodes()
    for event in ("start", "success", "start", "end"):
        first.mark(event, 1.0)
    again = first.continued()
    again.mark("start", 2.0)
    assert again.episode == 2 and again.in_episode and again.counts["episodes"] == 1  # its own count
    assert OperatorEpisodes().continued(first_episode=7).continued(first_episode=3).episode == 6
