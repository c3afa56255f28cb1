"""The Gymnasium MuJoCo locomotion robots: Hopper, Walker2d and HalfCheetah.

Their models are Gymnasium's own XML files, loaded from the installed ``gymnasium`` package at run time
(``load_gymnasium_model``). The specs below are written out rather than read from the XML at import time, so that a
robot-side install (no MuJoCo, no Gymnasium) can still read them; ``tests/sim/test_locomotion.py`` checks them against
the XML: joint order = actuator order, position limits = joint ranges, effort limits = ctrlrange × gear,
control rate = 1 / (timestep × frame skip).

The XML files set no joint speed limit, so ``vel_max`` is ``inf`` (no limit) for every joint.
"""

from __future__ import annotations

import math
import os

from robots.spec import JointSpec, RobotSpec

_INF = math.inf

GYMNASIUM_ASSETS = "envs/mujoco/assets"
"""Folder of the MuJoCo XML files inside the installed ``gymnasium`` package."""


def gymnasium_asset_path(asset_name: str) -> str:
    """Absolute path of ``asset_name`` (``"hopper.xml"``, or ``"hopper"``) inside the installed gymnasium package."""
    import gymnasium

    name = asset_name.split(":", 1)[1] if asset_name.startswith("gymnasium:") else asset_name
    if not name.endswith(".xml"):
        name += ".xml"
    path = os.path.join(os.path.dirname(gymnasium.__file__), GYMNASIUM_ASSETS, name)
    if not os.path.isfile(path):
        folder = os.path.dirname(path)
        known = sorted(f for f in os.listdir(folder) if f.endswith(".xml")) if os.path.isdir(folder) else []
        raise FileNotFoundError(f"gymnasium asset {name!r} not found in {folder}; available: {known}")
    return path


def load_gymnasium_model(asset_name: str):
    """A fresh ``mujoco.MjModel`` compiled from one of gymnasium's XML assets (e.g. ``"hopper.xml"``)."""
    import mujoco

    return mujoco.MjModel.from_xml_path(gymnasium_asset_path(asset_name))


def _effort_robot(name: str, joints: tuple[JointSpec, ...], rate_hz: float, asset: str, description: str) -> RobotSpec:
    return RobotSpec(
        name=name,
        joints=joints,
        control_mode="effort",
        control_rate_hz=rate_hz,
        model_source=f"gymnasium:{asset}",
        command_topic="/forward_effort_controller/commands",
        controller_name="forward_effort_controller",
        description=description,
    )


_R150 = math.radians(150.0)  # hip/knee range in hopper.xml and walker2d_v5.xml (given in degrees there)
_R45 = math.radians(45.0)  # ankle range

HOPPER = _effort_robot(
    "hopper",
    (
        JointSpec("thigh_joint", -_R150, 0.0, _INF, 200.0),
        JointSpec("leg_joint", -_R150, 0.0, _INF, 200.0),
        JointSpec("foot_joint", -_R45, _R45, _INF, 200.0),
    ),
    rate_hz=125.0,  # timestep 0.002 s × frame skip 4
    asset="hopper.xml",
    description="Gymnasium Hopper (planar one-legged hopper); actions are normalised torques in [-1, 1] × gear 200.",
)

WALKER2D = _effort_robot(
    "walker2d",
    (
        JointSpec("thigh_joint", -_R150, 0.0, _INF, 100.0),
        JointSpec("leg_joint", -_R150, 0.0, _INF, 100.0),
        JointSpec("foot_joint", -_R45, _R45, _INF, 100.0),
        JointSpec("thigh_left_joint", -_R150, 0.0, _INF, 100.0),
        JointSpec("leg_left_joint", -_R150, 0.0, _INF, 100.0),
        JointSpec("foot_left_joint", -_R45, _R45, _INF, 100.0),
    ),
    rate_hz=125.0,  # timestep 0.002 s × frame skip 4
    asset="walker2d_v5.xml",
    description="Gymnasium Walker2d v5 (planar biped); actions are normalised torques in [-1, 1] × gear 100.",
)

HALFCHEETAH = _effort_robot(
    "halfcheetah",
    (
        JointSpec("bthigh", -0.52, 1.05, _INF, 120.0),
        JointSpec("bshin", -0.785, 0.785, _INF, 90.0),
        JointSpec("bfoot", -0.4, 0.785, _INF, 60.0),
        JointSpec("fthigh", -1.0, 0.7, _INF, 120.0),
        JointSpec("fshin", -1.2, 0.87, _INF, 60.0),
        JointSpec("ffoot", -0.5, 0.5, _INF, 30.0),
    ),
    rate_hz=20.0,  # timestep 0.01 s × frame skip 5
    asset="half_cheetah.xml",
    description="Gymnasium HalfCheetah (planar quadruped); actions are normalised torques in [-1, 1] × gear.",
)

__all__ = ["HALFCHEETAH", "HOPPER", "WALKER2D", "gymnasium_asset_path", "load_gymnasium_model"]
