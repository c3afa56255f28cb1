"""Task registry: name -> task class, imported lazily."""

from __future__ import annotations

import importlib

_TASKS: dict[str, str] = {
    "hopper": "sim.tasks.locomotion:HopperTask",
    "walker2d": "sim.tasks.locomotion:Walker2dTask",
    "halfcheetah": "sim.tasks.locomotion:HalfCheetahTask",
    "reach": "sim.tasks.reach:ReachTask",
    "push": "sim.tasks.push:PushTask",
    "zone": "sim.tasks.zone:ZoneTask",
    "point_mass": "sim.tasks.point_mass:PointMassTask",
}


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def task_class(name: str):
    if name not in _TASKS:
        raise KeyError(f"task: unknown task {name!r}; known tasks are {list_tasks()}")
    module, attr = _TASKS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def make_task(name: str, **kwargs):
    """Build one task env, e.g. ``make_task("hopper", randomization={"mass": (0.8, 1.2)})``."""
    return task_class(name)(**kwargs)
