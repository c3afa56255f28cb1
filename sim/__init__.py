"""Simulation: MuJoCo tasks, domain randomisation, vectorised worker pools, real-to-sim replay and sysid.

Imports ``robots`` only. ``make_task(name, **kw)`` builds one env; ``make_pool(name, num_envs, ...)`` a vector env.
"""

import os

# MuJoCo picks its GL backend when it is first imported: headless EGL unless the user chose otherwise.
os.environ.setdefault("MUJOCO_GL", "egl")

from sim.registry import list_tasks, make_task  # noqa: E402

__all__ = ["list_tasks", "make_task"]
