"""``r2s <command>``: the one entry point of the stack.

The top level is a plain argparse dispatcher so that ``r2s --help`` and the robot-side commands import neither torch
nor a simulator; each command imports what it needs when it runs. Typed configs (tyro) parse a command's own flags.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable

COMMANDS: dict[str, str] = {
    "demo": "run the whole loop that exists on the embedded default (train in MuJoCo, plot, video, …)",
    "train": "train a policy (PPO, FPO, DPPO, SAC; BC with --algo bc --dataset DIR) from a preset and flags",
    "demos": "record demonstrations from a baseline controller or a trained run (an on-disk episode dataset)",
    "eval": "evaluate a trained run in simulation (return, success rate, optional video)",
    "export": "export a trained policy to one ONNX file with metadata",
    "deploy": "run an exported policy through ROS 2 nodes (real robot or sim robot)",
    "record": "record intervention logs: a policy on the sim robot through ROS 2 with a scripted, keyboard or gamepad "
              "operator",
    "replay": "fine-tune the policy that recorded intervention logs from them (HABC or BC), export, report",
    "sysid": "calibrate the simulator from real logs (real-to-sim)",
    "logs": "inspect recorded bags (logs info BAG: episodes, rates, interventions, outcomes, policy versions) and "
            "convert them (logs convert BAG --to lerobot DIR, DIR --to mcap BAG)",
    "bench": "benchmarks that print JSON (sim, ppo, …)",
    "tasks": "list the simulation tasks and robots",
}

BENCHES: dict[str, str] = {
    "sim": "env-steps/s of the worker pool vs gymnasium's vector envs and the physics limit",
    "ppo": "PPO on a MuJoCo task: final return, wall-clock, steps/s",
    "bc": "behaviour cloning from 'medium' demos: BC return vs the demonstrator's",
    "export": "on-robot inference latency: onnxruntime vs torch per policy variant, FLOPs, RSS",
    "deploy": "closed loop policy → safety → sim robot over ROS 2 (DDS): rate, jitter, latency vs a bare relay",
    "dppo": "DPPO fine-tuning of a BC-pretrained diffusion policy (beside FPO on a flow policy): return before/after",
    "fpo": "FPO / FPO++ vs Gaussian PPO from scratch at the same budget and seeds; multimodality check",
    "arm": "success of every method (PPO, FPO++, DPPO from BC, BC alone, the baseline) on the arm tasks reach and push",
    "faults": "fault injection against the real policy and safety nodes over DDS: hold latency, unsafe commands",
    "habc": "HABC rounds with a simulated operator on push vs plain/filtered BC, viability-only, HG-DAgger (success)",
    "agency": "agency transfer (SAC + baseline arbitration) vs the baseline, residual RL, plain SAC: goal rate, "
              "return, steps-to-goal (zone in --quick; reach, push, zone in full)",
    "variance": "policy-gradient variance with a state-only vs an action-dependent baseline (Wu et al. 2018), "
                "from a fixed checkpoint, many batches of one size (arm in --quick; hopper, halfcheetah, arm in full)",
    "entropy": "PPO with SAC's automatic temperature and entropy-regularised returns vs plain PPO, paired seeds "
               "(reach in --quick; reach and hopper in full)",
    "wpo": "SAC with the Wasserstein policy optimisation actor step vs SAC's, paired seeds (reach in --quick; reach "
           "and hopper in full)",
    "sysid": "real-to-sim: fit a perturbed MuJoCo model from synthetic logs (parameter error, tracking error)",
    "replay": "record with the scripted operator through ROS 2, replay the bag with HABC: success before/after",
}


def cmd_tasks(argv: list[str]) -> int:
    argparse.ArgumentParser(prog="r2s tasks", description=COMMANDS["tasks"]).parse_args(argv)
    import robots
    import sim

    print("tasks: ", ", ".join(sim.list_tasks()))
    print("robots:", ", ".join(robots.list_robots()))
    return 0


def cmd_train(argv: list[str]) -> int:
    cfg = parse_train_config(argv, prog="r2s train")
    from sim.genesis_pool import GenesisUnavailable
    from stack.train import train

    try:
        run_dir = train(cfg)
    except GenesisUnavailable as e:  # env.backend=genesis: the extra lives in its own venv
        print(f"r2s train: {e}", file=sys.stderr)
        return 2
    if os.environ.get("RANK", "0") == "0" and not os.environ.get("R2S_LAUNCHED"):  # one line per run, not per rank
        print(f"run directory: {run_dir}")
    return 0


def cmd_demos(argv: list[str]) -> int:
    from stack.demos import cmd_demos as run

    return run(argv)


def parse_train_config(argv: list[str], prog: str):
    """``[--preset NAME] [flags]``: the preset's values first, then the flags on top."""
    import tyro

    from stack.config import TrainConfig, from_dict, list_presets, split_preset

    preset, rest = split_preset(argv)
    base = from_dict(TrainConfig, preset) if preset is not None else TrainConfig()
    return tyro.cli(TrainConfig, args=rest, default=base, prog=prog,
                    description=f"Train a policy. Presets (--preset): {', '.join(list_presets())}.")


