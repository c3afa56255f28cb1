"""``r2s demo``: the whole loop that exists, on the embedded default (the SO-101 arm reaching in MuJoCo).

Stages so far: train a Gaussian policy with PPO in the worker pool (progress bar; delta joint targets, converted to
absolute ones inside the exported policy) → evaluate it beside the task's
hand-written baseline controller on the same seeds → learning-curve plot and a rollout video in the run directory →
export it to one ONNX file (parity-checked) → run that file through the torch-free robot runtime in MuJoCo → run it
through the ROS 2 nodes (policy → safety → sim robot, separate processes over DDS, ``r2s deploy --sim``) for a few
episodes, recorded to a rosbag2 MCAP bag → replay the bag: read it back without ROS and feed its recorded
observations through the same ONNX file, checking every recorded proposal is reproduced → record, replay, fine-tune
on push: a weak flow policy cloned from the push baseline's demos runs through the ROS 2 graph with the scripted
operator (the baseline takes over when progress stalls, through the safety node's mux; ``r2s record``), the bag is
replayed with HABC's intervention-aware credit (``r2s replay --algo habc``: a new exported policy), and the new
policy's success is printed beside the old one's on the same evaluation seeds. Without rclpy the two ROS 2 stages
are skipped with a message.
Each later stage of the stack (real-to-sim) adds itself here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.runs import default_run_name

DEMO_TASK = "reach"


DEMO_TASK_KWARGS = {"action_mode": "delta"}
"""The policy moves each joint target at most ``delta_scale`` rad per step from the measured position (see
``sim.tasks.arm``): PPO on absolute targets reached 2 % success at 150k steps, on delta targets 96–100 % at 300k (3
seeds). The exported ONNX graph adds the delta to the observed joint positions: the robot receives absolute targets."""


def demo_config(quick: bool, runs_dir: str, name: str | None) -> TrainConfig:
    steps = 40_960 if quick else 307_200
    return TrainConfig(
        algo="ppo",
        policy="gaussian",
        env=EnvConfig(task=DEMO_TASK, num_envs=8, task_kwargs=dict(DEMO_TASK_KWARGS)),
        # A 100-step goal-reaching task: shorter horizon (γ 0.95), a calmer initial policy (σ ≈ 0.37 of the delta
        # range) and fewer, larger minibatches than the locomotion defaults — measured to learn faster here.
        ppo=PPOConfig(rollout_steps=128, hidden=(64, 64), gamma=0.95, log_std_init=-1.0, update_epochs=5,
                      num_minibatches=8),
        total_env_steps=steps,
        eval_every=steps // 4,
        eval_episodes=5 if quick else 20,
        checkpoint_every=steps,
        video=True,
        name=name or default_run_name("demo", DEMO_TASK),
        runs_dir=runs_dir,
    )


def run_demo(quick: bool = False, runs_dir: str = "runs", name: str | None = None) -> dict:
    from stack.evaluate import evaluate_baseline, evaluate_run
    from stack.train import train

    t0 = time.perf_counter()
    cfg = demo_config(quick, runs_dir, name)
    _stage(1, f"train PPO on '{DEMO_TASK}' for {cfg.total_env_steps:,} env steps ({cfg.env.num_envs} envs)")
    run_dir = Path(train(cfg))

    episodes = 10 if quick else 50
    _stage(2, f"evaluate the trained policy and the baseline controller on the same {episodes} seeds")
    policy = evaluate_run(run_dir, episodes=episodes, seed=10_000)
    baseline = evaluate_baseline(DEMO_TASK, episodes=episodes, seed=10_000)
    for who, r in (("policy", policy), ("baseline", baseline)):
        print(f"    {who:<9} success {r['success_rate']:.0%}  return {r['return_mean']:8.2f}"
              f"  steps to success {r.get('success_step_mean', float('nan')):.1f}")

    _stage(3, "export the policy to ONNX (normalisation inside, metadata for the robot, parity check)")
    from stack.export import export_run

    exported = export_run(run_dir)
    print(f"    {exported['path']}: parity max |onnx − torch| = {exported['parity_max_abs_err']:.2e}")
    _stage(4, "run the ONNX file through the torch-free runtime (stack.runtime) in MuJoCo, same seeds")
    onnx_eval = evaluate_onnx(exported["path"], DEMO_TASK, episodes=episodes, seed=10_000)
    print(f"    runtime   success {onnx_eval['success_rate']:.0%}  return {onnx_eval['return_mean']:8.2f}")

    ros = ros_stage(exported["path"], run_dir, episodes=2 if quick else 5)
    replayed = replay_stage(quick, run_dir, runs_dir)

    summary = {
        "run_dir": str(run_dir),
        "task": DEMO_TASK,
        "env_steps": cfg.total_env_steps,
        "policy_success_rate": policy["success_rate"],
        "policy_return": policy["return_mean"],
        "baseline_success_rate": baseline["success_rate"],
        "baseline_return": baseline["return_mean"],
        "onnx": exported["path"],
        "onnx_parity_max_abs_err": exported["parity_max_abs_err"],
        "onnx_success_rate": onnx_eval["success_rate"],
        "onnx_return": onnx_eval["return_mean"],
        "learning_curve": str(run_dir / "learning_curve.png"),
        "video": str(run_dir / "rollout.mp4") if (run_dir / "rollout.mp4").exists() else None,
        **(ros or {"ros": "skipped: rclpy not importable"}),
        **replayed,
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (run_dir / "demo_summary.json").write_text(json.dumps(summary, indent=2))
    _stage(8, f"outputs in {run_dir}: learning_curve.png, rollout.mp4, policy.onnx, metrics.csv, checkpoints/"
           + (", bag/ (MCAP), ros_logs/" if ros else "")
           + (", replay_bag/, replay/ (the fine-tuned run, replay_report.md)" if "replay_bag" in replayed else ""))
    return summary


def ros_stage(policy_path: str, run_dir: Path, episodes: int) -> dict | None:
    """Stages 5–6: the exported policy through the ROS 2 node graph against the sim robot, recorded; then the
    recorded bag replayed offline through the same ONNX file. ``None`` where rclpy cannot be imported."""
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        _stage(5, f"ROS 2 stage skipped: rclpy cannot be imported ({e}); pip install 'r2s-stack[ros]'")
        return None
    from stack.ros.deploy import deploy

    _stage(5, f"deploy through ROS 2: policy → safety → sim robot as separate processes, {episodes} episodes, "
              "recorded to MCAP")
    bag = run_dir / "bag"
    summary = deploy(policy_path, sim=True, task=DEMO_TASK, episodes=episodes, bag_dir=str(bag),
                     log_dir=str(run_dir / "ros_logs"), params={"sim": {"seed": 10_000, "reset_delay_s": 0.2}},
                     duration=30.0 + 15.0 * episodes)
    ends = summary.get("episodes", [])
    wins = sum(e.get("outcome") == "success" for e in ends)
    print(f"    ROS 2     {len(ends)} episodes, {wins} success; exit codes {summary['exit_codes']}; "
          f"peak RSS {summary.get('peak_rss_mb')}")
    _stage(6, f"replay the bag {summary.get('bag', bag)} without ROS: recorded observations → the ONNX policy → "
              "compare with the recorded proposals")
    replay = replay_bag(summary.get("bag", str(bag)), policy_path)
    print(f"    replay    {replay['steps']} steps of {replay['episodes']} episodes, max |replayed − recorded| = "
          f"{replay['max_abs_diff']:.2e}")
    return {"ros_episodes": len(ends), "ros_success_rate": wins / len(ends) if ends else 0.0,
            "ros_exit_codes": summary["exit_codes"], "ros_peak_rss_mb": summary.get("peak_rss_mb"),
            "bag": summary.get("bag", str(bag)), "replay_steps": replay["steps"],
            "replay_max_abs_diff": replay["max_abs_diff"]}


REPLAY_DEMO_BUDGET = {"quick": dict(demo_episodes=20, pretrain_steps=300, episodes=2, bc_steps=100, critic_steps=100,
                                      eval_episodes=5),
                      "full": dict(demo_episodes=100, pretrain_steps=3000, episodes=12, bc_steps=1000,
                                   critic_steps=2000, eval_episodes=20)}
"""The demo's record → replay round: the full budget's start policy is ``r2s bench replay``'s (``r2s bench habc``'s,
cached in the runs folder) with fewer recorded episodes (12 of 30, ~8 s each at real time) and evaluation seeds;
``--quick`` only shows the stage runs."""


def replay_stage(quick: bool, run_dir: Path, runs_dir: str) -> dict:
    """Stage 7: a weak BC flow policy on push recorded through ROS 2 with the scripted operator (``r2s record``), the
    bag replayed with HABC (``r2s replay --algo habc``), the new policy's success beside the old one's on the same
    seeds. ``{"replay": "skipped: …"}`` where rclpy cannot be imported."""
    try:
        import rclpy  # noqa: F401
    except ImportError as e:
        _stage(7, f"record → replay stage skipped: recording needs ROS 2, rclpy cannot be imported ({e}); "
                  "pip install 'r2s-stack[ros]'")
        return {"replay": f"skipped: rclpy not importable ({e})"}
    from stack.bench.habc import Budget
    from stack.bench.replay import TASK, start_policy
    from stack.log_replay import ReplayConfig, replay
    from stack.ros.record import record

    b = REPLAY_DEMO_BUDGET["quick" if quick else "full"]
    _stage(7, f"record → replay on {TASK}: a weak BC flow policy ({b['demo_episodes']} baseline demos) through ROS 2 "
              f"for {b['episodes']} episodes with the scripted operator taking over on stalled progress (r2s "
              "record), the bag replayed with HABC (r2s replay), success before/after on "
              f"{b['eval_episodes']} seeds")
    start_budget = Budget(demo_episodes=b["demo_episodes"], pretrain_steps=b["pretrain_steps"], rounds=1,
                          rollouts_per_round=0, bc_steps=b["bc_steps"], critic_steps=b["critic_steps"],
                          eval_episodes=b["eval_episodes"])
    start_run, policy = start_policy(1, runs_dir, start_budget)
    rec = record(policy, TASK, b["episodes"], run_dir / "replay_bag", seed=1000, log_dir=run_dir / "replay_ros_logs",
                 status=False)
    log = rec["log"]
    print(f"    record    {log['episodes']} episodes, {log['outcomes'].get('success', 0)} success, "
          f"{log['interventions']} takeovers, {log['human_share']:.0%} of steps under the operator")
    report = replay([rec["bag"]], ReplayConfig(algo="habc", runs_dir=runs_dir, out_dir=str(run_dir / "replay"),
                                               bc_steps=b["bc_steps"], critic_steps=b["critic_steps"],
                                               eval_episodes=b["eval_episodes"]))
    print(f"    replay    success {report['success_before']:.0%} → {report['success_after']:.0%} "
          f"(version {report['init_version']} → {report['new_version']}, {report['new_policy']})")
    return {"replay_start_run": str(start_run), "replay_bag": rec["bag"], "replay_episodes": log["episodes"],
            "replay_interventions": log["interventions"], "replay_human_share": log["human_share"],
            "replay_exit_codes": rec.get("exit_codes"), "replay_episodes_used": report["episodes_used"],
            "replay_interventions_used": report["interventions_used"],
            "replay_success_before": report["success_before"], "replay_success_after": report["success_after"],
            "replay_new_policy": report["new_policy"], "replay_new_version": report["new_version"],
            "replay_report": str(run_dir / "replay" / "replay_report.md")}


def replay_bag(bag: str | Path, policy_path: str) -> dict:
    """Feed a recorded bag's observations, in order, through an exported deterministic policy (history and queue
    reset at each recorded episode start, as the policy node does) and compare with the proposals recorded for the
    same joint_states stamps."""
    import numpy as np

    from sim.registry import task_class
    from stack.ros import topics
    from stack.ros.bag import read_bag
    from stack.runtime import OnnxPolicy

    log = read_bag(bag)
    cls = task_class(DEMO_TASK)
    policy = OnnxPolicy.load(policy_path, cls.robot, cls.obs_layout)
    stamp = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec)  # noqa: E731
    proposals = {stamp(m): np.asarray(m.points[0].positions) for _, m in log.get(topics.PROPOSAL, [])}
    starts = sorted(t for t, m in log.get(topics.EPISODE, []) if m.status and m.status[0].message == "start")
    events = sorted([(t, 0, None) for t in starts] + [(t, 1, m) for t, m in log.get(topics.OBSERVATION, [])],
                    key=lambda e: (e[0], e[1]))
    diffs = []
    for _, kind, msg in events:
        if kind == 0:
            policy.reset()
            continue
        command = policy.step(np.asarray(msg.position))
        recorded = proposals.get(stamp(msg))
        if recorded is not None and np.all(np.isfinite(recorded)):
            diffs.append(float(np.max(np.abs(command - recorded))))
    if not diffs:
        raise ValueError(f"replay: no recorded observation in {bag} has a recorded proposal to compare with")
    return {"steps": len(diffs), "episodes": len(starts), "max_abs_diff": max(diffs)}


def _stage(i: int, text: str) -> None:
    print(f"[demo {i}] {text}", flush=True)


def evaluate_onnx(path: str, task: str, episodes: int, seed: int) -> dict:
    """Evaluate an exported policy as the robot runs it: one ``OnnxPolicy`` (history, chunk queue) per env."""
    import numpy as np

    from sim.registry import make_task
    from stack.evaluate import run_episodes
    from stack.runtime import OnnxPolicy

    envs = [make_task(task) for _ in range(episodes)]
    runners = [OnnxPolicy.load(path, envs[0].robot, envs[0].obs_layout) for _ in range(episodes)]
    try:
        out = run_episodes(envs, lambda obs, idx: np.stack([runners[i].step(o) for o, i in zip(obs, idx)]), seed)
    finally:
        for env in envs:
            env.close()
    out.pop("frames")
    return out
