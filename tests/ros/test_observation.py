"""Observation assembly, message checks and the step trigger by hand (no ROS): sizes, names, ages, stamps."""

from types import SimpleNamespace as NS

import numpy as np
import pytest

from robots.spec import ObsSegment
from stack.ros.messages import BadMessage, JointMatcher, JointNameError, partial_joint_command, trajectory_positions
from stack.ros.observation import LayoutError, ObservationAssembler, ObservationRefused, StepTrigger

JOINTS = ("a", "b")
LAYOUT = (ObsSegment("joint_pos", 2, "joint_states.position"), ObsSegment("joint_vel", 2, "joint_states.velocity"),
          ObsSegment("goal", 3, "topic:/goal"))
MS = 1_000_000


def js(names=("b", "a"), position=(0.2, 0.1), velocity=(-0.2, -0.1), stamp_ns=0):
    sec, nsec = divmod(stamp_ns, 1_000_000_000)
    return NS(name=list(names), position=list(position), velocity=list(velocity), effort=[],
              header=NS(stamp=NS(sec=sec, nanosec=nsec)))


def assembler(max_age_s=0.075):
    return ObservationAssembler(LAYOUT, JOINTS, max_age_s=max_age_s, js_topic="/joint_states")


def test_observation_reads_joints_by_name_and_the_task_topics_stamped_by_the_oldest_source():
    a = assembler()
    a.topic_message("/goal", [1.0, 2.0, 3.0], now_ns=100 * MS)
    msg = js(stamp_ns=110 * MS)
    t = a.check_joint_states(msg, now_ns=111 * MS)
    assert t == 110 * MS
    obs = a.assemble(msg, t, now_ns=112 * MS)
    np.testing.assert_allclose(obs.values, [0.1, 0.2, -0.1, -0.2, 1.0, 2.0, 3.0])
    assert obs.stamp_ns == 100 * MS  # the goal arrived before the joint_states were stamped: it is the oldest
    assert obs.age_s == pytest.approx(0.012)
    assert a.names[:2] == ["joint_pos[0]", "joint_pos[1]"] and a.names[-1] == "goal[2]"


def test_a_silent_task_topic_makes_the_observation_stale():
    # Issue 11.4: /r2s/goal stopped for 3 s, and 60 "ok" commands went out on its last value.
    a = assembler()
    with pytest.raises(ObservationRefused, match="waiting for /goal") as info:
        a.assemble(js(), 0, now_ns=0)
    assert info.value.kind == "waiting"
    a.topic_message("/goal", [1.0, 2.0, 3.0], now_ns=0)
    a.assemble(js(), 70 * MS, now_ns=75 * MS)
    with pytest.raises(ObservationRefused, match=r"/goal is 3000 ms old \(at most 75 ms\)") as info:
        a.assemble(js(), 3000 * MS, now_ns=3000 * MS)
    assert info.value.kind == "stale"


def test_a_wrong_size_task_message_is_refused_and_the_old_value_ages_out():
    a = assembler()
    a.topic_message("/goal", [1.0, 2.0, 3.0], now_ns=0)
    with pytest.raises(BadMessage, match="/goal: 2 values, the observation layout expects 3"):
        a.topic_message("/goal", [1.0, 2.0], now_ns=50 * MS)
    with pytest.raises(ObservationRefused, match="stale"):
        a.assemble(js(), 100 * MS, now_ns=100 * MS)


def test_old_and_future_joint_states_stamps():
    a = assembler()
    a.topic_message("/goal", [0.0, 0.0, 0.0], now_ns=10_000 * MS)
    old = js(stamp_ns=8_000 * MS)  # stamped 2 s ago
    t = a.check_joint_states(old, now_ns=10_000 * MS)
    with pytest.raises(ObservationRefused, match="/joint_states is 2000 ms old"):
        a.assemble(old, t, now_ns=10_000 * MS)
    with pytest.raises(BadMessage, match=r"header.stamp is 10000.0 ms in the future"):
        a.check_joint_states(js(stamp_ns=20_000 * MS), now_ns=10_000 * MS)
    assert a.check_joint_states(js(stamp_ns=0), now_ns=10_000 * MS) == 10_000 * MS  # unstamped: arrival time
    # The node's clock steps back: every source looks as if from the future.
    with pytest.raises(ObservationRefused, match="from the future"):
        a.assemble(js(), 10_000 * MS, now_ns=8_000 * MS)


