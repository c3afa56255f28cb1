"""Hand-written controllers for the SO-101 tasks: they reach the goal most of the time, visibly suboptimally.

They work from the observation (laid out as the task's ``obs_layout`` says) plus the robot model, so the same
controller runs in simulation and beside the real arm. Later algorithms (agency transfer, HABC) improve on them.

* ``ReachBaseline``: damped-least-squares IK on the fingertip, a small fixed step per tick (slow).
* ``PushBaseline``: approach behind the puck, lower, push along the puck→goal line (fragile).
* ``ZoneBaseline``: over a keep-out box by waypoints (lift, level, down) at the reach baseline's speed.
* ``ArmKinematics``: forward kinematics and fingertip Jacobian on a private ``MjData``.
"""

from robots.baselines.ik import ArmKinematics, dls
from robots.baselines.push import PushBaseline
from robots.baselines.reach import ReachBaseline
from robots.baselines.zone import ZoneBaseline

__all__ = ["ArmKinematics", "PushBaseline", "ReachBaseline", "ZoneBaseline", "dls"]
