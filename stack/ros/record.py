"""``r2s record --sim --policy X.onnx --operator scripted``: intervention logs from the sim robot through ROS 2.

``r2s deploy --sim`` plus an operator node (``stack.ros.operator_node``): the policy drives the sim robot through the
safety node; the operator takes over (all joints or ``--dims``) when the task's progress stalls, through the safety
node's teleop/authority mux, exactly as a human at a leader arm would on the robot; the recorder writes the bag —
proposals, executed commands, authority, per-joint intervention masks, rewards, episodes with outcome and policy
version (the ONNX content hash). ``r2s replay BAG`` fine-tunes from it.

Operators: ``scripted`` (HABC's simulated operator: the task's baseline controller); ``keyboard`` (a human at this
terminal: digits select joints, ``t`` takes over the selection or all, ``+``/``-`` jog, ``r`` releases; keys from
stdin, which must be a terminal or a pipe, or from ``--keys FILE``); ``gamepad`` (a human with a pad: the standard
ROS joy node's ``/joy``, deadman button to take over, axes drive the joints). All three reach the safety node the
same way (``stack.ros.operator_node``), so the bag has the same intervention fields.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

OPERATORS = {"scripted": "the task's baseline controller takes over when progress stalls (HABC's simulated operator)",
             "keyboard": "a human at this terminal takes over selected joints and jogs them (stack.teleop keys)",
             "gamepad": "a human with a gamepad (the ROS joy node's /joy): deadman to take over, axes drive joints"}


def operator_params(stall_steps: int = 20, stall_eps: float = 0.005, takeover_steps: int = 40, max_takeovers: int = 2,
                    dims: list[int] | None = None, max_step_rad: float = 0.1) -> dict:
    """The operator node's parameters (``stack.ros.operator_node.PARAMS``); defaults = the push_habc preset's."""
    return {"operator": "scripted", "stall_steps": int(stall_steps), "stall_eps": float(stall_eps),
            "takeover_steps": int(takeover_steps), "max_takeovers": int(max_takeovers),
            "dims": json.dumps([int(d) for d in dims]) if dims else "", "max_step_rad": float(max_step_rad)}


def human_operator_params(operator: str, keys: str = "", jog_step_rad: float = 0.05, dims: list[int] | None = None,
                          gamepad: str = "", joy_topic: str = "/joy") -> dict:
    """The operator node's parameters for a human operator (``keyboard``: ``keys`` a file or FIFO of keys, empty:
    the node's stdin, inherited from this process; ``gamepad``: ``gamepad`` JSON of ``stack.teleop.GamepadConfig``,
    ``dims`` the joints the deadman takes over)."""
    if operator not in ("keyboard", "gamepad"):
        raise ValueError(f"operator: {operator!r}; expected keyboard or gamepad")
    return {"operator": operator, "input": str(keys), "jog_step_rad": float(jog_step_rad),
            "dims": json.dumps([int(d) for d in dims]) if dims else "", "gamepad": gamepad, "joy_topic": joy_topic}


def keyboard_input_problem(stream=None) -> str | None:
    """Why the keyboard operator cannot read ``stream`` (default stdin), or None: it needs a terminal, a pipe or a
    file."""
    stream = stream if stream is not None else sys.stdin
    try:
        if stream is None or stream.isatty():
            return None if stream is not None else "stdin is closed"
        mode = os.fstat(stream.fileno()).st_mode
    except (OSError, ValueError, AttributeError) as e:
        return f"stdin cannot be read ({e})"
    if stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode):
        return None
    return "stdin is neither a terminal nor a pipe or file"


def record(policy: str | Path, task: str | None = None, episodes: int = 10, bag_dir: str | Path | None = None,
           seed: int = 0, operator: dict | None = None, log_dir: str | Path | None = None, status: bool = True,
           sim_params: dict | None = None) -> dict:
    """Run ``episodes`` sim episodes (episode k seeded ``seed + k``) with an operator (default: the scripted one;
    ``human_operator_params`` for a keyboard or gamepad); the deploy summary plus ``bag`` and the bag's ``logs info``
    summary (``log``)."""
    from stack.data.logs import read_log, summary
    from stack.ros.deploy import DeployError, deploy

    if episodes < 1:
        raise DeployError(f"--episodes {episodes}: expected >= 1")
    bag_dir = Path(bag_dir or f"r2s_record_{datetime.now(UTC):%Y%m%d_%H%M%S}")
    params = {"sim": {"seed": int(seed), "reset_delay_s": 0.2, **(sim_params or {})}}
    # 7.5 s episodes at real time, plus start-up: generous, the run ends when the episodes have
    out = deploy(str(policy), sim=True, task=task, episodes=episodes, bag_dir=str(bag_dir), params=params,
                 log_dir=str(log_dir) if log_dir else None, status=status, duration=60.0 + 20.0 * episodes,
                 operator=operator or operator_params())
    ends = out.get("episodes", [])
    if len(ends) < episodes:
        raise DeployError(f"record: {len(ends)} of {episodes} episodes ended before the time limit; node logs in "
                          f"{out['log_dir']}")
    bag = out.get("bag", str(bag_dir))
    out["bag"] = bag
    out["log"] = {k: v for k, v in summary(read_log(bag)).items() if k not in ("topics", "per_episode")}
    return out


def cmd_record(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s record", description="run a policy on the sim robot through the ROS 2 "
                                "graph with an operator able to take over; record the intervention log (MCAP bag)")
    p.add_argument("--sim", action="store_true", help="the sim robot (digital twin) as the hardware (required)")
    p.add_argument("--policy", required=True, help="exported ONNX policy")
    p.add_argument("--operator", default="scripted", help="scripted | keyboard | gamepad. keyboard needs an "
                   "interactive terminal (keys act at once: 1-9 select joints, 0 clear, t take over the selection or "
                   "all, + / - jog, r or space release, s/e/y/n episode marks, q quit) or keys piped into stdin or "
                   "given with --keys; gamepad reads sensor_msgs/Joy on /joy (run the ROS joy node)")
    p.add_argument("--keys", default="", help="keyboard: a file or FIFO of keys instead of stdin (one key, run of "
                   "keys or mark per line)")
    p.add_argument("--jog-step", type=float, default=0.05, help="keyboard: rad per + / -")
    p.add_argument("--gamepad", default="", help="gamepad: JSON of stack.teleop.GamepadConfig (axes, speed, deadzone, "
                   "deadman, marks, timeout_s)")
    p.add_argument("--task", default=None, help="the task to simulate (default: matched to the policy)")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=0, help="episode k is reset with seed + k")
    p.add_argument("--out", default=None, help="bag directory (default: r2s_record_<UTC time>)")
    p.add_argument("--dims", type=int, nargs="+", default=None,
                   help="joint indices the operator commands (default: all); the others stay with the policy")
    p.add_argument("--stall-steps", type=int, default=20)
    p.add_argument("--takeover-steps", type=int, default=40)
    p.add_argument("--max-takeovers", type=int, default=2)
    p.add_argument("--log-dir", default=None, help="where the nodes' logs go (default: a temporary directory)")
    args = p.parse_args(argv)
    if args.operator not in OPERATORS:
        print(f"r2s record: --operator {args.operator!r}: expected one of {sorted(OPERATORS)}", file=sys.stderr)
        return 2
    if not args.sim:
        print("r2s record: only --sim is built; on a robot, `r2s deploy` records the bag while a human commands "
              "/r2s/teleop/joint_command (or the operator node with operator:=keyboard|gamepad runs beside it)",
              file=sys.stderr)
        return 2
    if args.operator == "keyboard" and not args.keys:
        problem = keyboard_input_problem()
        if problem:
            print(f"r2s record: --operator keyboard needs an interactive terminal or keys piped into stdin ({problem});"
                  " run it in a terminal, pipe the keys in, or pass --keys FILE", file=sys.stderr)
            return 2
    if args.keys and not Path(args.keys).exists():
        print(f"r2s record: --keys {args.keys}: no such file or FIFO", file=sys.stderr)
        return 2
    from stack.ros.deploy import DeployError

    if args.operator == "scripted":
        op = operator_params(stall_steps=args.stall_steps, takeover_steps=args.takeover_steps,
                             max_takeovers=args.max_takeovers, dims=args.dims)
    else:
        keys = str(Path(args.keys).resolve()) if args.keys else ""
        op = human_operator_params(args.operator, keys, args.jog_step, args.dims, args.gamepad)
    terminal = _save_terminal() if args.operator == "keyboard" else None
    try:
        # the keyboard operator's feedback shares the terminal: no status line then
        out = record(args.policy, args.task, args.episodes, args.out, args.seed, op, args.log_dir,
                     status=args.operator != "keyboard")
    except DeployError as e:
        print(f"r2s record: {e}", file=sys.stderr)
        return 1
    finally:
        _restore_terminal(terminal)
    log = out["log"]
    print(json.dumps({"bag": out["bag"], "task": out.get("task"), "log_dir": out.get("log_dir"),
                      "exit_codes": out.get("exit_codes"), "episodes": log["episodes"], "steps": log["steps"],
                      "interventions": log["interventions"], "intervened_episodes": log["intervened_episodes"],
                      "human_share": log["human_share"], "outcomes": log["outcomes"],
                      "policy_versions": log["policy_versions"]}))
    return 0


def _save_terminal():
    """stdin's terminal settings (the keyboard operator node switches the shared terminal to cbreak mode)."""
    try:
        if sys.stdin.isatty():
            import termios

            return sys.stdin.fileno(), termios.tcgetattr(sys.stdin.fileno())
    except (OSError, ValueError):
        pass
    return None


def _restore_terminal(saved) -> None:
    if saved is not None:
        import termios

        try:
            termios.tcsetattr(saved[0], termios.TCSADRAIN, saved[1])
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    raise SystemExit(cmd_record(sys.argv[1:]))
