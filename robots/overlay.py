"""Robot-spec overlays: calibrated joint parameters (from ``r2s sysid``) laid over a robot's MuJoCo model.

An overlay is a small YAML (or JSON) file::

    robot: so101
    joints:
      shoulder_pan: {damping: 0.61, frictionloss: 0.04, armature: 0.0085, kp: 37.2}
      ...
    command_delay_substeps: 2        # physics substeps between a command's sending and its taking effect
    unidentified: [gripper.kp, ...]  # listed only: never written under ``joints``

Only the joints and fields it names change. ``R2S_ROBOT_OVERLAY=<file>`` makes every model the robot's ``load_model``
builds (sim tasks, training workers, ``r2s deploy --sim``) carry it: one explicit switch, off when unset. The sim
robot node also takes it as its ``robot_overlay`` parameter (``r2s deploy --sim --robot-overlay FILE``). A training
run copies the overlay its sim carried and records its ``overlay_hash`` (``stack.run_overlay``): a resume on another
overlay is refused, the exported policy names it, and ``r2s deploy --sim`` warns when the sim robot's differs.

A MuJoCo model has no delay field, so ``command_delay_substeps`` is applied by whoever steps the physics, with
``sim.core.CommandDelay``: the arm tasks (``sim.tasks.arm.ArmTask``: a command sent at a control step takes effect
that many physics substeps later, the previous one holding until then — ``sim.sysid``'s replay semantics, so a policy
trained with the overlay sees the delay the fit found) and the sim robot node (``stack.ros.sim_twin``). 0 or absent:
no delay.
"""

from __future__ import annotations

import json
import math
import os

OVERLAY_ENV = "R2S_ROBOT_OVERLAY"
JOINT_FIELDS = ("damping", "frictionloss", "armature", "kp")
"""What an overlay may set per joint: DoF damping (N·m·s/rad), friction loss (N·m), armature (kg·m²) and the position
servo's gain kp (N·m/rad; its bias −kp moves with it so the set point stays the target)."""


def overlay_path() -> str:
    """The overlay file named by ``R2S_ROBOT_OVERLAY`` ("" when unset)."""
    return os.environ.get(OVERLAY_ENV, "")


def load_overlay(path: str | os.PathLike, robot: str | None = None) -> dict:
    """Read an overlay file (``.json``: JSON, anything else: YAML) and check it: its shape, every joint value a
    finite number >= 0, ``command_delay_substeps`` an integer >= 0 and, given ``robot``, that it is that robot's.
    A ``ValueError`` names the file, the field and what was expected."""
    with open(path) as f:
        text = f.read()
    try:
        if str(path).endswith(".json"):
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as e:  # json.JSONDecodeError, yaml.YAMLError: say which file
        raise ValueError(f"robot overlay {path}: not valid {'JSON' if str(path).endswith('.json') else 'YAML'} "
                         f"({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("robot"), str):
        raise ValueError(f"robot overlay {path}: expected a mapping with a 'robot' name, got {type(data).__name__}")
    if robot is not None and data["robot"] != robot:
        raise ValueError(f"robot overlay {path}: robot is {data['robot']!r}, expected {robot!r} (an overlay "
                         "calibrates one robot)")
    joints = data.get("joints") or {}
    if not isinstance(joints, dict):
        raise ValueError(f"robot overlay {path}: 'joints' must map joint names to fields, got {type(joints).__name__}")
    for joint, values in joints.items():
        bad = sorted(set(values) - set(JOINT_FIELDS)) if isinstance(values, dict) else ["<not a mapping>"]
        if bad:
            raise ValueError(f"robot overlay {path}: joints.{joint} has unknown field(s) {bad}; expected some of "
                             f"{list(JOINT_FIELDS)}")
        for field, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"robot overlay {path}: joints.{joint}.{field} must be a finite number >= 0, got "
                                 f"{value!r}")
    command_delay_substeps(data, path)
    return data


def command_delay_substeps(overlay: dict | None, path: str | os.PathLike = "") -> int:
    """The overlay's command delay in physics substeps (0 when it names none); anything but an integer >= 0 is a
    ``ValueError`` naming the field."""
    value = (overlay or {}).get("command_delay_substeps", 0)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        where = f"robot overlay {path}" if path else "robot overlay"
        raise ValueError(f"{where}: command_delay_substeps must be an integer >= 0 (physics substeps), got {value!r}")
    return value


HASHED_FIELDS = ("robot", "joints", "command_delay_substeps")
"""What ``overlay_hash`` covers: the fields that change the simulation (not notes such as ``source``,
``unidentified`` or tracking errors)."""


def overlay_hash(overlay: dict) -> str:
    """The content hash of what an overlay does to the simulation: sha256 (first 16 hex digits, as an exported policy's
    ``content_hash``) of its robot, joint values (as floats) and command delay, as canonical JSON (keys sorted). A
    reformatted file, YAML against JSON, or other notes hash the same; any calibrated value that differs does not."""
    import hashlib

    joints = {str(j): {str(f): float(v) for f, v in (values or {}).items()}
              for j, values in (overlay.get("joints") or {}).items()}
    canonical = {"robot": overlay.get("robot"), "joints": joints,
                 "command_delay_substeps": command_delay_substeps(overlay)}
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


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


__all__ = ["HASHED_FIELDS", "JOINT_FIELDS", "OVERLAY_ENV", "apply_overlay", "command_delay_substeps", "load_overlay",
           "overlay_hash", "overlay_path"]
