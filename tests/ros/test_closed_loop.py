"""The whole graph through ``r2s deploy``: policy → safety → sim robot → joint_states → policy, in separate processes
over DDS, recorded into a rosbag2 MCAP bag that the ``mcap`` reader decodes as ROS 2 messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from tests.ros.conftest import GOAL_TOPIC, so101_policy

pytest.importorskip("rclpy", reason="rclpy is not importable: install the ROS 2 wheels (the `ros` extra)")

from sensor_msgs.msg import JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray  # noqa: E402

from robots.so101 import SO101  # noqa: E402
from stack.ros import topics  # noqa: E402
from stack.ros.deploy import cmd_deploy, deploy  # noqa: E402

GOAL = np.array([0.4, -0.5, 0.6, 0.5, 0.3, 0.6])


def read_bag(bag: Path) -> dict[str, list]:
    """Every message of every MCAP file of a bag, decoded with mcap_ros2: topic -> [(log_time, message)]."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    out = defaultdict(list)
    files = sorted(bag.glob("*.mcap"))
    assert files, f"no MCAP file in {bag}"
    for path in files:
        with open(path, "rb") as f:
            reader = make_reader(f, decoder_factories=[DecoderFactory()])
            assert reader.get_header().profile == "ros2"
            for schema, channel, message, decoded in reader.iter_decoded_messages():
                assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
                out[channel.topic].append((message.log_time, decoded))
    return out


def test_closed_loop_reaches_the_goal_and_is_recorded(ros, p_controller, tmp_path):
    goal_pub = ros.publisher(Float64MultiArray, GOAL_TOPIC)
    timer = ros.node.create_timer(0.01, lambda: goal_pub.publish(Float64MultiArray(data=GOAL.tolist())))
    js = ros.listen(JointState, SO101.joint_states_topic)
    bag = tmp_path / "bag"
    try:
        summary = deploy(p_controller, "so101", sim=True, task="", duration=6.0, bag_dir=str(bag),
                         log_dir=str(tmp_path / "logs"), status=False)
    finally:
        ros.node.destroy_timer(timer)
    assert summary["exit_codes"] == {"policy": 0, "safety": 0, "sim": 0, "recorder": 0}, summary
    q = np.asarray(js.last().position)
    # Position servos under gravity leave a small steady-state error; the start (home) is ~0.4 rad away or more.
    np.testing.assert_allclose(q, GOAL, atol=0.08)
    assert summary["peak_rss_mb"]["policy"] < 150, summary["peak_rss_mb"]

    assert (bag / "metadata.yaml").is_file()
    log = read_bag(bag)
    for topic in (topics.OBSERVATION, topics.PROPOSAL, topics.EXECUTED, topics.AUTHORITY, topics.INTERVENTION_MASK,
                  topics.SAFETY_STATUS, topics.POLICY_INFO, SO101.joint_states_topic, SO101.command_topic):
        assert log[topic], f"nothing recorded on {topic}"
    n_exec = len(log[topics.EXECUTED])
    # One record per executed command on each per-step topic; the first one or two may precede DDS matching of a
    # topic (each writer–reader pair is discovered on its own), nothing after.
    for topic in (topics.AUTHORITY, topics.INTERVENTION_MASK, topics.SAFETY_STATUS, SO101.command_topic):
        assert abs(len(log[topic]) - n_exec) <= 2, (topic, len(log[topic]), n_exec)
    assert n_exec >= 60, "about 20 Hz for ~5 s"
    info = {kv.key: kv.value for kv in log[topics.POLICY_INFO][0][1].status[0].values}
    assert info["policy_version"] == "p-controller-v1" and info["robot"] == "so101"
    # A step's proposal, observation and executed command share the joint_states stamp they answer; the executed
    # commands that answer none are the safety node's holds (each with status "hold: …").
    stamps = lambda t: [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in log[t]]  # noqa: E731
    proposals = set(stamps(topics.PROPOSAL))
    answered = [s for s in stamps(topics.EXECUTED) if s in proposals]
    assert len(answered) >= 50
    oks = sum(m.data == "ok" for _, m in log[topics.SAFETY_STATUS])
    assert abs(oks - len(answered)) <= 2, (oks, len(answered))
    assert proposals <= set(stamps(topics.OBSERVATION))
    _, obs = log[topics.OBSERVATION][-1]
    assert list(obs.name[:2]) == ["joint_pos[0]", "joint_pos[1]"] and list(obs.name[-1:]) == ["goal[5]"]


