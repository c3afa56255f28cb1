"""``r2s replay`` (stack.log_replay) without ROS: a bag written the way the node graph writes it (the recorder's own
``BagWriter``, the graph's topics and types) is replayed against the policy that recorded it, found by its ONNX
content hash; episodes of another version are dropped by the stale cutoff and counted; logs of no known version, or
none of the version fine-tuned, are refused; the fine-tuned policy is exported with a new content hash."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("mcap_ros2", reason="mcap-ros2-support is not installed (the `ros` extra)")
pytest.importorskip("rosbags", reason="rosbags is not installed (the `ros` extra)")

from stack.log_replay import ReplayConfig, ReplayError, replay, runs_by_hash  # noqa: E402
from stack.ros import topics as T  # noqa: E402
from stack.ros.bag import BagWriter  # noqa: E402

PERIOD = 50_000_000
OTHER_VERSION = "ffffffffffffffff"


class FakeGraph:
    """What the policy, safety and sim nodes and the recorder put into a bag: per step the proposal, the observation,
    the safety decision (executed, authority, mask, status), the reward and success flag; episode events carrying
    the policy version."""

    def __init__(self, path):
        from rosbags.typesys import Stores, get_typestore

        self.store, self.t = get_typestore(Stores.ROS2_KILTED), 10_000_000_000
        self.types = self.store.types
        self.bag = BagWriter(path, flush_period_s=0, custom_data={"recorder": "r2s", "robot": "so101", "task": "push"})
        for name, (msgtype, _) in T.TYPES.items():
            self.bag.add_topic(name, msgtype)
        self.joints = [f"j{i}" for i in range(6)]
        self.obs_names = [f"o[{i}]" for i in range(21)]

    def send(self, topic, msg):
        self.t += 1_000
        self.bag.write(topic, bytes(self.store.serialize_cdr(msg, T.TYPES[topic][0])), self.t, publish_time_ns=self.t)

    def header(self, stamp):
        t = self.types
        return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=stamp // 10**9,
                                                                                nanosec=stamp % 10**9), frame_id="")

    def traj(self, stamp, positions):
        t = self.types
        point = t["trajectory_msgs/msg/JointTrajectoryPoint"](
            positions=np.asarray(positions, float), velocities=np.zeros(0), accelerations=np.zeros(0),
            effort=np.zeros(0), time_from_start=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=PERIOD))
        return t["trajectory_msgs/msg/JointTrajectory"](header=self.header(stamp), joint_names=self.joints,
                                                        points=[point])

    def episode(self, event, index, version, **values):
        t = self.types
        values = {"episode": str(index), "robot": "so101", "task": "push", "policy_version": version, **values}
        kvs = [t["diagnostic_msgs/msg/KeyValue"](key=k, value=str(v)) for k, v in values.items()]
        status = t["diagnostic_msgs/msg/DiagnosticStatus"](level=0, name="episode", message=event,
                                                           hardware_id="so101", values=kvs)
        self.send(T.EPISODE, t["diagnostic_msgs/msg/DiagnosticArray"](header=self.header(self.t), status=[status]))

    def step(self, obs, proposal, executed, human):
        t = self.types
        stamp = self.t
        self.send(T.PROPOSAL, self.traj(stamp, proposal))
        self.send(T.OBSERVATION, t["sensor_msgs/msg/JointState"](
            header=self.header(stamp), name=self.obs_names, position=np.asarray(obs, float), velocity=np.zeros(0),
            effort=np.zeros(0)))
        self.send(T.EXECUTED, self.traj(stamp, executed))
        self.send(T.AUTHORITY, t["std_msgs/msg/String"](data="human" if human else "policy"))
        self.send(T.INTERVENTION_MASK, t["std_msgs/msg/Float64MultiArray"](
            layout=t["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=np.full(6, float(human))))
        self.send(T.SAFETY_STATUS, t["std_msgs/msg/String"](data="ok"))
        self.send(T.REWARD, t["std_msgs/msg/Float64"](data=-0.1))
        self.send(T.SUCCESS, t["std_msgs/msg/Bool"](data=False))
        self.t += PERIOD

    def run_episode(self, index, version, steps, outcome, rng, takeover=range(0)):
        self.episode("start", index, version, seed=index)
        for k in range(steps):
            q = rng.uniform(-0.5, 0.5, 6)
            obs = np.concatenate([q, rng.normal(0, 0.1, 6), rng.uniform(0, 0.2, 9)])
            proposal = q + rng.uniform(-0.1, 0.1, 6)
            human = k in takeover
            self.step(obs, proposal, q + rng.uniform(-0.1, 0.1, 6) if human else proposal, human)
        self.episode("end", index, version, outcome=outcome, length=steps, success_step="")

    def close(self):
        self.bag.close()


@pytest.fixture(scope="module")
def start_run(tmp_path_factory):
    """A tiny BC flow policy on push (the HABC bench's start policy at a toy budget), exported."""
    from stack.bench.habc import Budget, ensure_start
    from stack.export import export_run

    runs = tmp_path_factory.mktemp("runs")
    budget = Budget(demo_episodes=2, pretrain_steps=5, rounds=1, rollouts_per_round=1, bc_steps=1, critic_steps=1,
                    eval_episodes=1)
    run, _ = ensure_start(1, budget, runs)
    return runs, run, export_run(run)["content_hash"]


def _bag(path, episodes):
    rng = np.random.default_rng(0)
    g = FakeGraph(path)
    for i, (version, outcome, takeover) in enumerate(episodes):
        g.run_episode(i, version, 12, outcome, rng, takeover)
    g.close()
    return path


def _cfg(runs, out, **kw):
    return ReplayConfig(runs_dir=str(runs), out_dir=str(out), bc_steps=3, critic_steps=3, eval_episodes=1, **kw)


def test_replay_finds_the_recording_policy_by_hash_drops_stale_versions_and_exports_a_new_one(start_run, tmp_path):
    runs, run, version = start_run
    assert runs_by_hash(runs) == {version: run}
    bag = _bag(tmp_path / "bag", [(version, "success", range(3, 8)), (version, "timeout", range(0)),
                                  (OTHER_VERSION, "success", range(0))])
    report = replay([bag], _cfg(runs, tmp_path / "new"))
    assert report["init_run"] == str(run) and report["init_version"] == version
    assert report["episodes_used"] == 2 and report["stale_episodes_dropped"] == 1
    assert report["interventions_used"] == 1 and report["human_steps"] == 5 and report["steps_used"] == 24
    assert report["sources"]["intervention"] > 0 and report["sources"]["auto_failure"] == 12
    assert report["new_version"] != version
    assert runs_by_hash(tmp_path)[report["new_version"]] == tmp_path / "new"
    saved = json.loads((tmp_path / "new" / "replay_report.json").read_text())
    assert saved["success_before"] == report["success_before"] and saved["success_after"] == report["success_after"]
    assert (tmp_path / "new" / "replay_weights.png").is_file()
    assert "stale cutoff" in (tmp_path / "new" / "replay_report.md").read_text()


def test_logs_of_an_unknown_version_are_refused_naming_it(start_run, tmp_path):
    runs, _, _ = start_run
    bag = _bag(tmp_path / "bag", [(OTHER_VERSION, "success", range(0))])
    with pytest.raises(ReplayError, match=f"no run in .* exported policy version {OTHER_VERSION}"):
        replay([bag], _cfg(runs, tmp_path / "new"))


def test_init_from_a_policy_that_recorded_none_of_the_episodes_is_refused(start_run, tmp_path):
    runs, run, version = start_run
    bag = _bag(tmp_path / "bag", [(OTHER_VERSION, "success", range(0)), (OTHER_VERSION, "failure", range(0))])
    with pytest.raises(ReplayError, match=f"refused: none of the 2 episodes .* policy version {version}"):
        replay([bag], _cfg(runs, tmp_path / "new", init_from=str(run)))


def test_episodes_without_outcome_are_excluded_and_a_log_of_only_those_is_refused(start_run, tmp_path):
    runs, _, version = start_run
    rng = np.random.default_rng(1)
    g = FakeGraph(tmp_path / "bag")
    g.episode("start", 0, version)
    for _ in range(5):
        q = rng.uniform(-0.5, 0.5, 6)
        g.step(np.concatenate([q, np.zeros(15)]), q, q, False)
    g.close()  # the end event is lost: no outcome
    with pytest.raises(ReplayError, match="no episode with an outcome"):
        replay([tmp_path / "bag"], _cfg(runs, tmp_path / "new"))


def test_the_policys_own_proposal_is_learnt_on_its_dimensions_the_executed_command_on_the_operators(tmp_path):
    """The safety node's limited copy of a proposal (the gripper clipped inside its limit) is not what the policy
    chose: policy steps keep their proposal as the action, operator steps the executed command (as in-process)."""
    from stack.data import EpisodeDataset
    from stack.data.logs import read_log
    from stack.log_replay import logs_to_dataset

    rng = np.random.default_rng(1)
    g = FakeGraph(tmp_path / "bag")
    g.episode("start", 0, "v", seed=0)
    qs, proposals, executed = [], [], []
    for k in range(6):
        q = rng.uniform(-0.5, 0.5, 6)
        proposal = q + rng.uniform(-0.05, 0.05, 6)
        human = k >= 4
        ex = q + rng.uniform(-0.05, 0.05, 6) if human else proposal + np.r_[0, 0, 0, 0, 0, 0.02]
        g.step(np.concatenate([q, np.zeros(6), np.zeros(9)]), proposal, ex, human)
        qs.append(q), proposals.append(proposal), executed.append(ex)
    g.episode("end", 0, "v", outcome="success", length=6, success_step="")
    g.close()
    stats = logs_to_dataset([read_log(tmp_path / "bag")], tmp_path / "ds", "push", {"action_mode": "delta"}, "v", -2)
    assert stats["current_episodes"] == 1 and stats["human_steps"] == 2
    ds = EpisodeDataset(tmp_path / "ds")
    ep = ds.episode(0, ["action", "action.proposal"])
    scale = 0.1  # push's delta_scale: the action is (target − q) / scale
    want = [(p if k < 4 else e) - q for k, (q, p, e) in enumerate(zip(qs, proposals, executed))]
    np.testing.assert_allclose(ep["action"], np.array(want) / scale, atol=1e-5)
    np.testing.assert_allclose(ep["action.proposal"], (np.array(proposals) - np.array(qs)) / scale, atol=1e-5)
