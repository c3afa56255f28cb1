"""``r2s deploy --policy model.onnx --robot NAME [--sim]``: the node graph as separate processes, without the ROS CLI.

``deploy()`` starts ``python -m stack.ros.<node>`` for the sim robot (``--sim``), the recorder, the safety node and
the policy node, each with the parameter files ``launch/<robot>.yaml`` (when this is a source checkout) and a
generated one carrying the command line's values; drives each through configure → activate with the lifecycle
services, in that order (joint_states exist before the policy checks their names); with ``--sim`` and a task,
starts the first episode only then (``/r2s/sim/reset``), so every episode runs under the policy and is recorded;
prints a live status line
(policy rate and step time, observation age, authority, e-stop, hold, episodes); and on Ctrl-C (or after
``duration``) stops the nodes one by one — policy, safety, sim, recorder, so the log sees the end — with SIGINT,
waiting ``stop_timeout_s`` for each before killing it. Without ``--sim`` the robot's own ros2_control stack must
already publish joint_states and accept the spec's command topic.

Children run in their own session (a terminal's Ctrl-C reaches only this process, which then stops them in order)
and are sent SIGTERM by the kernel if this process dies. Their output goes to ``<log_dir>/<node>.log``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from stack.ros import topics

REPO_LAUNCH_DIR = Path(__file__).resolve().parents[2] / "launch"

NODES: dict[str, tuple[str, str]] = {
    # key -> (node name, module); console script: r2s-<key with - >-node
    "sim": (topics.SIM_ROBOT_NODE, "stack.ros.sim_robot_node"),
    "recorder": (topics.RECORDER_NODE, "stack.ros.recorder_node"),
    "safety": (topics.SAFETY_NODE, "stack.ros.safety_node"),
    "policy": (topics.POLICY_NODE, "stack.ros.policy_node"),
    "operator": ("r2s_operator", "stack.ros.operator_node"),  # r2s record: a scripted operator taking over
    "episodes": (topics.EPISODE_NODE, "stack.ros.episode_node"),  # a robot: the operator marks the episodes
}
START_ORDER = ("sim", "recorder", "safety", "policy", "operator", "episodes")
STOP_ORDER = ("episodes", "operator", "policy", "safety", "sim", "recorder")
CONSOLE_SCRIPTS = {
    "r2s-policy-node": "stack.ros.policy_node:main",
    "r2s-safety-node": "stack.ros.safety_node:main",
    "r2s-sim-robot-node": "stack.ros.sim_robot_node:main",
    "r2s-recorder-node": "stack.ros.recorder_node:main",
    "r2s-episode-node": "stack.ros.episode_node:main",
}


class DeployError(RuntimeError):
    """A node did not start, configure or activate; the message carries the end of its log."""


try:  # resolved here, not in the forked child (which must not load libraries while other threads may hold locks)
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):
    _PRCTL = None
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child: SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``), so no node outlives ``deploy``."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident set (VmHWM) of a live process, MB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def loaded_torch(pid: int) -> bool:
    """Whether a live process has a torch library mapped (the robot-side nodes must never load it)."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return any("libtorch" in line or "/torch/" in line for line in f)
    except OSError:
        return False


