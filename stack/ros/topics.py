"""Topic and service names of the r2s node graph and the standard message type each carries.

This is also the schema of the recorded MCAP log (``recorder_node``): custom messages cannot be generated from the
PyPI wheels, so every record uses a standard type. Conventions:

* A **named vector with a stamp** is a ``sensor_msgs/JointState`` (``name`` = element names, ``position`` = values)
  or a one-point ``trajectory_msgs/JointTrajectory`` (``joint_names``, ``points[0].positions``).
* The stamp of a policy step is the time of its observation's oldest source: the ``header.stamp`` of the
  ``joint_states`` message it was read from (normally), or a task topic's arrival time if that is older (a silent
  task topic), so that the safety node can refuse a command built on old data. The proposal, the executed command
  and the observation of that step all carry it, so a log reader can join them.
* Every node validates each message where it arrives; a malformed one is dropped and counted (``dropped`` and
  ``dropped:<topic>`` in the node's ``DIAGNOSTICS`` values), never an error that ends the node.
* Robot topics (``joint_states``, the hardware command topics) come from the robot's ``RobotSpec``.

Per step (one control period): ``OBSERVATION``, ``PROPOSAL`` (policy), ``EXECUTED`` + ``AUTHORITY`` +
``INTERVENTION_MASK`` + ``SAFETY_STATUS`` (safety, published together, in this order after the hardware command),
``REWARD`` + ``SUCCESS`` (sim robot, where a task defines them). Per episode: ``EPISODE`` events (the sim's, or on a
robot the episode node's, from the operator's ``EPISODE_EVENT`` marks). Latched (transient local): ``POLICY_INFO``,
``ESTOP_STATE``.
"""

from __future__ import annotations

# ---- policy node ---------------------------------------------------------------------------------------------------
PROPOSAL = "/r2s/policy/proposal"
"""trajectory_msgs/JointTrajectory: the policy's command for one step; header.stamp = the observation's stamp (its
oldest source), ``points[0].time_from_start`` = one control period. The safety node's input. NaN positions: the
policy refused this step (stale or non-finite observation, failed inference) and the safety node holds. A proposal
without a stamp is dropped by the safety node: the age of its observation cannot be checked."""
OBSERVATION = "/r2s/policy/observation"
"""sensor_msgs/JointState used as a named vector: ``name`` = ``"<segment>[i]"`` per observation element (the obs
layout), ``position`` = the observation the policy stepped on (also a refused one, with its NaN)."""
POLICY_INFO = "/r2s/policy/info"
"""diagnostic_msgs/DiagnosticArray, latched: robot, policy_version (the ONNX content hash), run_id, policy_type,
control_rate_hz, obs_layout, action_names, path."""

# ---- safety node ---------------------------------------------------------------------------------------------------
EXECUTED = "/r2s/safety/executed"
"""trajectory_msgs/JointTrajectory: the command sent to the hardware, stamped with its source's stamp (the policy
step's, the teleop message's) or the time of the hold."""
AUTHORITY = "/r2s/safety/authority"
"""std_msgs/String per executed command: ``policy`` | ``human`` | ``baseline`` (who has authority). An e-stop reset
returns it to the safety node's ``reset_authority`` (default ``policy``), published at once with a hold."""
INTERVENTION_MASK = "/r2s/safety/intervention_mask"
"""std_msgs/Float64MultiArray per executed command: 1.0 for each joint not commanded by the policy (a human or the
baseline commanded it, or the safety layer held it), else 0.0; joint order = the robot spec's."""
SAFETY_STATUS = "/r2s/safety/status"
"""std_msgs/String per executed command: ``ok``, ``homing`` (moving to the home pose), or ``hold: <reason>``
(``e-stop``, ``deactivated``, ``joint_states stale …``, ``implausible joint_states: …``, ``policy observation stale
…``, ``no policy command``, ``non-finite policy command`` …). The last one a stopping safety node sends is
``hold: deactivated``."""
ESTOP_STATE = "/r2s/safety/estop_state"
"""std_msgs/Bool, latched: whether the e-stop is latched."""
ESTOP = "/r2s/estop"
"""std_msgs/Bool in: ``true`` latches the e-stop (``false`` does nothing: only the reset service releases it)."""
ESTOP_SERVICE = "/r2s/safety/estop"
"""std_srvs/Trigger: latch the e-stop."""
RESET_ESTOP_SERVICE = "/r2s/safety/reset_estop"
"""std_srvs/Trigger: release a latched e-stop."""
TELEOP_COMMAND = "/r2s/teleop/joint_command"
"""sensor_msgs/JointState in: a human's joint-position command (e.g. a leader arm's joint_states); joints by name,
a subset allowed (the other joints stay with the policy)."""
BASELINE_COMMAND = "/r2s/baseline/command"
"""trajectory_msgs/JointTrajectory in: a hand-written baseline controller's command."""
AUTHORITY_REQUEST = "/r2s/authority_request"
"""std_msgs/String in: ``policy`` | ``human`` | ``baseline`` — who should command the robot."""

