"""The contract between an exported policy and the robot: the ONNX file's metadata_props.

Every value is a string (ONNX stores strings); lists and maps are JSON. The exporter writes these keys, the runtime
reads and checks them against the robot's spec before any command leaves the process.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from robots.spec import ObsSegment, RobotSpec, SpecMismatch, check_obs_layout, obs_layout_from_json

REQUIRED_KEYS = (
    "r2s_version", "robot", "joint_names", "control_mode", "control_rate_hz", "obs_layout", "obs_dim", "obs_steps",
    "action_names", "action_low", "action_high", "act_dim", "horizon", "act_steps", "policy_type",
    "denoising_steps", "noise_shape", "run_id", "content_hash",
)
"""Keys every exported r2s policy carries. ``noise_shape`` is JSON: [] for no noise input, else the per-sample shape
(e.g. [K+1, H, act_dim] for a stochastic DDPM/DDIM chain, [H, act_dim] for flow or deterministic DDIM)."""

OPTIONAL_KEYS = ("robot_overlay", "robot_overlay_hash")
"""Keys a policy exported from a run carries beside them: the ``r2s sysid`` robot overlay its simulator carried (file
name and ``robots.overlay.overlay_hash``; "" both: the nominal model). ``r2s deploy --sim`` compares them with the sim
robot's overlay (``stack.run_overlay``)."""


class MetadataError(ValueError):
    """The model's metadata is missing a key or holds a value of the wrong form."""


@dataclass(frozen=True)
class PolicyMetadata:
    robot: str
    joint_names: tuple[str, ...]
    control_mode: str
    control_rate_hz: float
    obs_layout: tuple[ObsSegment, ...]
    obs_dim: int
    obs_steps: int
    action_names: tuple[str, ...]
    action_low: tuple[float, ...]
    action_high: tuple[float, ...]
    act_dim: int
    horizon: int
    act_steps: int
    policy_type: str
    denoising_steps: int
    noise_shape: tuple[int, ...]
    run_id: str
    content_hash: str
    r2s_version: str
    raw: dict

    @classmethod
    def from_props(cls, props: dict[str, str]) -> "PolicyMetadata":
        missing = [k for k in REQUIRED_KEYS if k not in props]
        if missing:
            raise MetadataError(f"metadata: missing key(s) {missing}; is this an r2s-exported policy?")
        try:
            return cls(
                robot=props["robot"],
                joint_names=tuple(json.loads(props["joint_names"])),
                control_mode=props["control_mode"],
                control_rate_hz=float(props["control_rate_hz"]),
                obs_layout=obs_layout_from_json(props["obs_layout"]),
                obs_dim=int(props["obs_dim"]),
                obs_steps=int(props["obs_steps"]),
                action_names=tuple(json.loads(props["action_names"])),
                action_low=tuple(float(x) for x in json.loads(props["action_low"])),
                action_high=tuple(float(x) for x in json.loads(props["action_high"])),
                act_dim=int(props["act_dim"]),
                horizon=int(props["horizon"]),
                act_steps=int(props["act_steps"]),
                policy_type=props["policy_type"],
                denoising_steps=int(props["denoising_steps"]),
                noise_shape=tuple(int(x) for x in json.loads(props["noise_shape"])),
                run_id=props["run_id"],
                content_hash=props["content_hash"],
                r2s_version=props["r2s_version"],
                raw=dict(props),
            )
        except (ValueError, TypeError) as e:
            raise MetadataError(f"metadata: malformed value ({e})") from e

    def check_consistent(self) -> None:
        """Refuse metadata that contradicts itself: a policy that could configure but never step."""
        if self.obs_steps < 1:
            raise MetadataError(f"obs_steps: {self.obs_steps}; expected >= 1")
        if self.act_steps < 1:
            raise MetadataError(f"act_steps: {self.act_steps}; expected >= 1 (actions executed per chunk)")
        if self.horizon < self.act_steps:
            raise MetadataError(f"horizon: {self.horizon} is shorter than act_steps {self.act_steps}; expected "
                                "horizon >= act_steps")
        if self.act_dim != len(self.action_names):
            raise MetadataError(f"act_dim: {self.act_dim} but action_names has {len(self.action_names)} entries")
        if len(self.action_low) != self.act_dim or len(self.action_high) != self.act_dim:
            raise MetadataError(f"action_low/action_high: {len(self.action_low)}/{len(self.action_high)} values; "
                                f"expected act_dim = {self.act_dim}")
        if sum(s.size for s in self.obs_layout) != self.obs_dim:
            raise MetadataError(f"obs_layout: segments sum to {sum(s.size for s in self.obs_layout)}, obs_dim is "
                                f"{self.obs_dim}")

    def check_robot(self, spec: RobotSpec, obs_layout: tuple[ObsSegment, ...] | None = None) -> None:
        """Refuse a model exported for another robot (name, joint order, control mode, rate) or observation layout."""
        spec.check_metadata(self.raw)
        if self.act_dim != len(self.action_names):
            raise SpecMismatch(f"act_dim: {self.act_dim} but action_names has {len(self.action_names)} entries")
        unknown = [n for n in self.action_names if n not in spec.joint_names]
        if unknown:
            raise SpecMismatch(
                f"action_names: model commands {unknown}, robot {spec.name!r} has only joints "
                f"{list(spec.joint_names)}"
            )
        if sum(s.size for s in self.obs_layout) != self.obs_dim:
            raise SpecMismatch(f"obs_layout: segments sum to {sum(s.size for s in self.obs_layout)}, obs_dim is "
                               f"{self.obs_dim}")
        if obs_layout is not None:
            check_obs_layout(obs_layout, self.obs_layout)