@dataclass
class NodeProcess:
    key: str
    name: str
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, n: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def last_error(self) -> str:
        """The node's last logged error (why a transition failed), or a note that it logged none."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        errors = [line for line in lines if "[ERROR]" in line]
        if not errors:
            return "(the node logged no error)"
        text = errors[-1]
        return text.split("]: ", 1)[1] if "]: " in text else text


@dataclass
class Graph:
    """The node graph as child processes and a small rclpy client that drives their lifecycles."""

    params: dict[str, dict]
    """node key -> parameter overrides (written to a generated YAML file)."""
    params_files: list[str] = field(default_factory=list)
    log_dir: Path | None = None
    env: dict[str, str] | None = None
    nodes: dict[str, NodeProcess] = field(default_factory=dict)

    def __post_init__(self):
        self.log_dir = Path(self.log_dir or tempfile.mkdtemp(prefix="r2s_deploy_"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        overrides = {NODES[k][0]: {"ros__parameters": v} for k, v in self.params.items()}
        self.generated_params = self.log_dir / "params.yaml"
        import yaml

        self.generated_params.write_text(yaml.safe_dump(overrides, sort_keys=False))
        self._client = None

    # ---- processes ------------------------------------------------------------------------------------------------
    def start(self, keys) -> None:
        env = {**os.environ, **(self.env or {}), "PYTHONUNBUFFERED": "1"}
        env.setdefault("OMP_NUM_THREADS", "1")
        for key in keys:
            name, module = NODES[key]
            cmd = [sys.executable, "-m", module, "--ros-args", "-r", f"__node:={name}"]
            for f in [*self.params_files, str(self.generated_params)]:
                cmd += ["--params-file", f]
            log_path = self.log_dir / f"{key}.log"
            log = open(log_path, "w")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                    preexec_fn=_die_with_parent)
            log.close()
            self.nodes[key] = NodeProcess(key, name, proc, log_path)

    def stop(self, timeout_s: float = 10.0) -> dict[str, int]:
        """SIGINT each node in ``STOP_ORDER``, wait for it, SIGKILL after ``timeout_s``; returns exit codes."""
        codes = {}
        for key in [k for k in STOP_ORDER if k in self.nodes]:
            proc = self.nodes[key].proc
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            codes[key] = proc.returncode
        if self._client is not None:
            self._client.close()
            self._client = None
        return codes

    def check_alive(self) -> None:
        for n in self.nodes.values():
            if n.proc.poll() is not None:
                raise DeployError(f"{n.name} exited with code {n.proc.returncode}:\n{n.log_tail()}")

    # ---- lifecycle ------------------------------------------------------------------------------------------------
    @property
    def client(self) -> "LifecycleClient":
        if self._client is None:
            self._client = LifecycleClient()
        return self._client

    def up(self, keys, timeout_s: float = 60.0) -> None:
        """Configure then activate each node in turn; ``DeployError`` (with its log) if one refuses."""
        for key in keys:
            n = self.nodes[key]
            for transition in ("configure", "activate"):
                ok = self.client.transition(n.name, transition, timeout_s, alive=lambda p=n.proc: p.poll() is None)
                if not ok:
                    if n.proc.poll() is not None:
                        why = f"the process exited with code {n.proc.returncode}"
                    else:
                        why = n.last_error()
                    raise DeployError(f"{n.name}: {transition} failed: {why}\n--- end of {n.log_path}:\n"
                                      f"{n.log_tail()}")

    def peak_rss_mb(self) -> dict[str, float | None]:
        return {k: peak_rss_mb(n.proc.pid) for k, n in self.nodes.items()}


class LifecycleClient:
    """An rclpy node in this process calling the nodes' ``change_state`` services (and watching status topics)."""

    TRANSITIONS = {"configure": 1, "cleanup": 2, "activate": 3, "deactivate": 4}
    STATES = {"configure": ("unconfigured", "inactive"), "cleanup": ("inactive", "unconfigured"),
              "activate": ("inactive", "active"), "deactivate": ("active", "inactive")}

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions

        self.rclpy = rclpy
        self.owns_context = not rclpy.ok()
        if self.owns_context:
            rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node(f"r2s_deploy_{os.getpid()}")
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)

    def transition(self, node_name: str, transition: str, timeout_s: float, alive=lambda: True) -> bool:
        """Ask ``node_name`` for a lifecycle transition; whether it succeeded (never waits past ``timeout_s``).

        Why a restarted node used to miss its first request: a node killed without a goodbye (SIGKILL, a crash)
        stays known to DDS until its participant's lease runs out (about 20 s), services included. For a client,
        ``wait_for_service`` then succeeds at once — on the dead incarnation's service — and a request sent before
        the new process has created its own is delivered to no one and never answered; a client that does not send
        again waits forever. So the request is sent only once the node has *answered* ``get_state`` (proof that a
        live incarnation is there, in the state the transition starts from). Unanswered requests are still checked
        with ``get_state`` and sent again while the node stays in the start state; a repeated request refused
        because the first one went through counts as success (the state says so). ``requests_sent`` counts the
        change_state requests of the last call.
        """
        from lifecycle_msgs.srv import ChangeState, GetState

        start, goal = self.STATES[transition]
        change = self.node.create_client(ChangeState, f"/{node_name}/change_state")
        get = self.node.create_client(GetState, f"/{node_name}/get_state")
        deadline = time.monotonic() + timeout_s
        futures, sent = [], 0.0
        self.requests_sent = 0
        try:
            label = self._live_state(get, deadline, alive)
            if label is None or label == goal:
                return label == goal
            if label != start:
                return False
            while time.monotonic() < deadline and alive():
                if sent == 0.0:  # (re)send
                    if not change.wait_for_service(timeout_sec=0.2):
                        continue
                    req = ChangeState.Request()
                    req.transition.id = self.TRANSITIONS[transition]
                    futures.append(change.call_async(req))
                    self.requests_sent += 1
                    sent = time.monotonic()
                self.executor.spin_once(timeout_sec=0.05)
                if any(f.done() and f.result().success for f in futures):
                    return True
                if any(f.done() for f in futures):
                    # Refused — or a repeated request refused after the first one went through (or was lost).
                    state = self._call(get, GetState.Request(), 2.0, alive)
                    return state is not None and state.current_state.label == goal
                if time.monotonic() - sent > 1.5:
                    state = self._call(get, GetState.Request(), 1.0, alive) if get.service_is_ready() else None
                    label = state.current_state.label if state is not None else None
                    if label == goal:
                        return True  # a request arrived; its answer was lost
                    if label not in (start, None):
                        return False
                    if label == start:  # idle in the start state: the request may have been lost; send again
                        sent = 0.0
                    else:
                        sent = time.monotonic()  # busy in the transition (a model loading…): keep waiting
            return False
        finally:
            self.node.destroy_client(change)
            self.node.destroy_client(get)

    def _live_state(self, get, deadline: float, alive) -> str | None:
        """The node's state label once a live incarnation answers ``get_state`` (None: none did by ``deadline``)."""
        from lifecycle_msgs.srv import GetState

        while time.monotonic() < deadline and alive():
            if not get.wait_for_service(timeout_sec=0.2):
                continue
            state = self._call(get, GetState.Request(), min(1.0, max(0.0, deadline - time.monotonic())), alive)
            if state is not None:
                return state.current_state.label
        return None

    def _call(self, client, request, timeout_s: float, alive):
        future = client.call_async(request)
        end = time.monotonic() + max(0.0, timeout_s)
        while not future.done():
            if time.monotonic() > end or not alive():
                client.remove_pending_request(future)
                return None
            self.executor.spin_once(timeout_sec=0.05)
        return future.result()

    def trigger(self, service: str, timeout_s: float = 10.0) -> bool:
        """Call a std_srvs/Trigger service; whether it succeeded."""
        from std_srvs.srv import Trigger

        client = self.node.create_client(Trigger, service)
        try:
            if not client.wait_for_service(timeout_sec=timeout_s):
                return False
            future = client.call_async(Trigger.Request())
            deadline = time.monotonic() + timeout_s
            while not future.done() and time.monotonic() < deadline:
                self.executor.spin_once(timeout_sec=0.1)
            return future.done() and future.result().success
        finally:
            self.node.destroy_client(client)

    def spin(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.executor.spin_once(timeout_sec=max(0.0, min(0.1, end - time.monotonic())))

    def close(self) -> None:
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        if self.owns_context:
            self.rclpy.try_shutdown()


class StatusLine:
    """Collects the nodes' diagnostics and episode events into one line."""

    def __init__(self, client: LifecycleClient):
        from diagnostic_msgs.msg import DiagnosticArray
        from std_msgs.msg import Bool

        from stack.ros.common import QOS_LATCHED, QOS_RELIABLE

        self.policy: dict[str, str] = {}
        self.safety: dict[str, str] = {}
        self.sim: dict[str, str] = {}
        self.estop = False
        self.episodes: list[dict[str, str]] = []
        node = client.node
        node.create_subscription(DiagnosticArray, topics.DIAGNOSTICS, self._on_diag, QOS_RELIABLE)
        node.create_subscription(DiagnosticArray, topics.EPISODE, self._on_episode, QOS_RELIABLE)
        node.create_subscription(Bool, topics.ESTOP_STATE, lambda m: setattr(self, "estop", m.data), QOS_LATCHED)

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            values = {kv.key: kv.value for kv in st.values}
            if st.name.endswith(": policy"):
                self.policy = values
            elif st.name.endswith(": safety"):
                self.safety = values
            elif st.name.endswith(": sim"):
                self.sim = values

    def _on_episode(self, msg) -> None:
        if msg.status and msg.status[0].message == "end":
            self.episodes.append({kv.key: kv.value for kv in msg.status[0].values})

    def line(self) -> str:
        p, s = self.policy, self.safety
        wins = sum(e.get("outcome") == "success" for e in self.episodes)
        parts = [
            f"rate {p.get('rate_hz', '-')} Hz",
            f"step {p.get('step_mean_ms', '-')} ms",
            f"obs age {p.get('obs_age_mean_ms', '-')} ms",
            f"authority {s.get('authority', '-')}",
            f"e-stop {'LATCHED' if self.estop else 'off'}",
            f"hold {s.get('hold_reason') or '-'}" if s.get("holding") == "True" else "hold -",
        ]
        if "latency_p50_ms" in self.sim:
            parts.append(f"latency p50 {self.sim['latency_p50_ms']} ms")
        if self.episodes:
            parts.append(f"episodes {len(self.episodes)} ({wins} success)")
        return "[r2s] " + " | ".join(parts)


def policy_robot(policy_path: str) -> str:
    """The robot named in an exported policy's metadata."""
    import onnxruntime as ort

    try:
        meta = ort.InferenceSession(str(policy_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    except Exception as e:
        raise DeployError(f"--policy {policy_path}: not a loadable ONNX model ({e})") from None
    robot = meta.custom_metadata_map.get("robot", "")
    if not robot:
        raise DeployError(f"--policy {policy_path}: the model's metadata names no robot (not exported by "
                          "`r2s export`?); pass --robot")
    return robot


def task_for(policy_path: str, robot: str) -> str:
    """The registered task whose robot and observation layout are the policy's (for ``--sim`` without ``--task``)."""
    import onnxruntime as ort

    from robots.spec import obs_layout_from_json

    meta = ort.InferenceSession(str(policy_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    layout = obs_layout_from_json(meta.custom_metadata_map["obs_layout"])
    if not any(s.source.startswith("topic:") for s in layout):
        return ""
    import sim.registry

    for name in sim.registry.list_tasks():
        try:
            cls = sim.registry.task_class(name)
        except Exception:
            continue
        if getattr(cls, "robot", None) is not None and cls.robot.name == robot and tuple(cls.obs_layout) == layout:
            return name
    raise DeployError(f"no registered task for robot {robot!r} has the policy's observation layout "
                      f"{[s.name for s in layout]}; pass --task")


def check_sim_overlay(policy_path: str, robot: str, task: str, robot_overlay: str | None,
                      set_overlay: str | None = None) -> tuple[str, str | None]:
    """The sim robot's overlay, checked before any node starts: ``--set sim.robot_overlay=…`` (``set_overlay``), else
    ``--robot-overlay`` (``robot_overlay``), else the file ``R2S_ROBOT_OVERLAY`` names — the order the node sees them.
    Returns its absolute path ("": none) and the warning to give (None: none) when it is not the overlay the policy
    was trained with (``stack.run_overlay.deploy_mismatch`` on the policy's metadata). A file that cannot be read, is
    malformed, is another robot's, or is given to a task that takes no overlay is a ``DeployError`` naming the
    source."""
    from robots.overlay import OVERLAY_ENV, overlay_path
    from stack import run_overlay

    if set_overlay:
        source, path = "--set sim.robot_overlay", str(set_overlay)
    elif robot_overlay:
        source, path = "--robot-overlay", str(robot_overlay)
    else:
        source, path = OVERLAY_ENV, overlay_path()
    record = None
    if path:
        path = str(Path(path).resolve())
        try:
            record = run_overlay.overlay_record(path, robot)
        except ValueError as e:
            raise DeployError(f"{source}: {e}") from None
        if task and not run_overlay.takes_overlay(task):
            raise DeployError(f"{source}={path}: task {task!r} takes no robot overlay")
    try:
        import onnxruntime as ort

        props = ort.InferenceSession(policy_path, providers=["CPUExecutionProvider"]).get_modelmeta() \
            .custom_metadata_map
    except Exception as e:
        raise DeployError(f"--policy {policy_path}: not a loadable ONNX model ({e})") from None
    return path, run_overlay.deploy_mismatch(dict(props), record)


def deploy(policy_path: str, robot: str | None = None, sim: bool = False, duration: float | None = None, *,
           task: str | None = None, record: bool = True, bag_dir: str | None = None, params_file: str | None = None,
           params: dict[str, dict] | None = None, episodes: int = 0, log_dir: str | None = None,
           status: bool = True, stop_timeout_s: float = 10.0, ready_timeout_s: float = 60.0,
           rt_priority: int = 0, stop_event: threading.Event | None = None, operator: dict | None = None,
           operator_episodes: bool = False, robot_overlay: str | None = None) -> dict:
    """Run the graph until ``duration`` s, Ctrl-C, ``stop_event``, or (``--sim`` with ``episodes``, or
    ``operator_episodes``) that many episodes ended. Returns a summary: exit codes, episode outcomes, bag directory,
    log directory, peak RSS. ``operator``: also start the operator node (``stack.ros.operator_node``) with these
    parameters. ``operator_episodes``: the operator marks the episodes (``stack.ros.episode_node``: topic, services,
    keyboard keys) and the safety node homes the arm between them (``home_between_episodes``). ``robot_overlay``
    (with ``sim``): the sim robot runs with this ``r2s sysid`` overlay (its ``robot_overlay`` parameter; checked here
    first, so a bad file stops the deploy before any node starts); without it the sim robot reads
    ``R2S_ROBOT_OVERLAY``, which is checked up front the same way (``check_sim_overlay``). An overlay other than the
    one the policy was trained with (its metadata's ``robot_overlay_hash``) is warned about on stderr and listed in the
    summary's ``warnings``."""
    policy_path = str(Path(policy_path).resolve())
    if not Path(policy_path).is_file():
        raise DeployError(f"--policy {policy_path}: no such file (an ONNX policy from `r2s export`)")
    robot = robot or policy_robot(policy_path)
    if sim and task is None:
        task = task_for(policy_path, robot)
    task = task or ""
    if robot_overlay and not sim:
        raise DeployError("--robot-overlay: only the sim robot (--sim) takes an overlay; a real robot is "
                          "calibrated, not overlaid")
    if operator_episodes and sim and task:
        raise DeployError(f"--operator-episodes with --sim task {task!r}: the simulated task marks its own episodes")
    warnings_out: list[str] = []
    if sim:
        robot_overlay, warning = check_sim_overlay(policy_path, robot, task, robot_overlay,
                                                   (params or {}).get("sim", {}).get("robot_overlay"))
        if warning:
            print(f"r2s deploy: WARNING: {warning}", file=sys.stderr, flush=True)
            warnings_out.append(warning)
    keys = [k for k in START_ORDER if (k != "sim" or sim) and (k != "recorder" or record)
            and (k != "operator" or operator is not None) and (k != "episodes" or operator_episodes)]
    common = {"robot": robot}
    node_params: dict[str, dict] = {
        "policy": {**common, "policy_path": policy_path},
        "safety": {**common, **({"home_between_episodes": True} if operator_episodes else {})},
        "sim": {**common, "task": task, "episodes": int(episodes), "wait_for_reset": True,
                **({"robot_overlay": robot_overlay} if robot_overlay else {}),
                "episode_listeners": 2 + int(record) + int(bool(status or episodes)) + int(operator is not None)},
        "recorder": {**common, "task": task,
                     "output_dir": str(Path(bag_dir).resolve()) if bag_dir else ""},
        "operator": {**common, "task": task, **(operator or {})},
        "episodes": {**common, "task": task},
    }
    for key, values in (params or {}).items():
        node_params.setdefault(key, {}).update(values)
    if sim and robot_overlay:  # the file checked above, by its absolute path (whichever source named it)
        node_params["sim"]["robot_overlay"] = robot_overlay
    sim_p = node_params["sim"]
    if sim and (float(sim_p.get("real_time_factor", 1.0)) != 1.0 or sim_p.get("publish_clock")):
        # The sim stamps with /clock time then: the nodes that check stamp ages must run on the same clock.
        for key in ("policy", "safety"):
            node_params[key].setdefault("use_sim_time", True)
    files = [params_file] if params_file else []
    default_yaml = REPO_LAUNCH_DIR / f"{robot}.yaml"
    if not params_file and default_yaml.is_file():
        files = [str(default_yaml)]
    from stack.ros.common import RT_PRIORITY_ENV

    graph = Graph({k: v for k, v in node_params.items() if k in keys}, files, log_dir,
                  env={RT_PRIORITY_ENV: str(int(rt_priority))} if rt_priority else None)

    stop = stop_event or threading.Event()
    interrupted = []

    def on_sigint(signum, frame):
        if interrupted:  # a second Ctrl-C: stop waiting on the nodes
            for n in graph.nodes.values():
                if n.proc.poll() is None:
                    n.proc.kill()
        interrupted.append(signum)
        stop.set()

    in_main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGINT, on_sigint) if in_main else None
    summary: dict = {"log_dir": str(graph.log_dir), "robot": robot, "task": task, "warnings": warnings_out}
    tty = sys.stdout.isatty()
    try:
        graph.start(keys)
        graph.up(keys, ready_timeout_s)
        line = StatusLine(graph.client) if status or episodes else None
        if sim and task:
            # The sim starts episode 0 once everyone listening to episodes is connected to it (episode_listeners):
            # policy, safety, recorder, this status line.
            if not graph.client.trigger(topics.RESET_SERVICE):
                raise DeployError(f"the sim robot did not start the first episode:\n{graph.nodes['sim'].log_tail()}")
        t_end = time.monotonic() + duration if duration else float("inf")
        last_print = 0.0
        while not stop.is_set() and time.monotonic() < t_end:
            graph.client.spin(0.1)
            graph.check_alive()
            if line is not None and status and time.monotonic() - last_print >= (1.0 if tty else 5.0):
                last_print = time.monotonic()
                print(("\r" + line.line() + "\x1b[K") if tty else line.line(), end="" if tty else "\n", flush=True)
            if episodes and line is not None and len(line.episodes) >= episodes:
                break
        if tty and status:
            print()
        summary["episodes"] = list(line.episodes) if line is not None else []
        summary["peak_rss_mb"] = graph.peak_rss_mb()
    finally:
        summary["exit_codes"] = graph.stop(stop_timeout_s)
        if in_main:
            signal.signal(signal.SIGINT, old)
    rec = graph.nodes.get("recorder")
    if rec is not None:
        for text in rec.log_path.read_text(errors="replace").splitlines():
            if "recording to " in text:
                summary["bag"] = text.split("recording to ", 1)[1].strip()
    summary["interrupted"] = bool(interrupted)
    return summary


def _parse_set(items: list[str]) -> dict[str, dict]:
    """``node.param=value`` (value parsed as YAML: numbers, booleans, strings, lists) -> {node: {param: value}}."""
    import yaml

    out: dict[str, dict] = {}
    for item in items:
        key, sep, value = item.partition("=")
        node, dot, param = key.partition(".")
        if not sep or not dot or node not in NODES:
            raise SystemExit(f"--set {item!r}: expected NODE.PARAM=VALUE with NODE one of {list(NODES)}")
        parsed = yaml.safe_load(value)
        # A mapping stays text: ROS parameters are flat, and the JSON ones (task_kwargs, randomization) are strings.
        out.setdefault(node, {})[param] = value if isinstance(parsed, dict) else parsed
    return out


def cmd_deploy(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s deploy", description="run an exported policy through the ROS 2 nodes "
                                "(policy → safety → robot, recorded) as separate processes")
    p.add_argument("--policy", required=True, help="exported ONNX policy")
    p.add_argument("--robot", default=None, help="robot name (default: the one in the policy's metadata)")
    p.add_argument("--sim", action="store_true", help="start the sim robot (digital twin) as the hardware")
    p.add_argument("--task", default=None, help="with --sim: the task to simulate (default: matched to the policy)")
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    p.add_argument("--episodes", type=int, default=0, help="with --sim (or --operator-episodes): stop after this "
                   "many episodes")
    p.add_argument("--operator-episodes", action="store_true",
                   help="the operator marks episode start/end/success/failure (/r2s/episode_event, "
                        "/r2s/episode/<mark> services, python -m stack.ros.keyboard_operator); the arm homes between "
                        "episodes")
    p.add_argument("--robot-overlay", default=None, metavar="FILE",
                   help="with --sim: the robot overlay from `r2s sysid` (calibrated joint parameters and command "
                        "delay) the sim robot runs with (default: the file R2S_ROBOT_OVERLAY names, if any; either is "
                        "checked before any node starts, and one other than the policy's training overlay is warned "
                        "about)")
    p.add_argument("--bag", default=None, help="bag directory (default: r2s_bag_<UTC time>)")
    p.add_argument("--no-record", action="store_true", help="do not start the recorder")
    p.add_argument("--params", default=None, help="parameter YAML (default: launch/<robot>.yaml if present)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
                   help=f"override a node parameter; NODE is one of {list(NODES)}")
    p.add_argument("--log-dir", default=None, help="where the nodes' logs go (default: a temporary directory)")
    p.add_argument("--rt-priority", type=int, default=0,
                   help="run the nodes under SCHED_FIFO at this priority (recommended on a robot; needs "
                        "CAP_SYS_NICE; 0: normal scheduling)")
    args = p.parse_args(argv)
    try:
        summary = deploy(args.policy, args.robot, sim=args.sim, duration=args.duration, task=args.task,
                         record=not args.no_record, bag_dir=args.bag, params_file=args.params,
                         params=_parse_set(args.set), episodes=args.episodes, log_dir=args.log_dir,
                         rt_priority=args.rt_priority, operator_episodes=args.operator_episodes,
                         robot_overlay=args.robot_overlay)
    except DeployError as e:
        print(f"r2s deploy: {e}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary.get(k) for k in ("robot", "task", "bag", "log_dir", "exit_codes", "peak_rss_mb")}
                     | {"episodes": len(summary.get("episodes", [])),
                        "successes": sum(e.get("outcome") == "success" for e in summary.get("episodes", []))}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cmd_deploy(sys.argv[1:]))