def test_deploy_cli_runs_task_episodes_and_records_them(ros, tmp_path, capsys):
    from sim.tasks.reach import ReachTask

    w = np.zeros((1, 18, 6), np.float32)
    w[0, :6] = np.eye(6)  # hold: command the measured joint positions
    policy = so101_policy(tmp_path / "hold.onnx", w, ReachTask.obs_layout, content_hash="hold-v1")
    bag = tmp_path / "bag"
    rc = cmd_deploy(["--policy", policy, "--sim", "--episodes", "3", "--bag", str(bag),
                     "--log-dir", str(tmp_path / "logs"),  # no --task: matched to the policy's obs layout
                     "--set", 'sim.task_kwargs={"max_episode_steps": 10}', "--set", "sim.reset_delay_s=0.1"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["task"] == "reach" and out["episodes"] == 3, out
    log = read_bag(bag)
    events = [(m.status[0].message, {kv.key: kv.value for kv in m.status[0].values}) for _, m in log[topics.EPISODE]]
    ends = [v for e, v in events if e == "end"]
    starts = [v for e, v in events if e == "start"]
    assert len(ends) == 3 and len(starts) == 3, events
    for i, (s, e) in enumerate(zip(starts, ends)):
        assert s["episode"] == e["episode"] == str(i) and s["seed"] == str(i)
        assert e["policy_version"] == s["policy_version"] == "hold-v1"
        assert e["robot"] == "so101" and e["task"] == "reach" and e["length"] == "10"
        assert e["outcome"] in ("timeout", "success")
    assert len(log[topics.REWARD]) >= 30 and len(log[topics.SUCCESS]) >= 30
    assert log["/r2s/goal"] and log["/r2s/ee_pos"]  # the task observations the policy reads
    # stack.data.logs joins the recorded topics into the steps the sim counted, each with its reward.
    from stack.data.logs import read_log

    steps_log = read_log(bag)
    assert [e.index for e in steps_log.episodes] == [0, 1, 2] and steps_log.warnings == []
    for episode, end in zip(steps_log.episodes, ends):
        assert episode.outcome == end["outcome"] and episode.policy_version == "hold-v1"
        # The policy is not phase-locked to the sim: its first step of an episode may come after the sim's first
        # control step (whose reward is then the episode's unstepped_reward), and a missed tick merges two.
        assert int(end["length"]) - 3 <= episode.length <= int(end["length"])
        assert np.sum(episode.steps["reward"]) + episode.unstepped_reward == pytest.approx(float(end["return"]))
        assert np.array_equal(episode.steps["executed_stamp_ns"], episode.steps["stamp_ns"])  # policy authority
        assert (episode.steps["authority"] == 0).all() and not episode.steps["intervention_mask"].any()


# ---- the trained-policy comparison ----------------------------------------------------------------------------------
def _r2s(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "stack", *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"r2s {' '.join(args)}:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"


@pytest.fixture(scope="module")
def trained_reach_policy(tmp_path_factory) -> str:
    """An exported, trained reach policy: ``$R2S_REACH_POLICY``, else one trained here through the CLI (~40 s):
    300 DART demonstrations of the IK baseline (action noise 0.02), Gaussian BC, export. Measured: ~85% success."""
    path = os.environ.get("R2S_REACH_POLICY")
    if path:
        return path
    root = tmp_path_factory.mktemp("reach_policy")
    _r2s("demos", "--task", "reach", "--expert", "baseline", "--episodes", "300", "--noise-std", "0.02",
         "--out", str(root / "demos"), "--no-progress")
    _r2s("train", "--algo", "bc", "--dataset", str(root / "demos"), "--policy", "gaussian", "--bc.horizon", "1",
         "--bc.act-steps", "1", "--bc.lr", "1e-2", "--bc.grad-steps", "3000", "--eval-episodes", "0",
         "--runs-dir", str(root), "--name", "bc", "--no-progress", "--no-tensorboard")
    _r2s("export", str(root / "bc"))
    return str(root / "bc" / "policy.onnx")


EPISODES = 8
SEED = 1000


def direct_success_rate(policy_path: str, episodes: int, seed: int) -> float:
    """The exported policy in the task itself (no ROS): success of episode i reset with seed + i."""
    from sim.tasks.reach import ReachTask
    from stack.runtime import OnnxPolicy

    wins = 0
    for i in range(episodes):
        task = ReachTask()
        policy = OnnxPolicy.load(policy_path, SO101, ReachTask.obs_layout)
        obs, _ = task.reset(seed=seed + i)
        info = {}
        for _ in range(task.max_episode_steps):
            obs, _, terminated, truncated, info = task.step(policy.step(obs))
            if terminated or truncated:
                break
        wins += bool(info.get("success"))
    return wins / episodes


def test_trained_policy_success_through_ros_matches_direct_evaluation(ros, trained_reach_policy, tmp_path):
    path = trained_reach_policy
    direct = direct_success_rate(path, EPISODES, SEED)
    t = time.monotonic()
    summary = deploy(path, "so101", sim=True, task="reach", episodes=EPISODES, record=False,
                     params={"sim": {"seed": SEED, "reset_delay_s": 0.2}}, log_dir=str(tmp_path / "logs"),
                     status=False, duration=EPISODES * 7.0)
    ends = summary["episodes"]
    assert len(ends) == EPISODES, f"{len(ends)} episodes in {time.monotonic() - t:.0f} s"
    through_ros = sum(e["outcome"] == "success" for e in ends) / EPISODES
    # Within noise: two binomial estimates of the same rate (and never below 0.2 apart for 8 episodes each).
    p = (direct + through_ros) / 2
    tolerance = max(0.25, 2.0 * np.sqrt(max(p * (1 - p), 1e-9) * 2.0 / EPISODES))
    assert abs(through_ros - direct) <= tolerance, f"ROS {through_ros:.2f} vs direct {direct:.2f}"
    assert direct >= 0.5, f"the trained policy should mostly succeed (direct {direct:.2f})"


def test_r2s_deploy_prints_status_and_stops_cleanly_on_ctrl_c(ros, tmp_path):
    import re
    import signal
    import threading

    from sim.tasks.reach import ReachTask

    w = np.zeros((1, 18, 6), np.float32)
    w[0, :6] = np.eye(6)
    policy = so101_policy(tmp_path / "hold.onnx", w, ReachTask.obs_layout, content_hash="hold-v1")
    bag = tmp_path / "bag"
    proc = subprocess.Popen([sys.executable, "-m", "stack", "deploy", "--policy", policy, "--sim", "--bag", str(bag),
                             "--log-dir", str(tmp_path / "logs")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 90
        while not any(re.search(r"\[r2s\] rate \d", line) for line in lines):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, f"no live status line with a rate: {lines}"
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # what a terminal's Ctrl-C sends (the nodes run in their own session)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    reader.join(5)
    assert rc == 0, proc.stderr.read()[-3000:]
    out = json.loads(lines[-1])
    assert out["exit_codes"] == {"policy": 0, "safety": 0, "sim": 0, "recorder": 0}, out
    log = read_bag(bag)
    assert len(log[SO101.joint_states_topic]) > 10 and log[topics.PROPOSAL]
