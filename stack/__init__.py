"""r2s — the stack's spine: CLI, configs, run directories, training loops, export, torch-free runtime, ROS 2 nodes.

Importing ``stack`` imports nothing heavy: torch and the simulators load only inside the commands that need them,
so ``stack.runtime`` and ``stack.ros`` run on a robot without torch.
"""

__version__ = "0.1.0"