@pytest.mark.parametrize("msg,match", [
    (js(names=("a",), position=(0.1,), velocity=(0.0,)), r"missing \['b'\]"),
    (js(names=("a", "b", "a"), position=(0.1, 0.2, 0.3), velocity=(0, 0, 0)), r"\['a'\] appear more than once"),
    (js(position=(0.1, 0.2, 0.3)), "position has 3 values for 2 joint names"),
    (js(velocity=()), "velocity has 0 values for 2 joint names"),
])
def test_malformed_joint_states_are_refused_naming_the_field(msg, match):
    with pytest.raises(BadMessage, match=match):
        assembler().check_joint_states(msg, now_ns=0)


def test_layout_the_node_cannot_read_is_refused():
    with pytest.raises(LayoutError, match="segment image has source 'camera:/front'"):
        ObservationAssembler((ObsSegment("image", 2, "camera:/front"),), JOINTS, 0.1)
    with pytest.raises(LayoutError, match=r"joint_pos\[3\] reads joint_states.position but the robot has 2"):
        ObservationAssembler((ObsSegment("joint_pos", 3, "joint_states.position"),), JOINTS, 0.1)


def test_trajectory_and_partial_commands_are_validated():
    # Issue 11.2: 6 names and 3 positions raised IndexError in the safety node's executor and ended it.
    m = JointMatcher(JOINTS, "/baseline")
    traj = NS(joint_names=["b", "a"], points=[NS(positions=[0.2, 0.1])])
    np.testing.assert_allclose(trajectory_positions(traj, m), [0.1, 0.2])
    with pytest.raises(BadMessage, match="without points"):
        trajectory_positions(NS(joint_names=["a", "b"], points=[]), m)
    with pytest.raises(BadMessage, match="points\\[0\\].positions has 1 values for 2 joint names"):
        trajectory_positions(NS(joint_names=["a", "b"], points=[NS(positions=[0.1])]), m)
    with pytest.raises(JointNameError, match=r"missing \['b'\], extra \['c'\]"):
        trajectory_positions(NS(joint_names=["a", "c"], points=[NS(positions=[0.1, 0.2])]), m)
    values, commanded = partial_joint_command("/teleop", ["b"], [0.3], JOINTS)
    np.testing.assert_allclose(values, [0.0, 0.3])
    np.testing.assert_array_equal(commanded, [False, True])
    for names, pos, match in ((["c"], [0.1], "unknown joint"), (["a"], [0.1, 0.2], "2 values for 1"),
                              ([], [], "names no joint"), (["a", "a"], [0.1, 0.1], "more than once")):
        with pytest.raises(BadMessage, match=match):
            partial_joint_command("/teleop", names, pos, JOINTS)


def test_step_trigger_decimates_on_stamps_and_re_anchors_when_they_jump_back():
    period = 50 * MS
    trig = StepTrigger(period)
    steps = [t for t in range(0, 300 * MS, 10 * MS) if trig(t)]  # joint_states at 100 Hz
    assert steps == [0, 50 * MS, 100 * MS, 150 * MS, 200 * MS, 250 * MS]
    # Stamps jump 2 s back (a restarted driver): the next message steps at once and the schedule follows it, instead
    # of staying silent until the stamps reach the old due time.
    assert trig(-2000 * MS + 300 * MS)
    assert not trig(-2000 * MS + 310 * MS)
    assert trig(-2000 * MS + 350 * MS)
