"""Simulation: MuJoCo tasks, domain randomisation, vectorised worker pools, real-to-sim replay and sysid.

Imports ``robots`` only. ``make_task(name, **kw)`` builds one env; ``make_pool(name, num_envs, ...)`` a vector env.
"""

from sim.registry import list_tasks, make_task

__all__ = ["list_tasks", "make_task"]
