"""The sim robot node's model, built without ROS: the robot's MuJoCo model (or a task's scene), its joint index maps,
and the robot overlay it carries (``robots.overlay``: calibrated joint parameters and command delay from
``r2s sysid``).

The overlay is the node's ``robot_overlay`` parameter (``r2s deploy --sim --robot-overlay FILE``) or, when that is
empty, the file ``R2S_ROBOT_OVERLAY`` names — the same one the sim tasks and training workers read. It is checked in
full before anything is built: a malformed file or one calibrating another robot is a ``ValueError`` that names the
field (the node's configure fails with it; a robot twin never silently runs on the nominal model). With a task the
task carries it (its ``robot_overlay`` argument); without one it is laid over the robot's MJCF. Its
``command_delay_substeps`` becomes the twin's ``command_delay`` (``sim.core.CommandDelay``), which the node's physics
loop steps through, so a command takes effect that many substeps after the tick it is applied at.
"""

from __future__ import annotations

import inspect
import json
import os
from dataclasses import dataclass, field

import mujoco
import numpy as np

from robots.overlay import apply_overlay, command_delay_substeps, load_overlay, overlay_path
from robots.spec import RobotSpec
from sim.core import CommandDelay


def robot_model_path(spec: RobotSpec, model_path: str = "") -> str:
    """The MJCF of a robot: ``model_path`` if given, else from the spec's ``model_source``."""
    if model_path:
        return model_path
    kind, _, name = spec.model_source.partition(":")
    if kind == "r2s":
        import robots

        return os.path.join(os.path.dirname(robots.__file__), "assets", name)
    if kind == "gymnasium":
        from robots.locomotion import gymnasium_asset_path

        return gymnasium_asset_path(name)
    raise ValueError(f"model_source: {spec.model_source!r}; expected r2s:<file> or gymnasium:<file>")


@dataclass
class Twin:
    """What the sim robot node simulates."""

    task: object | None
    """The ``sim`` task env (None: the bare robot)."""
    model: mujoco.MjModel
    data: mujoco.MjData
    frame_skip: int
    """Physics substeps per control period."""
    qadr: np.ndarray
    """qpos address of each of the spec's joints."""
    dadr: np.ndarray
    """dof address of each of the spec's joints."""
    act_idx: np.ndarray
    """The actuator of each of the spec's joints (-1: none)."""
    task_topics: dict[str, slice] = field(default_factory=dict)
    """``topic:`` observation segments of the task -> their slice of the observation."""
    overlay_path: str = ""
    """The robot overlay file the model carries ("": none)."""
    overlay: dict | None = None
    command_delay: CommandDelay | None = None
    """The overlay's command delay (None: no delay)."""

    def overlay_line(self) -> str:
        """What the node logs about the overlay it loaded."""
        if not self.overlay_path:
            return "robot overlay: none (nominal model)"
        joints = self.overlay.get("joints") or {}
        fields = sum(len(v) for v in joints.values())
        delay = self.command_delay.delay if self.command_delay is not None else 0
        return (f"robot overlay {self.overlay_path}: {fields} value(s) on {len(joints)} joint(s) "
                f"{sorted(joints)}, command delay {delay} substep(s)")


def resolve_overlay(robot_overlay: str = "") -> str:
    """The overlay file in force: the parameter if given, else ``R2S_ROBOT_OVERLAY`` ("": none)."""
    return str(robot_overlay) if robot_overlay else overlay_path()


def build_twin(spec: RobotSpec, task: str = "", task_kwargs: str | dict = "{}", randomization: str | dict = "{}",
               model_path: str = "", robot_overlay: str = "") -> Twin:
    """The model the sim robot node runs for ``spec``: ``task``'s scene (``sim.registry``, built with ``task_kwargs``
    and ``randomization``, JSON text or dicts) or the robot's MJCF (``model_path``, else the spec's model source),
    with the robot overlay of ``resolve_overlay(robot_overlay)`` applied."""
    path = resolve_overlay(robot_overlay)
    overlay = None
    if path:
        try:
            overlay = load_overlay(path, spec.name)
        except OSError as e:
            raise ValueError(f"robot_overlay {path}: cannot read it ({e.strerror or e})") from None
    delay = command_delay_substeps(overlay, path)
    task_topics: dict[str, slice] = {}
    if task:
        from sim.registry import make_task, task_class

        kwargs = json.loads(task_kwargs or "{}") if isinstance(task_kwargs, str) else dict(task_kwargs)
        if kwargs.get("action_mode", "absolute") != "absolute":
            # The robot contract: commands are absolute joint targets (an exported delta policy converts).
            raise ValueError(f"task_kwargs: action_mode must be 'absolute' on the robot side, got "
                             f"{kwargs['action_mode']!r}")
        if "robot_overlay" in kwargs:
            raise ValueError("task_kwargs: robot_overlay is the node's own parameter robot_overlay, not a task "
                             "argument here")
        cls = task_class(task)
        if "robot_overlay" in inspect.signature(cls).parameters:
            kwargs["robot_overlay"] = path  # explicit, even "" (none): the node decided, not the task's environment
        elif path:
            raise ValueError(f"robot_overlay {path}: task {task!r} takes no robot overlay")
        rand = json.loads(randomization or "{}") if isinstance(randomization, str) else dict(randomization)
        env = make_task(task, randomization=rand or None, **kwargs)
        if env.robot.name != spec.name:
            raise ValueError(f"task {task!r} simulates robot {env.robot.name!r}, not {spec.name!r}")
        if env.command_delay_substeps != delay:  # the task read the same file: a mismatch is a bug, not a choice
            raise RuntimeError(f"task {task!r} applies a command delay of {env.command_delay_substeps} substeps, the "
                               f"overlay {path!r} says {delay}")
        model, data, frame_skip = env.model, env.data, env.frame_skip
        offset = 0
        for s in env.obs_layout:
            if s.source.startswith("topic:"):
                task_topics[s.source[len("topic:"):]] = slice(offset, offset + s.size)
            offset += s.size
    else:
        env = None
        model = mujoco.MjModel.from_xml_path(robot_model_path(spec, model_path))
        if overlay is not None:
            apply_overlay(model, overlay, spec.name)
        data = mujoco.MjData(model)
        frame_skip = max(1, int(round(spec.control_period_s / model.opt.timestep)))
    missing = [n for n in spec.joint_names if mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_JOINT, n) < 0]
    if missing:
        raise ValueError(f"the model has no joint(s) {missing} of robot {spec.name!r}")
    jids = [model.joint(n).id for n in spec.joint_names]
    act_idx = np.full(len(jids), -1)
    for a in range(model.nu):
        if model.actuator_trntype[a] == mujoco.mjtTrn.mjTRN_JOINT and model.actuator_trnid[a, 0] in jids:
            act_idx[jids.index(model.actuator_trnid[a, 0])] = a
    if env is None and np.any(act_idx < 0):
        raise ValueError(f"joints without an actuator: {np.array(spec.joint_names)[act_idx < 0].tolist()}")
    return Twin(task=env, model=model, data=data, frame_skip=frame_skip,
                qadr=np.array([model.jnt_qposadr[j] for j in jids]), dadr=np.array([model.jnt_dofadr[j] for j in jids]),
                act_idx=act_idx, task_topics=task_topics, overlay_path=path, overlay=overlay,
                command_delay=CommandDelay(delay) if delay else None)


__all__ = ["Twin", "build_twin", "resolve_overlay", "robot_model_path"]
