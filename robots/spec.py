"""The typed robot description every other part reads: sim, exported ONNX metadata and ROS 2 nodes.

A mismatch between two descriptions is refused loudly (``SpecMismatch`` names the field), never coerced.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

ControlMode = Literal["position", "velocity", "effort"]


class SpecMismatch(ValueError):
    """Two robot/observation descriptions disagree; the message names the field and both values."""


@dataclass(frozen=True)
class JointSpec:
    """One actuated joint, in the robot's canonical order."""

    name: str
    pos_min: float
    """Lower position limit (rad, or m for prismatic joints)."""
    pos_max: float
    """Upper position limit."""
    vel_max: float
    """Speed limit (rad/s); the safety layer also uses it to bound the rate of change of position targets."""
    effort_max: float
    """Torque/force limit (N·m or N)."""
    acc_max: float = float("inf")
    """Acceleration limit (rad/s²) of position targets: the safety layer brakes and accelerates commands within it
    (inf: no limit)."""


@dataclass(frozen=True)
class ObsSegment:
    """A named slice of the observation vector and where it comes from on the robot.

    ``source`` is ``joint_states.position`` / ``joint_states.velocity`` (read by joint name from
    sensor_msgs/JointState) or ``topic:/name`` for a task observation published on its own topic.
    """

    name: str
    size: int
    source: str


@dataclass(frozen=True)
class RobotSpec:
    """Joints in order, limits, control interface, model source and ROS names of one robot."""

    name: str
    joints: tuple[JointSpec, ...]
    control_mode: ControlMode
    control_rate_hz: float
    """Rate at which the policy sends commands (the sim's frame skip is derived from it)."""
    model_source: str
    """Where the MuJoCo model comes from: ``r2s:<file under robots/assets>`` or ``gymnasium:<asset file>``."""
    joint_states_topic: str = "/joint_states"
    command_topic: str = "/forward_position_controller/commands"
    """std_msgs/Float64MultiArray for a ros2_control forward_command_controller."""
    trajectory_topic: str = "/joint_trajectory_controller/joint_trajectory"
    """trajectory_msgs/JointTrajectory for a ros2_control joint_trajectory_controller."""
    controller_name: str = "forward_position_controller"
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    # ---- derived views -------------------------------------------------------------------------------------------
    @property
    def joint_names(self) -> tuple[str, ...]:
        return tuple(j.name for j in self.joints)

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    @property
    def pos_limits(self) -> tuple[np.ndarray, np.ndarray]:
        return (np.array([j.pos_min for j in self.joints]), np.array([j.pos_max for j in self.joints]))

    @property
    def vel_limits(self) -> np.ndarray:
        return np.array([j.vel_max for j in self.joints])

    @property
    def acc_limits(self) -> np.ndarray:
        return np.array([j.acc_max for j in self.joints])

    @property
    def effort_limits(self) -> np.ndarray:
        return np.array([j.effort_max for j in self.joints])

    @property
    def control_period_s(self) -> float:
        return 1.0 / self.control_rate_hz

    # ---- exchange with exported models and ROS parameters --------------------------------------------------------
    def to_metadata(self) -> dict[str, str]:
        """Flat string map, as stored in ONNX metadata_props."""
        return {
            "robot": self.name,
            "joint_names": json.dumps(list(self.joint_names)),
            "control_mode": self.control_mode,
            "control_rate_hz": repr(float(self.control_rate_hz)),
            "joints": json.dumps([asdict(j) for j in self.joints]),
        }

    def check_metadata(self, meta: dict[str, str]) -> None:
        """Refuse metadata written for another robot, naming the first field that differs."""
        if meta.get("robot") != self.name:
            raise SpecMismatch(f"robot: model was exported for {meta.get('robot')!r}, this robot is {self.name!r}")
        names = json.loads(meta.get("joint_names", "[]"))
        if tuple(names) != self.joint_names:
            raise SpecMismatch(
                f"joint_names: model expects {names}, robot {self.name!r} has {list(self.joint_names)} (order matters)"
            )
        if meta.get("control_mode", self.control_mode) != self.control_mode:
            raise SpecMismatch(
                f"control_mode: model expects {meta['control_mode']!r}, robot uses {self.control_mode!r}"
            )
        rate = float(meta.get("control_rate_hz", self.control_rate_hz))
        if abs(rate - self.control_rate_hz) > 1e-6:
            raise SpecMismatch(f"control_rate_hz: model expects {rate}, robot runs at {self.control_rate_hz}")


def obs_layout_to_json(layout: tuple[ObsSegment, ...]) -> str:
    return json.dumps([asdict(s) for s in layout])


def obs_layout_from_json(text: str) -> tuple[ObsSegment, ...]:
    return tuple(ObsSegment(**d) for d in json.loads(text))


def check_obs_layout(expected: tuple[ObsSegment, ...], got: tuple[ObsSegment, ...]) -> None:
    """Refuse an observation layout that differs from the expected one, naming the segment."""
    if len(expected) != len(got):
        raise SpecMismatch(
            f"obs_layout: expected {len(expected)} segments {[s.name for s in expected]}, got {[s.name for s in got]}"
        )
    for i, (a, b) in enumerate(zip(expected, got)):
        if a != b:
            raise SpecMismatch(f"obs_layout[{i}]: expected {a}, got {b}")
