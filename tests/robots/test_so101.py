"""The SO-101 spec and its MuJoCo model agree, and the model behaves like an STS3215-driven tabletop arm."""

import math

import mujoco
import numpy as np
import pytest

from robots import get_robot, list_robots
from robots.so101 import EE_SITE, FRAME_SKIP, HOME, SCENES, SO101, load_model, model_path
from robots.spec import SpecMismatch

EXPECTED_JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")


@pytest.fixture(scope="module")
def arm():
    return load_model("arm")


def test_registry_returns_the_so101_spec():
    assert "so101" in list_robots()
    spec = get_robot("so101")
    assert spec is SO101
    assert spec.joint_names == EXPECTED_JOINTS
    assert spec.control_mode == "position"
    assert spec.control_rate_hz == 20.0
    assert spec.model_source == "r2s:so101.xml"
    assert spec.command_topic == "/forward_position_controller/commands"
    assert spec.trajectory_topic == "/joint_trajectory_controller/joint_trajectory"


@pytest.mark.parametrize("scene", sorted(SCENES))
def test_every_scene_compiles_with_the_same_arm(scene):
    m = load_model(scene)
    assert m.nu == 6
    assert m.opt.timestep == pytest.approx(0.002)
    assert m.site(EE_SITE).id >= 0
    assert m.camera("overview").id >= 0
    assert m.geom("table").type == mujoco.mjtGeom.mjGEOM_PLANE
    if scene != "arm":
        assert m.body("goal").mocapid[0] >= 0
    if scene == "push":
        assert m.jnt_type[m.joint("object").id] == mujoco.mjtJoint.mjJNT_FREE


def test_unknown_scene_is_refused():
    with pytest.raises(KeyError, match="scene"):
        model_path("kitchen")


def test_spec_matches_the_xml(arm):
    m = arm
    # Actuators in the spec's order, each driving the joint of the same name.
    assert tuple(m.actuator(i).name for i in range(m.nu)) == SO101.joint_names
    for i, js in enumerate(SO101.joints):
        jid = m.actuator_trnid[i, 0]
        assert m.joint(jid).name == js.name
        assert m.jnt_type[jid] == mujoco.mjtJoint.mjJNT_HINGE
        assert m.jnt_limited[jid]
        lo, hi = m.jnt_range[jid]
        assert (lo, hi) == pytest.approx((js.pos_min, js.pos_max), abs=1e-6), js.name
        # Position servo: ctrlrange = joint range, force limited to the stall torque.
        assert tuple(m.actuator_ctrlrange[i]) == pytest.approx((lo, hi), abs=1e-9)
        assert m.actuator_forcelimited[i]
        assert tuple(m.actuator_forcerange[i]) == pytest.approx((-js.effort_max, js.effort_max))
        assert m.actuator_biastype[i] == mujoco.mjtBias.mjBIAS_AFFINE
        kp = m.actuator_gainprm[i, 0]
        assert kp > 0 and m.actuator_biasprm[i, 1] == pytest.approx(-kp)
        # No-load speed of the model (stall torque / damping) is the spec's speed limit.
        dof = m.jnt_dofadr[jid]
        assert js.effort_max / m.dof_damping[dof] == pytest.approx(js.vel_max, rel=0.02), js.name
    assert 1.0 / (m.opt.timestep * FRAME_SKIP) == pytest.approx(SO101.control_rate_hz)
    assert SO101.extra["frame_skip"] == FRAME_SKIP


def test_ranges_and_home_are_realistic():
    deg = {j.name: (math.degrees(j.pos_min), math.degrees(j.pos_max)) for j in SO101.joints}
    assert deg["shoulder_pan"] == pytest.approx((-110, 110))
    for name in ("shoulder_lift", "elbow_flex", "wrist_flex"):
        assert deg[name] == pytest.approx((-100, 100))
    assert deg["wrist_roll"] == pytest.approx((-160, 160))
    assert deg["gripper"] == pytest.approx((0, 100))
    lo, hi = SO101.pos_limits
    assert np.all((lo <= HOME) & (np.array(HOME) <= hi))


def test_dimensions_and_masses(arm):
    m, d = arm, mujoco.MjData(arm)
    d.qpos[2] = -math.pi / 2  # elbow straightened: upper arm, forearm and gripper all point up
    mujoco.mj_kinematics(m, d)
    shoulder = d.xpos[m.body("upper_arm").id]
    ee = d.site_xpos[m.site(EE_SITE).id]
    assert shoulder[2] == pytest.approx(0.1, abs=0.01)  # base ~0.1 m tall
    assert ee - shoulder == pytest.approx([0, 0, 0.345], abs=1e-6)  # reach 0.11 + 0.135 + 0.1
    for link in ("shoulder", "upper_arm", "forearm", "wrist", "gripper"):
        assert 0.05 <= m.body_mass[m.body(link).id] <= 0.25, link
    assert m.body_mass[m.body("moving_jaw").id] < 0.05


def test_servo_behaves_like_an_sts3215(arm):
    m, d = arm, mujoco.MjData(arm)
    roll = SO101.joint_names.index("wrist_roll")
    d.ctrl[roll] = 2.5  # a big step: the servo saturates at its stall torque and runs at no-load speed
    speeds, forces = [], []
    for _ in range(300):
        mujoco.mj_step(m, d)
        speeds.append(abs(d.qvel[roll]))
        forces.append(abs(d.actuator_force[roll]))
    assert 4.5 <= max(speeds) <= 6.5
    assert max(forces) == pytest.approx(3.0)
    assert abs(d.qpos[roll] - 2.5) < 0.05  # and it gets there (2.5 rad at ~5.5 rad/s: under 0.6 s)


def test_arm_holds_home_against_gravity(arm):
    m, d = arm, mujoco.MjData(arm)
    d.qpos[:6] = HOME
    d.ctrl[:] = HOME
    mujoco.mj_step(m, d, nstep=500)
    assert np.max(np.abs(d.qpos[:6] - HOME)) < 0.03  # a stiff servo sags a little, it does not fall
    assert np.max(np.abs(d.qvel[:6])) < 1e-3


def test_metadata_round_trip_and_wrong_joint_order():
    meta = SO101.to_metadata()
    SO101.check_metadata(meta)
    import json

    names = list(SO101.joint_names)
    names[1], names[2] = names[2], names[1]
    bad = dict(meta, joint_names=json.dumps(names))
    with pytest.raises(SpecMismatch, match="joint_names"):
        SO101.check_metadata(bad)