def cmd_eval(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s eval", description=COMMANDS["eval"])
    p.add_argument("run_dir", help="a run directory (runs/<name>)")
    p.add_argument("--episodes", type=int, default=None, help="default: the run's eval_episodes")
    p.add_argument("--seed", type=int, default=None,
                   help="first env seed (default: the run's evaluation seed, 1_000_000 + 1000·seed, so the result "
                        "reproduces the last eval_return of its metrics.csv)")
    p.add_argument("--video", action="store_true", help="write eval.mp4 into the run directory")
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    args = p.parse_args(argv)
    from stack.checkpoint import CheckpointError
    from stack.evaluate import evaluate_run

    try:
        result = evaluate_run(args.run_dir, episodes=args.episodes, seed=args.seed, video=args.video)
    except CheckpointError as e:
        print(f"r2s eval: {e}", file=sys.stderr)
        return 1
    result.pop("returns", None)
    line = (f"{args.run_dir}: return {result['return_mean']:.3f} ± {result['return_std']:.3f} over "
            f"{result['episodes']} episodes (seeds {result['seed']}…)")
    if result["has_success"]:
        line += f", success {100 * result['success_rate']:.0f} %"
    if result["metrics_csv_return"] is not None:
        line += f"; metrics.csv's last eval_return {result['metrics_csv_return']:.3f}"
    print(line)
    if args.json:
        print(json.dumps(result))
    return 0


def cmd_export(argv: list[str]) -> int:
    from stack.export import cmd_export as run

    return run(argv)


def cmd_demo(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s demo", description=COMMANDS["demo"])
    p.add_argument("--quick", action="store_true", help="a tiny budget: checks the loop end to end in ~1 min")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    from stack.demo import run_demo

    summary = run_demo(quick=args.quick, runs_dir=args.runs_dir, name=args.name)
    print(json.dumps(summary))
    return 0


def cmd_bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s bench", description=COMMANDS["bench"],
                                epilog="benchmarks: " + "; ".join(f"{k}: {v}" for k, v in BENCHES.items()))
    p.add_argument("which", help=f"one of {sorted(BENCHES)}")
    p.add_argument("--quick", action="store_true", help="a short run (for CI and a first look)")
    p.add_argument("--task", default=None)
    p.add_argument("--steps", type=int, default=None, help="env-step budget (ppo; agency: per SAC run)")
    p.add_argument("--seed", type=int, default=1, help="the seed of a quick run")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="ppo/bc/dppo: seeds to run and aggregate (mean ± standard error); default: the --seed of a "
                        "--quick run, 1 2 3 in full mode (fpo: its budget's seeds)")
    p.add_argument("--policy", default="diffusion", help="policy kind (bc)")
    p.add_argument("--rate", type=float, default=100.0, help="control rate in Hz (deploy)")
    p.add_argument("--device", default="cpu", help="dppo/fpo: 'cpu', 'cuda' or 'auto'")
    p.add_argument("--backend", default="mujoco", help="sim: the pool's backend, 'mujoco', 'ray' or 'genesis'")
    p.add_argument("--cleanrl", default=None, help="ppo: path to CleanRL's ppo_continuous_action.py, run after ours "
                   "for a side-by-side figure")
    args = p.parse_args(argv)
    if args.which not in BENCHES:
        print(f"r2s bench: unknown benchmark {args.which!r}; available: {sorted(BENCHES)}", file=sys.stderr)
        return 2
    import importlib

    from stack.bench import FULL_SEEDS, over_seeds

    bench = importlib.import_module(f"stack.bench.{args.which}")
    seeds = args.seeds or ([args.seed] if args.quick else list(FULL_SEEDS))
    if args.which == "sim":
        from sim.genesis_pool import GenesisUnavailable

        try:
            result = bench.run(task=args.task, quick=args.quick, backend=args.backend)  # default task: hopper
        except GenesisUnavailable as e:  # the genesis extra lives in its own venv
            print(f"r2s bench sim: {e}", file=sys.stderr)
            return 2
    elif args.which == "ppo":
        steps = args.steps or (100_000 if args.quick else 1_000_000)
        result = over_seeds(bench.run, seeds, task=args.task or "hopper", steps=steps, cleanrl=args.cleanrl)
    elif args.which == "bc":
        result = over_seeds(bench.run, seeds, task=args.task or "hopper", policy=args.policy, quick=args.quick)
    elif args.which == "deploy":
        result = bench.run(rate=args.rate, quick=args.quick)
    elif args.which == "dppo":
        result = over_seeds(bench.run, seeds, task=args.task or "hopper", quick=args.quick, device=args.device)
    elif args.which == "fpo":  # no --task: reach (quick) or halfcheetah then reach (full); seeds by its budget
        result = bench.run(task=args.task, quick=args.quick, device=args.device, seeds=args.seeds)
    elif args.which == "habc":  # stack.bench.habc.run(quick=..., seeds=...) -> dict
        result = bench.run(quick=args.quick, seeds=args.seeds or ([args.seed] if args.quick else None))
    elif args.which == "agency":  # stack.bench.agency.run(quick=..., seeds=..., tasks=...) -> dict
        result = bench.run(quick=args.quick, seeds=args.seeds or ([args.seed] if args.quick else None),
                           tasks=[args.task] if args.task else None, steps=args.steps)
    elif args.which == "arm":  # stack.bench.arm.run(quick=..., seeds=...) -> dict
        result = bench.run(quick=args.quick, seeds=args.seeds, device=args.device)
    elif args.which in ("entropy", "wpo"):  # 3 paired seeds even in --quick (a learning claim)
        if args.task and args.task not in bench.FULL_STEPS:
            print(f"r2s bench {args.which}: --task {args.task!r}; expected one of {sorted(bench.FULL_STEPS)}",
                  file=sys.stderr)
            return 2
        # --task: that task alone, at --steps or its full budget
        steps = {args.task: args.steps or bench.FULL_STEPS[args.task]} if args.task else None
        result = bench.run(quick=args.quick, seeds=args.seeds, steps=steps)
    elif args.which in ("variance", "sysid", "replay"):  # run(quick=..., seeds=...) -> dict
        result = bench.run(quick=args.quick, seeds=args.seeds or ([args.seed] if args.quick else None))
    elif args.which == "faults":  # stack.bench.faults.run(quick=...) -> dict (needs the ROS 2 wheels)
        result = bench.run(quick=args.quick)
    else:
        result = bench.run(quick=args.quick)
    print(json.dumps(result))
    return 0


