"""``sim_robot_node``: the MuJoCo model of a robot exposed as ROS 2 hardware — the digital twin.

It looks like a ros2_control robot from the outside: it publishes ``joint_states`` at ``sim_rate_hz`` and accepts
the same command interfaces as the real controllers — ``std_msgs/Float64MultiArray`` joint positions on the forward
controller's topic (spec joint order) and ``trajectory_msgs/JointTrajectory`` on the trajectory controller's topic
(joints by name, followed by linear interpolation between points from the command in force when it arrived).

Physics runs in its own thread, ``sim_rate_hz`` ticks per simulated second of ``timestep × substeps`` each, paced to
wall time × ``real_time_factor`` (1: real time; 0: as fast as it can). Off real time it publishes ``/clock`` (sim
time, starting at 0) and stamps everything with it: run the other nodes with ``use_sim_time:=true``.

With a ``task`` (``sim.registry``: e.g. ``reach``) it is the task's scene and also publishes what the robot side
cannot measure — each ``topic:/name`` segment of the task's observation layout (e.g. ``/r2s/goal``,
``/r2s/ee_pos``) as Float64MultiArray every tick, just before ``joint_states`` — and, every control period
(``frame_skip`` physics steps), the task's reward and success flag for the command in force. Episodes follow the
task's time limit (and termination); each start and end is published on ``/r2s/episode`` with robot, task, seed,
outcome (``success`` when the last control step reports success, else ``failure`` on a terminal state, else
``timeout``), success_step (first successful control step, 1-based), length and return. ``/r2s/sim/reset``
(std_srvs/Trigger) ends the episode (outcome timeout, reason reset) and starts the next; ``auto_reset`` starts the
next one by itself, up to ``episodes``. The first episode starts at activation, or with ``wait_for_reset`` at the
first reset call (``r2s deploy`` makes that call once the policy is active and the recorder listens, so no episode
runs without them).

Domain randomisation: ``randomization`` (JSON of ``sim.core.DomainRandomization`` fields, drawn per episode by the
task), ``command_latency_s`` (a received command takes effect this much later) and ``joint_noise_std`` (noise on the
published joint positions and velocities).

Calibration: ``robot_overlay`` (empty: the file ``R2S_ROBOT_OVERLAY`` names, if any) is a robot overlay from
``r2s sysid`` (``robots.overlay``): its joint damping, friction loss, armature and servo gains go into the model and
its ``command_delay_substeps`` delays every command by that many physics substeps after the tick it is applied at (on
top of ``command_latency_s``). The model is built by ``stack.ros.sim_twin.build_twin``; configure logs which overlay
it loaded and fails, naming the field, on a malformed overlay or one for another robot.

Benchmark support: ``latency_probe_topic`` (the safety node's stamped executed command) times each command that
answers one of the ``joint_states`` this node published (matched by stamp; a safety hold answers none) from that
stamp to its arrival here; ``stats_path`` writes, as JSON when the node deactivates, the arrival times of hardware
commands, the stamps of the joint_states published, and the stamps and arrival times of the probes.

Run: ``python -m stack.ros.sim_robot_node --ros-args -p robot:=so101 -p task:=reach`` (``r2s-sim-robot-node``).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque

import mujoco
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from stack.ros import topics
from stack.ros.common import (
    QOS_RELIABLE, SUCCESS, BadMessage, JointMatcher, R2sNode, declare_parameters, load_robot, run_node, set_stamp,
    stamp_ns, status_array,
)
from stack.ros.episode_tracker import EpisodeTracker
from stack.ros.sim_twin import build_twin, robot_model_path  # noqa: F401  (robot_model_path: its old home)

PARAMS = {
    "robot": ("so101", "registered robot name"),
    "task": ("", "task (sim.registry name) whose scene, observations, reward and episodes to simulate; empty: robot"),
    "task_kwargs": ("{}", "JSON keyword arguments of the task, e.g. {\"max_episode_steps\": 200}"),
    "model_path": ("", "MJCF of the robot without a task (empty: the spec's model_source)"),
    "control_rate_hz": (0.0, "override of the spec's control rate (0: the spec's)"),
    "sim_rate_hz": (100.0, "joint_states rate; the physics steps timestep x substeps per tick"),
    "real_time_factor": (1.0, "1: real time, >1 faster, 0: as fast as possible (off 1: publishes /clock)"),
    "publish_clock": (False, "publish /clock sim time even at real time"),
    "seed": (0, "episode k is reset with seed + k"),
    "randomization": ("{}", "JSON DomainRandomization fields, e.g. {\"mass\": [0.8, 1.2]} (with a task)"),
    "command_latency_s": (0.0, "delay before a received command takes effect"),
    "robot_overlay": ("", "robot overlay from r2s sysid (calibrated joint parameters, command delay in physics "
                          "substeps); empty: the file R2S_ROBOT_OVERLAY names, if any"),
    "joint_noise_std": (0.0, "std of Gaussian noise on published joint positions and velocities"),
    "auto_reset": (True, "start the next episode when one ends"),
    "episodes": (0, "start no episode after this many (0: no limit)"),
    "reset_delay_s": (0.0, "pause between episodes (sim time)"),
    "episode_listeners": (0, "the first episode waits (at most 10 s) until this many subscribers have matched "
                              "/r2s/episode (r2s deploy: policy, safety, recorder, itself)"),
    "wait_for_reset": (False, "start the first episode on the first reset call, not at activation (r2s deploy "
                              "does, once every node is up)"),
    "joint_states_topic": ("", "(empty: the spec's)"),
    "command_topic": ("", "forward controller topic (empty: the spec's)"),
    "trajectory_topic": ("", "trajectory controller topic (empty: the spec's)"),
    "latency_probe_topic": ("", "stamped JointTrajectory to time from its stamp to its arrival (benchmark)"),
    "stats_path": ("", "write command arrival times and latencies (JSON) here on deactivation (benchmark)"),
    "diagnostics_period_s": (1.0, "period of the /diagnostics status"),
}


class _Trajectory:
    """A JointTrajectory being followed: linear interpolation from the command in force at its start."""

    def __init__(self, start_s: float, q0: np.ndarray, times: np.ndarray, points: np.ndarray):
        self.start_s = start_s
        self.times = np.concatenate(([0.0], times))
        self.points = np.vstack((q0, points))

    def at(self, t: float) -> np.ndarray:
        s = t - self.start_s
        return np.array([np.interp(s, self.times, self.points[:, j]) for j in range(self.points.shape[1])])


class SimRobotNode(R2sNode):
    def __init__(self):
        super().__init__(topics.SIM_ROBOT_NODE)
        self.p = declare_parameters(self, PARAMS)
        self._thread: threading.Thread | None = None
        self._running = False
        self._pubs = {}

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    def on_configure(self, state):
        p = self.p
        try:
            self.spec = spec = load_robot(p.robot, p.control_rate_hz)
            self._build_sim()
        except (KeyError, ValueError, OSError, RuntimeError) as e:
            return self.fail(f"configure: {type(e).__name__}: {e}")
        m = self.model
        self.substeps = max(1, int(round(1.0 / (p.sim_rate_hz * m.opt.timestep))))
        self.tick_s = self.substeps * m.opt.timestep
        self.sim_clock = p.publish_clock or p.real_time_factor != 1.0
        self.rng = np.random.default_rng(p.seed)

        js_topic = p.joint_states_topic or spec.joint_states_topic
        pub = self.add_publisher
        self._pubs = {"js": pub(JointState, js_topic, QOS_RELIABLE)}
        self._pubs.update({name: pub(Float64MultiArray, name, QOS_RELIABLE) for name in self.task_topics})
        if self.task is not None:
            self._pubs["reward"] = pub(Float64, topics.REWARD, QOS_RELIABLE)
            self._pubs["success"] = pub(Bool, topics.SUCCESS, QOS_RELIABLE)
        self._episode_pub = pub(DiagnosticArray, topics.EPISODE, QOS_RELIABLE, lifecycle=False)
        self._diag_pub = pub(DiagnosticArray, topics.DIAGNOSTICS, QOS_RELIABLE, lifecycle=False)
        self._clock_pub = pub(Clock, topics.CLOCK, QOS_RELIABLE, lifecycle=False) if self.sim_clock else None

        self.fwd_topic = p.command_topic or spec.command_topic
        self.traj_joints = JointMatcher(spec.joint_names, p.trajectory_topic or spec.trajectory_topic)
        self.io.subscribe(Float64MultiArray, self.fwd_topic, self._on_forward, QOS_RELIABLE)
        self.io.subscribe(JointTrajectory, p.trajectory_topic or spec.trajectory_topic, self._on_trajectory,
                          QOS_RELIABLE)
        if p.latency_probe_topic:
            self.io.subscribe(JointTrajectory, p.latency_probe_topic, self._on_probe, QOS_RELIABLE)
        self.add_service(Trigger, topics.RESET_SERVICE, self._srv_reset)
        max_steps = self.task.max_episode_steps if self.task is not None else None
        self.episodes = EpisodeTracker(max_steps, p.seed, p.episodes, p.auto_reset, p.reset_delay_s)
        self._js = JointState(name=list(spec.joint_names))
        self.arrivals_ns: list[int] = []
        self.js_stamps_ns: list[int] = []
        self.probe_stamps_ns: list[int] = []
        self.probe_arrivals_ns: list[int] = []
        self.probe_other_ns: list[int] = []
        self._js_stamps: deque = deque()
        self._js_stamp_set: set[int] = set()
        self.overruns = 0
        self.get_logger().info(
            f"configured: {spec.name}" + (f" + task {p.task}" if p.task else "") +
            f", joint_states {js_topic} at {1.0 / self.tick_s:g} Hz ({self.substeps} physics steps a tick), "
            f"real-time factor {p.real_time_factor:g}" + (", publishing /clock" if self.sim_clock else ""))
        self.get_logger().info(self.twin.overlay_line())
        return SUCCESS

    def _build_sim(self) -> None:
        p, spec = self.p, self.spec
        self.twin = twin = build_twin(spec, p.task, p.task_kwargs, p.randomization, p.model_path, p.robot_overlay)
        self.task, self.model, self.data = twin.task, twin.model, twin.data
        self.task_topics, self.frame_skip = twin.task_topics, twin.frame_skip
        self.qadr, self.dadr, self.act_idx = twin.qadr, twin.dadr, twin.act_idx
        self.command_delay = twin.command_delay
        if self.task is not None and abs(self.task.dt - spec.control_period_s) > 1e-9:
            self.get_logger().warning(f"task control period {self.task.dt:g} s differs from the robot's "
                                      f"{spec.control_period_s:g} s: rewards follow the task's")

    def on_activate(self, state):
        p = self.p
        self.episodes = EpisodeTracker(self.episodes.max_steps, p.seed, p.episodes, p.auto_reset, p.reset_delay_s)
        self.sim_time = 0.0
        self._reset_requested = False
        self._listen_deadline = time.monotonic() + 10.0
        self._reset_episode(start=not self.p.wait_for_reset)
        self._running = True
        self.active = True
        self._thread = threading.Thread(target=self._loop, name="physics", daemon=True)
        self._thread.start()
        self.io.start()
        self.add_timer(self.p.diagnostics_period_s, self._publish_diagnostics)
        return super().on_activate(state)

    def on_deactivate(self, state):
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self.io.stop()
        if self.episodes.in_episode and self.episodes.length:
            self._end_episode("timeout", reason="stopped")
        self._write_stats()
        return super().on_deactivate(state)

    # ---- commands -------------------------------------------------------------------------------------------------
    def _now_s(self) -> float:
        return self.sim_time if self.sim_clock else time.monotonic()

    def _on_forward(self, msg: Float64MultiArray) -> None:
        self.arrivals_ns.append(time.time_ns())
        q = np.asarray(msg.data, dtype=np.float64)
        if q.shape != (self.spec.num_joints,) or not np.all(np.isfinite(q)):
            raise BadMessage(f"{self.fwd_topic}: {q.size} values (the robot has {self.spec.num_joints} joints) or "
                             "non-finite: ignored, like a controller would")
        self._pending.append((self._now_s() + self.p.command_latency_s, q))

    def _on_trajectory(self, msg: JointTrajectory) -> None:
        self.arrivals_ns.append(time.time_ns())
        topic = self.traj_joints.topic
        if not msg.points:
            raise BadMessage(f"{topic}: trajectory without points")
        times = np.array([pt.time_from_start.sec + pt.time_from_start.nanosec * 1e-9 for pt in msg.points])
        points = np.array([self.traj_joints.values(msg.joint_names, pt.positions, f"points[{i}].positions")
                           for i, pt in enumerate(msg.points)])
        if not np.all(np.isfinite(points)):
            raise BadMessage(f"{topic}: trajectory with non-finite positions")
        if np.any(times < 0) or np.any(np.diff(times) <= 0):
            raise BadMessage(f"{topic}: time_from_start must increase from >= 0, got {times.tolist()}")
        self._pending.append((self._now_s() + self.p.command_latency_s, (times, points)))

    def _on_probe(self, msg: JointTrajectory) -> None:
        now = time.time_ns()
        stamp = stamp_ns(msg.header.stamp)
        if stamp in self._js_stamp_set:  # a command answering one of our joint_states (not a safety hold)
            self.probe_arrivals_ns.append(now)
            self.probe_stamps_ns.append(stamp)
        else:
            self.probe_other_ns.append(now)

    def _srv_reset(self, request, response):
        self._reset_requested = True
        self._listen_deadline = time.monotonic() + 10.0
        response.success, response.message = True, "episode reset requested"
        return response

    def _apply_commands(self, now_s: float) -> None:
        pending = self._pending
        while pending and pending[0][0] <= now_s:
            _, cmd = pending.popleft()
            if isinstance(cmd, tuple):
                self._traj = _Trajectory(now_s, self.command.copy(), *cmd)
            else:
                self._traj = None
                self.command = cmd
        if self._traj is not None:
            self.command = self._traj.at(now_s)
        if self.task is not None:
            self.task._apply_action(np.clip(self.command, self.task.action_space.low, self.task.action_space.high))
        elif self.spec.control_mode == "effort":
            self.data.ctrl[self.act_idx] = self.command / self.model.actuator_gear[self.act_idx, 0]
        else:
            self.data.ctrl[self.act_idx] = self.command

    # ---- physics loop ---------------------------------------------------------------------------------------------
    def _loop(self) -> None:
        m, d = self.model, self.data
        rtf = self.p.real_time_factor
        next_wall = time.perf_counter()
        while self._running:
            eps = self.episodes
            if self._reset_requested and eps.episode < 0 and not self._listeners_ready():
                pass  # the first episode waits until its audience (the recorder above all) is connected
            elif self._reset_requested or eps.due(self.sim_time):
                if self._reset_requested and eps.in_episode and eps.length:
                    self._end_episode("timeout", reason="reset")
                self._reset_requested = False
                self._reset_episode(start=True)
            self._apply_commands(self._now_s())
            if eps.in_episode and self._ctrl_steps == 0:
                self._before = self.task._pre_step()
            if self.command_delay is None:
                mujoco.mj_step(m, d, nstep=self.substeps)
            else:  # the overlay's command delay: what _apply_commands set acts command_delay_substeps later
                self.command_delay.send(d)
                self.command_delay.step(m, d, self.substeps)
            self.sim_time += self.tick_s
            self._ctrl_steps += self.substeps
            if eps.in_episode and self._ctrl_steps >= self.frame_skip:
                self._control_step()
            self._publish_state()
            if rtf > 0:
                next_wall += self.tick_s / rtf
                delay = next_wall - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                elif delay < -5 * self.tick_s / rtf:  # far behind (a stall): re-anchor instead of racing
                    self.overruns += 1
                    next_wall = time.perf_counter()

    def _listeners_ready(self) -> bool:
        want = self.p.episode_listeners
        if want <= 0 or self._episode_pub.get_subscription_count() >= want:
            return True
        if time.monotonic() > self._listen_deadline:
            self.get_logger().warning(f"starting the first episode with {self._episode_pub.get_subscription_count()} "
                                   f"of {want} episode listeners connected")
            return True
        return False

    def _control_step(self) -> None:
        task = self.task
        self._ctrl_steps = 0
        action = np.clip(self.command, task.action_space.low, task.action_space.high)
        reward, terminated, info = task._reward(action, self._before)
        task._elapsed += 1
        success = bool(info.get("success", False))
        self._pubs["reward"].publish(Float64(data=float(reward)))
        self._pubs["success"].publish(Bool(data=success))
        ended = self.episodes.step(float(reward), success, bool(terminated), self.sim_time)
        if ended is not None:
            self._publish_episode("end", ended)

    def _publish_state(self) -> None:
        d = self.data
        stamp_ns = int(self.sim_time * 1e9) if self.sim_clock else self.now_ns()
        if self._clock_pub is not None:
            clock = Clock()
            set_stamp(clock.clock, stamp_ns)
            self._clock_pub.publish(clock)
        if self.task_topics:
            mujoco.mj_kinematics(self.model, d)
            obs = self.task._observe()
            for name, sl in self.task_topics.items():
                self._pubs[name].publish(Float64MultiArray(data=obs[sl].tolist()))
        q, qd = d.qpos[self.qadr], d.qvel[self.dadr]
        std = self.p.joint_noise_std
        if std > 0:
            q = q + self.rng.normal(0.0, std, q.shape)
            qd = qd + self.rng.normal(0.0, std, qd.shape)
        js = self._js
        set_stamp(js.header.stamp, stamp_ns)
        if self.p.latency_probe_topic:
            self.js_stamps_ns.append(stamp_ns)
            self._js_stamps.append(stamp_ns)
            self._js_stamp_set.add(stamp_ns)
            if len(self._js_stamps) > 4096:
                self._js_stamp_set.discard(self._js_stamps.popleft())
        js.position, js.velocity, js.effort = q.tolist(), qd.tolist(), d.qfrc_actuator[self.dadr].tolist()
        self._pubs["js"].publish(js)

    # ---- episodes -------------------------------------------------------------------------------------------------
    def _reset_episode(self, start: bool) -> None:
        """Reset the scene; ``start``: as the next episode (announced, rewarded), else as its warm-up."""
        eps = self.episodes
        start_values = eps.start() if start and self.task is not None else None
        seed = int(start_values["seed"]) if start_values else eps.warmup_seed()
        self._pending: deque = deque()
        self._traj = None
        self._ctrl_steps = 0
        if self.task is not None:
            self.task.reset(seed=seed)
        else:
            home = np.asarray(self.spec.extra.get("home", np.zeros(self.spec.num_joints)), dtype=np.float64)
            lo, hi = self.spec.pos_limits
            self.data.qpos[self.qadr] = np.clip(home, lo, hi)
            self.data.qvel[:] = 0.0
            mujoco.mj_forward(self.model, self.data)
        self.command = self.data.qpos[self.qadr].copy()
        self._apply_commands(self._now_s())
        if self.command_delay is not None:
            self.command_delay.reset(self.data)  # the reset pose's command holds until the first one falls due
        if start_values:
            self._publish_episode("start", start_values)

    def _end_episode(self, outcome: str, reason: str = "") -> None:
        self._publish_episode("end", self.episodes.end(outcome, reason))

    def _publish_episode(self, event: str, values: dict[str, str]) -> None:
        values = {"episode": values["episode"], "robot": self.spec.name, "task": self.p.task, **values}
        stamp = int(self.sim_time * 1e9) if self.sim_clock else self.now_ns()
        self._episode_pub.publish(status_array(stamp, "episode", event, self.spec.name, values))
        self.get_logger().info(f"episode {values['episode']} {event} " + " ".join(
            f"{k}={v}" for k, v in values.items() if k not in ("robot", "task", "episode")))

    # ---- status ---------------------------------------------------------------------------------------------------
    def _publish_diagnostics(self) -> None:
        lat = (np.array(self.probe_arrivals_ns[-200:]) - np.array(self.probe_stamps_ns[-200:])) / 1e6
        values = {"sim_time_s": f"{self.sim_time:.3f}", "episode": str(self.episodes.episode),
                  "overruns": str(self.overruns), "commands": str(len(self.arrivals_ns)), **self.health_values()}
        if lat.size:
            values["latency_p50_ms"] = f"{np.percentile(lat, 50):.3f}"
            values["latency_p99_ms"] = f"{np.percentile(lat, 99):.3f}"
        self._diag_pub.publish(status_array(self.now_ns(), f"{self.get_name()}: sim", "ok", self.spec.name, values))

    def _write_stats(self) -> None:
        if not self.p.stats_path:
            return
        tmp = self.p.stats_path + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"arrivals_ns": self.arrivals_ns, "js_stamps_ns": self.js_stamps_ns,
                       "probe_stamps_ns": self.probe_stamps_ns, "probe_arrivals_ns": self.probe_arrivals_ns,
                       "probe_other_ns": self.probe_other_ns,
                       "overruns": self.overruns, "tick_s": self.tick_s}, f)
        os.replace(tmp, self.p.stats_path)


def main(argv: list[str] | None = None) -> int:
    return run_node(SimRobotNode, argv)


if __name__ == "__main__":
    raise SystemExit(main())
