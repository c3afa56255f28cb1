"""Robot descriptions: typed specs (joints, limits, rates, ROS names), MuJoCo models and baseline controllers.

Imports nothing else of r2s. ``get_robot(name)`` returns the spec every part of the stack reads.
"""

from robots.spec import JointSpec, ObsSegment, RobotSpec, SpecMismatch

_REGISTRY: dict[str, str] = {
    # name -> "module:attribute" (imported lazily so a robot install loads only what it uses)
    "so101": "robots.so101:SO101",
    "hopper": "robots.locomotion:HOPPER",
    "walker2d": "robots.locomotion:WALKER2D",
    "halfcheetah": "robots.locomotion:HALFCHEETAH",
}


def list_robots() -> list[str]:
    return sorted(_REGISTRY)


def get_robot(name: str) -> RobotSpec:
    if name not in _REGISTRY:
        raise KeyError(f"robot: unknown robot {name!r}; known robots are {list_robots()}")
    import importlib

    module, attr = _REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), attr)


__all__ = ["JointSpec", "ObsSegment", "RobotSpec", "SpecMismatch", "get_robot", "list_robots"]