def cmd_logs(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s logs", description=COMMANDS["logs"])
    sub = p.add_subparsers(dest="action", required=True)
    info = sub.add_parser("info", help="episodes, duration, rate per topic, interventions, outcomes, policy versions")
    info.add_argument("bag", help="a bag directory (rosbag2, MCAP) or one .mcap file")
    info.add_argument("--json", action="store_true", help="print one line of JSON (for scripts)")
    convert = sub.add_parser("convert", help="a bag → LeRobotDataset v3.0 (--to lerobot) and back (--to mcap)")
    convert.add_argument("src", help="a bag (--to lerobot) or a dataset `--to lerobot` wrote (--to mcap)")
    convert.add_argument("--to", required=True, choices=["lerobot", "mcap"], help="what to write")
    convert.add_argument("out", help="the dataset folder or bag directory to write (new or empty)")
    convert.add_argument("--fps", type=float, default=None, help="frame rate (default: the control rate)")
    args = p.parse_args(argv)
    if args.action == "convert":
        from stack.data.convert import convert_cli

        return convert_cli(args.src, args.to, args.out, args.fps)
    import warnings

    from stack.data.logs import format_summary, read_log, summary

    try:
        with warnings.catch_warnings(record=True) as caught:  # damage is warned about on stderr, never raised
            warnings.simplefilter("always")
            result = summary(read_log(args.bag))
    except FileNotFoundError as e:
        print(f"r2s logs {args.action}: {e}", file=sys.stderr)
        return 2
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(json.dumps(result) if args.json else format_summary(result))
    return 0


def _rclpy_missing(command: str) -> bool:
    """True (after saying what to install) where rclpy cannot be imported: the ROS 2 commands need it."""
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        print(f"r2s {command}: rclpy cannot be imported ({e}); install the ROS 2 extra (pip install "
              "'r2s-stack[ros]') or source a ROS 2 Jazzy/Kilted install", file=sys.stderr)
        return True
    return False


def cmd_deploy(argv: list[str]) -> int:
    if _rclpy_missing("deploy"):
        return 2
    from stack.ros.deploy import cmd_deploy as deploy_main

    return deploy_main(argv)


def cmd_record(argv: list[str]) -> int:
    if _rclpy_missing("record"):
        return 2
    from stack.ros.record import cmd_record as record_main

    return record_main(argv)


def cmd_replay(argv: list[str]) -> int:
    from stack.log_replay import cmd_replay as replay_main

    return replay_main(argv)


def cmd_sysid(argv: list[str]) -> int:
    from stack.sysid_cmd import main as sysid_main

    return sysid_main(argv)


HANDLERS: dict[str, Callable[[list[str]], int]] = {
    "demo": cmd_demo,
    "train": cmd_train,
    "demos": cmd_demos,
    "eval": cmd_eval,
    "export": cmd_export,
    "deploy": cmd_deploy,
    "record": cmd_record,
    "replay": cmd_replay,
    "logs": cmd_logs,
    "sysid": cmd_sysid,
    "bench": cmd_bench,
    "tasks": cmd_tasks,
}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering, set before anything imports mujoco
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="r2s",
        description="r2s — real-to-sim control stack: train in MuJoCo, export to ONNX, deploy through ROS 2.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {k:<8} {v}" for k, v in COMMANDS.items())
        + "\n\n`r2s <command> --help` for a command's options.",
    )
    parser.add_argument("command", nargs="?", help="see the list below")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in HANDLERS:
        print(f"r2s: unknown command {command!r}; commands are: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return HANDLERS[command](rest) or 0


if __name__ == "__main__":
    sys.exit(main())
