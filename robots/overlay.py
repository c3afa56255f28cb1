"""Robot-spec overlays: calibrated joint parameters (from ``r2s sysid``) laid over a robot's MuJoCo model.

An overlay is a small YAML (or JSON) file::

    robot: so101
    joints:
      shoulder_pan: {damping: 0.61, frictionloss: 0.04, armature: 0.0085, kp: 37.2}
      ...
    command_delay_substeps: 2        # recorded for the reader; the model has no delay field
    unidentified: [gripper.kp, ...]  # listed only: never written under ``joints``

Only the joints and fields it names change. ``R2S_ROBOT_OVERLAY=<file>`` makes every model the robot's ``load_model``
builds (sim tasks, training workers, ``r2s deploy --sim``) carry it: one explicit switch, off when unset.
"""

from __future__ import annotations

import json
import os

OVERLAY_ENV = "R2S_ROBOT_OVERLAY"
JOINT_FIELDS = ("damping", "frictionloss", "armature", "kp")
"""What an overlay may set per joint: DoF damping (N·m·s/rad), friction loss (N·m), armature (kg·m²) and the position
servo's gain kp (N·m/rad; its bias −kp moves with it so the set point stays the target)."""


def overlay_path() -> str:
    """The overlay file named by ``R2S_ROBOT_OVERLAY`` ("" when unset)."""
    return os.environ.get(OVERLAY_ENV, "")


def load_overlay(path: str | os.PathLike) -> dict:
    """Read an overlay file (``.json``: JSON, anything else: YAML) and check its shape."""
    with open(path) as f:
        text = f.read()
    if str(path).endswith(".json"):
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict) or not isinstance(data.get("robot"), str):
        raise ValueError(f"robot overlay {path}: expected a mapping with a 'robot' name, got {type(data).__name__}")
    joints = data.get("joints") or {}
    if not isinstance(joints, dict):
        raise ValueError(f"robot overlay {path}: 'joints' must map joint names to fields, got {type(joints).__name__}")
    for joint, values in joints.items():
        bad = sorted(set(values) - set(JOINT_FIELDS)) if isinstance(values, dict) else ["<not a mapping>"]
        if bad:
            raise ValueError(f"robot overlay {path}: joints.{joint} has unknown field(s) {bad}; expected some of "
                             f"{list(JOINT_FIELDS)}")
    return data


def apply_overlay(model, overlay: dict, robot: str) -> None:
    """Write the overlay's joint fields into ``model`` (a ``mujoco.MjModel`` of ``robot``), in place."""
    import mujoco

    if overlay.get("robot") != robot:
        raise ValueError(f"robot overlay: robot is {overlay.get('robot')!r}, this model is {robot!r}")
    for joint, values in (overlay.get("joints") or {}).items():
        jid = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, joint)
        if jid < 0:
            raise ValueError(f"robot overlay: joints.{joint}: the {robot} model has no such joint")
        dof = model.jnt_dofadr[jid]
        for field, value in values.items():
            value = float(value)
            if not value >= 0.0:
                raise ValueError(f"robot overlay: joints.{joint}.{field} must be >= 0, got {value}")
            if field == "kp":
                act = _joint_actuator(model, jid)
                model.actuator_gainprm[act, 0] = value
                model.actuator_biasprm[act, 1] = -value
            else:
                getattr(model, f"dof_{field}")[dof] = value


def _joint_actuator(model, jid: int) -> int:
    import mujoco

    for a in range(model.nu):
        if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT and model.actuator_trnid[a, 0] == jid:
            return a
    raise ValueError(f"robot overlay: joint {model.joint(jid).name!r} has no actuator to set kp on")


__all__ = ["JOINT_FIELDS", "OVERLAY_ENV", "apply_overlay", "load_overlay", "overlay_path"]
