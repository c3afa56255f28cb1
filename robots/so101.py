"""The SO-101-class tabletop arm: 5 arm joints and a one-jaw gripper driven by STS3215-class position servos.

The model (``assets/so101.xml``) is authored for r2s from primitive geoms; ``assets/scene_reach.xml`` and
``assets/scene_push.xml`` include it and add a goal marker (and, for push, a puck). The spec below is written out
rather than read from the XML, so that a robot-side install without MuJoCo can read it; ``tests/robots/test_so101.py``
checks the two agree (joint names and order = actuator order, ranges = ctrlranges, effort = forcerange, speed =
the servo's no-load speed in the model, control rate = 1 / (timestep × frame skip)).

Units: radians, N·m, rad/s. Actions are absolute joint-position targets at 20 Hz.
"""

from __future__ import annotations

import math
import os

from robots.spec import JointSpec, RobotSpec

ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")

SCENES: dict[str, str] = {
    "arm": "so101.xml",  # the arm on its table: light, cameras, no task objects
    "reach": "scene_reach.xml",  # + goal marker (mocap body "goal")
    "push": "scene_push.xml",  # + puck (free body "object") and goal disc (mocap body "goal")
    "zone": "scene_zone.xml",  # + goal marker and a drawn keep-out box (mocap bodies "goal", "zone")
}

JOINT_NAMES: tuple[str, ...] = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
ARM_JOINTS: tuple[str, ...] = JOINT_NAMES[:5]
"""The joints that place the fingertip (the gripper opening does not move ``ee_site``)."""
EE_SITE = "ee_site"
"""Site at the fingertip center, between the jaw tips."""

TIMESTEP_S = 0.002
CONTROL_RATE_HZ = 20.0
FRAME_SKIP = 25
"""Physics steps per control step: 1 / (20 Hz × 0.002 s)."""

STALL_TORQUE_NM = 3.0
"""STS3215-class servo stall torque; the actuators' forcerange."""
NO_LOAD_SPEED = 5.45
"""rad/s: stall torque / joint damping (3 / 0.55) in the model, about an STS3215's no-load speed."""
MAX_ACCELERATION = 110.0
"""rad/s² for position targets: full speed is reached (or shed) in one 50 ms control period, so ordinary tracking is
not slowed while a reversal from full speed takes two periods instead of one jump."""

HOME: tuple[float, ...] = (0.0, -0.3, 0.3, 0.7, 0.0, 0.0)
"""Home pose (rad): fingertip 0.18 m in front of the base axis and 0.14 m above the table, gripper closed."""


def _joint(name: str, lo_deg: float, hi_deg: float) -> JointSpec:
    return JointSpec(name, math.radians(lo_deg), math.radians(hi_deg), NO_LOAD_SPEED, STALL_TORQUE_NM, MAX_ACCELERATION)


SO101 = RobotSpec(
    name="so101",
    joints=(
        _joint("shoulder_pan", -110.0, 110.0),
        _joint("shoulder_lift", -100.0, 100.0),
        _joint("elbow_flex", -100.0, 100.0),
        _joint("wrist_flex", -100.0, 100.0),
        _joint("wrist_roll", -160.0, 160.0),
        _joint("gripper", 0.0, 100.0),
    ),
    control_mode="position",
    control_rate_hz=CONTROL_RATE_HZ,
    model_source="r2s:so101.xml",
    command_topic="/forward_position_controller/commands",
    trajectory_topic="/joint_trajectory_controller/joint_trajectory",
    controller_name="forward_position_controller",
    description=(
        "SO-101-class 5-DoF tabletop arm with a one-jaw gripper, STS3215-class position servos "
        "(3 N·m stall, ~5.5 rad/s); actions are absolute joint-position targets (rad) at 20 Hz."
    ),
    extra={"ee_site": EE_SITE, "home": HOME, "timestep_s": TIMESTEP_S, "frame_skip": FRAME_SKIP},
)


def model_path(scene: str = "arm") -> str:
    """Absolute path of the MJCF file of ``scene`` ("arm": the bare arm on its table, "reach", "push")."""
    if scene not in SCENES:
        raise KeyError(f"scene: unknown SO-101 scene {scene!r}; known scenes are {sorted(SCENES)}")
    return os.path.join(ASSETS_DIR, SCENES[scene])


def load_model(scene: str = "reach", overlay: str | None = None):
    """A fresh ``mujoco.MjModel`` of ``scene`` ("reach", "push" or "arm"), with the calibrated joint parameters of
    the robot overlay ``overlay`` (a file; None: the one ``R2S_ROBOT_OVERLAY`` names, if any; "": none) laid over
    it (``robots.overlay``)."""
    import mujoco

    from robots.overlay import apply_overlay, load_overlay, overlay_path

    model = mujoco.MjModel.from_xml_path(model_path(scene))
    path = overlay_path() if overlay is None else overlay
    if path:
        apply_overlay(model, load_overlay(path), SO101.name)
    return model


__all__ = [
    "ARM_JOINTS", "CONTROL_RATE_HZ", "EE_SITE", "FRAME_SKIP", "HOME", "JOINT_NAMES", "MAX_ACCELERATION", "SCENES",
    "SO101", "load_model", "model_path",
]
