"""``r2s record --sim --policy X.onnx --operator scripted``: intervention logs from the sim robot through ROS 2.

``r2s deploy --sim`` plus an operator node (``stack.ros.operator_node``): the policy drives the sim robot through the
safety node; the operator takes over (all joints or ``--dims``) when the task's progress stalls, through the safety
node's teleop/authority mux, exactly as a human at a leader arm would on the robot; the recorder writes the bag —
proposals, executed commands, authority, per-joint intervention masks, rewards, episodes with outcome and policy
version (the ONNX content hash). ``r2s replay BAG`` fine-tunes from it.

Operators: ``scripted`` (HABC's simulated operator: the task's baseline controller). ``keyboard`` and ``gamepad``
are not built: they are refused with a message saying so.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

OPERATORS = {"scripted": "the task's baseline controller takes over when progress stalls (HABC's simulated operator)"}
NOT_BUILT = {"keyboard": "a keyboard operator taking over the arm (its episode keys s/e/y/n exist for a real robot: "
                         "`python -m stack.ros.keyboard_operator` beside `r2s deploy --operator-episodes`)",
             "gamepad": "a gamepad operator"}


def operator_params(stall_steps: int = 20, stall_eps: float = 0.005, takeover_steps: int = 40, max_takeovers: int = 2,
                    dims: list[int] | None = None, max_step_rad: float = 0.1) -> dict:
    """The operator node's parameters (``stack.ros.operator_node.PARAMS``); defaults = the push_habc preset's."""
    return {"operator": "scripted", "stall_steps": int(stall_steps), "stall_eps": float(stall_eps),
            "takeover_steps": int(takeover_steps), "max_takeovers": int(max_takeovers),
            "dims": json.dumps([int(d) for d in dims]) if dims else "", "max_step_rad": float(max_step_rad)}


def record(policy: str | Path, task: str | None = None, episodes: int = 10, bag_dir: str | Path | None = None,
           seed: int = 0, operator: dict | None = None, log_dir: str | Path | None = None, status: bool = True,
           sim_params: dict | None = None) -> dict:
    """Run ``episodes`` sim episodes (episode k seeded ``seed + k``) with the scripted operator; the deploy summary
    plus ``bag`` and the bag's ``logs info`` summary (``log``)."""
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
    p.add_argument("--operator", default="scripted", help=f"one of {sorted(OPERATORS)} (not built: "
                   f"{sorted(NOT_BUILT)})")
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
    if args.operator in NOT_BUILT:
        print(f"r2s record: --operator {args.operator} is not built in this version of r2s ({NOT_BUILT[args.operator]}"
              f"); use --operator scripted, or publish a human's commands on /r2s/teleop/joint_command and authority "
              f"on /r2s/authority_request while `r2s deploy` records", file=sys.stderr)
        return 2
    if args.operator not in OPERATORS:
        print(f"r2s record: --operator {args.operator!r}: expected one of {sorted(OPERATORS)}", file=sys.stderr)
        return 2
    if not args.sim:
        print("r2s record: only --sim is built (the scripted operator needs the simulated task's state); on a robot, "
              "`r2s deploy` records the bag while a human commands /r2s/teleop/joint_command", file=sys.stderr)
        return 2
    from stack.ros.deploy import DeployError

    op = operator_params(stall_steps=args.stall_steps, takeover_steps=args.takeover_steps,
                         max_takeovers=args.max_takeovers, dims=args.dims)
    try:
        out = record(args.policy, args.task, args.episodes, args.out, args.seed, op, args.log_dir)
    except DeployError as e:
        print(f"r2s record: {e}", file=sys.stderr)
        return 1
    log = out["log"]
    print(json.dumps({"bag": out["bag"], "task": out.get("task"), "log_dir": out.get("log_dir"),
                      "exit_codes": out.get("exit_codes"), "episodes": log["episodes"], "steps": log["steps"],
                      "interventions": log["interventions"], "intervened_episodes": log["intervened_episodes"],
                      "human_share": log["human_share"], "outcomes": log["outcomes"],
                      "policy_versions": log["policy_versions"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(cmd_record(sys.argv[1:]))