# ---- sim robot (and task) ------------------------------------------------------------------------------------------
EPISODE = "/r2s/episode"
"""diagnostic_msgs/DiagnosticArray, one status named ``episode``, ``message`` = ``start`` | ``end``; values:
episode, robot, task, seed, and at the end outcome (success | failure | timeout), success_step, length, return,
reason. The recorder adds policy_version (and run_id) from ``POLICY_INFO``. The episode node's (operator marks) carry
source ``operator``, duration_s, reason, note, and an outcome only when one was marked (success | failure)."""
REWARD = "/r2s/task/reward"
"""std_msgs/Float64 per control step of a task: the reward for the command executed during it."""
SUCCESS = "/r2s/task/success"
"""std_msgs/Bool per control step of a task: the task's success flag after it."""
RESET_SERVICE = "/r2s/sim/reset"
"""std_srvs/Trigger: end the current episode (outcome timeout, reason reset) and start the next."""

# ---- operator's episode marks (a real robot: episode node) ---------------------------------------------------------
EPISODE_EVENT = "/r2s/episode_event"
"""std_msgs/String in: an operator's mark ``start`` | ``end`` | ``success`` | ``failure`` (optionally ``: note``).
The episode node turns the marks into ``EPISODE`` events: success/failure end the open episode with that outcome,
end ends it without one (kept, excluded from outcome labels), start begins the next. Recorded as sent."""
EPISODE_SERVICES = {mark: f"/r2s/episode/{mark}" for mark in ("start", "end", "success", "failure")}
"""std_srvs/Trigger per mark: the same as the topic, with a reply (``success`` False: refused, ``message`` why)."""
CLOCK = "/clock"
"""rosgraph_msgs/Clock: sim time, published by the sim robot when it runs off real time."""
DIAGNOSTICS = "/diagnostics"
"""diagnostic_msgs/DiagnosticArray: each node's status (loop period, inference time, queue, holds …)."""

# ---- node names ----------------------------------------------------------------------------------------------------
POLICY_NODE = "r2s_policy"
SAFETY_NODE = "r2s_safety"
SIM_ROBOT_NODE = "r2s_sim_robot"
RECORDER_NODE = "r2s_recorder"
EPISODE_NODE = "r2s_episodes"

STEP_TOPICS = (OBSERVATION, PROPOSAL, EXECUTED, AUTHORITY, INTERVENTION_MASK, SAFETY_STATUS, REWARD, SUCCESS)
"""The per-step topics the recorder writes by default (beside joint_states, the hardware command, the task
observations, episodes, policy info, e-stop state and diagnostics)."""

TYPES: dict[str, tuple[str, bool]] = {
    PROPOSAL: ("trajectory_msgs/msg/JointTrajectory", False),
    OBSERVATION: ("sensor_msgs/msg/JointState", False),
    POLICY_INFO: ("diagnostic_msgs/msg/DiagnosticArray", True),
    EXECUTED: ("trajectory_msgs/msg/JointTrajectory", False),
    AUTHORITY: ("std_msgs/msg/String", False),
    INTERVENTION_MASK: ("std_msgs/msg/Float64MultiArray", False),
    SAFETY_STATUS: ("std_msgs/msg/String", False),
    ESTOP_STATE: ("std_msgs/msg/Bool", True),
    ESTOP: ("std_msgs/msg/Bool", False),
    TELEOP_COMMAND: ("sensor_msgs/msg/JointState", False),
    BASELINE_COMMAND: ("trajectory_msgs/msg/JointTrajectory", False),
    AUTHORITY_REQUEST: ("std_msgs/msg/String", False),
    EPISODE: ("diagnostic_msgs/msg/DiagnosticArray", False),
    EPISODE_EVENT: ("std_msgs/msg/String", False),
    REWARD: ("std_msgs/msg/Float64", False),
    SUCCESS: ("std_msgs/msg/Bool", False),
}
"""The r2s topics with their (message type, latched): the recorder subscribes to these at once, before their
publishers exist, so that nothing published early (the policy's latched info, the first episode) is missed."""
