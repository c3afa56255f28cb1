"""``r2s replay BAG... --algo habc|bc``: fine-tune the policy that produced intervention logs, from those logs.

(``stack.replay`` is the off-policy replay *buffer*; this module replays recorded *bags*.)

1. **Read** each bag (``stack.data.logs.read_log``): per step the observation, the policy's proposal, the executed
   command, authority and per-joint intervention mask; per episode outcome, success step and policy version (the
   ONNX content hash).
2. **Which policy**: the version most episodes were recorded by, found among the runs (``<runs>/*/policy.onnx``'s
   ``content_hash``), or the run given with ``--init-from`` (a run directory, or an exported ONNX file whose
   ``run_id`` names one). Episodes of another version are the stale cutoff's (``HABCConfig.max_policy_lag``): they
   are written with a version older than the cutoff, dropped by ``build_data`` and counted in the report; a log with
   no episode of the policy fine-tuned is refused. Episodes without an outcome are excluded (and counted).
3. **Training set**: the episodes become an episode dataset (``stack.data.EpisodeWriter``, the fields HABC's
   in-process rounds store), actions in the policy's action space (a delta policy's absolute commands converted back
   to deltas from the measured joints; the proposal on the dimensions the policy commanded, the executed command on
   the operator's), read with HABC's intervention-aware credit (``stack.runners.habc.build_data``:
   outcome labels only after the last intervention, intervention windows imitation targets) beside the policy's
   demonstrations (its run's ``dataset``, weight 1).
4. **Fine-tune** with one HABC update (critic heads → gate g → weighted BC; ``--algo bc``: uniform weights on the same
   data), **export** a new ONNX policy (new content hash) into a new run directory, **evaluate** before and after in
   sim on the same seeds, and write ``replay_report.json``, ``replay_report.md`` and ``replay_weights.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ALGOS = {"habc": "habc", "bc": "uniform"}
"""``--algo`` → ``HABCConfig.weighting``: HABC's gate, or plain BC (uniform weights) on the same data."""
EVAL_SEED = 10_000


class ReplayError(ValueError):
    """The logs cannot be replayed (no usable episode, no policy to fine-tune); the message says why."""


@dataclass(frozen=True)
class ReplayConfig:
    algo: str = "habc"
    init_from: str | None = None
    runs_dir: str = "runs"
    out_dir: str | None = None
    bc_steps: int = 1000
    critic_steps: int = 2000
    eval_episodes: int = 50
    eval_seed: int = EVAL_SEED
    seed: int = 1
    demos: bool = True
    """Train on the policy's demonstrations too (its run's ``dataset``), as the in-process rounds do."""
    device: str = "cpu"


# ---- which policy -------------------------------------------------------------------------------------------------
def onnx_meta(path: str | Path) -> dict[str, str]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def runs_by_hash(runs_dir: str | Path) -> dict[str, Path]:
    """content hash → run directory, for every ``<runs_dir>/*/policy.onnx``."""
    out = {}
    for path in sorted(Path(runs_dir).glob("*/policy.onnx")):
        try:
            h = onnx_meta(path).get("content_hash")
        except Exception:  # a half-written or foreign file: not a run's export
            continue
        if h:
            out[h] = path.parent
    return out


def resolve_init(init_from: str | None, version: str, runs_dir: str | Path) -> tuple[Path, str]:
    """(run directory to fine-tune, the content hash of its policy) for the logs' ``version``."""
    from stack import checkpoint

    if init_from is None:
        found = runs_by_hash(runs_dir).get(version)
        if found is None:
            raise ReplayError(f"no run in {runs_dir}/ exported policy version {version} (no */policy.onnx with that "
                              "content_hash); pass --init-from RUN_DIR or the ONNX file the logs were recorded with")
        return found, version
    path = Path(init_from)
    if path.suffix == ".onnx":
        meta = onnx_meta(path)
        run = Path(runs_dir) / meta.get("run_id", "")
        if not meta.get("run_id") or not checkpoint.exists(run):
            raise ReplayError(f"--init-from {path}: its run_id {meta.get('run_id')!r} names no run with a checkpoint "
                              f"in {runs_dir}/ (an ONNX file alone cannot be fine-tuned: the torch weights are needed)")
        return run, meta["content_hash"]
    if not checkpoint.exists(path):
        raise ReplayError(f"--init-from {path}: not a run directory with a checkpoint, nor an .onnx file")
    onnx_path = path / "policy.onnx"
    return path, onnx_meta(onnx_path)["content_hash"] if onnx_path.is_file() else ""


# ---- logs → an episode dataset ------------------------------------------------------------------------------------
def logs_to_dataset(logs, out_dir: Path, task: str, task_kwargs: dict, version: str, stale_version: int) -> dict:
    """Write the logs' episodes with an outcome as an episode dataset in the policy's action space; the episodes of
    ``version`` get policy_version 0 (the one fine-tuned), the others ``stale_version`` (beyond the cutoff)."""
    from sim.registry import make_task
    from stack.data import EpisodeWriter
    from stack.data.episodes import AUTHORITY_NAMES

    env = make_task(task, **task_kwargs)
    nq = env.home.size
    delta = getattr(env, "action_mode", "absolute") == "delta"
    to_action = (lambda q, a: np.clip((a - q) / env.delta_scale, -1.0, 1.0)) if delta else (lambda q, a: a)
    writer = EpisodeWriter.for_task(out_dir, task, env, extra_info={"task_kwargs": dict(task_kwargs),
                                                                    "source": "replayed_logs"})
    stats = Counter(dict.fromkeys(("episodes", "current_episodes", "steps", "human_steps", "interventions",
                                   "intervened_episodes", "successes", "without_outcome", "empty_episodes",
                                   "dropped_steps"), 0))
    versions: Counter = Counter()
    for log in logs:
        for ep in log.episodes:
            s = ep.steps
            if ep.outcome is None:
                stats["without_outcome"] += 1
                continue
            ok = np.all(np.isfinite(s["observation"]), axis=1) & np.all(np.isfinite(s["executed"]), axis=1)
            if ep.task and ep.task != task:
                raise ReplayError(f"{log.path}: episode {ep.index} is of task {ep.task!r}; the policy's is {task!r}")
            if not ok.any():
                stats["empty_episodes"] += 1
                continue
            stats["dropped_steps"] += int(np.count_nonzero(~ok))
            idx = np.flatnonzero(ok)
            human = s["authority"][idx] == 1
            for j, k in enumerate(idx):
                obs = s["observation"][k]
                q = obs[:nq]
                proposal = s["proposal"][k] if np.all(np.isfinite(s["proposal"][k])) else s["executed"][k]
                authority = AUTHORITY_NAMES.get(int(s["authority"][k]), "policy")
                # The action learnt from: the policy's own proposal on the dimensions it commanded, the executed
                # command on those the operator did — as HABC's in-process rounds store it. The executed command
                # of a policy dimension is the safety node's limited copy of the proposal (e.g. the gripper clipped
                # 0.02 rad inside its limit): imitating it shifts the policy off its own actions.
                mask = np.asarray(s["intervention_mask"][k], bool)
                action = np.where(mask, s["executed"][k], proposal)
                writer.add_step(obs, to_action(q, action), float(np.nan_to_num(s["reward"][k])),
                                truncated=j == len(idx) - 1, success=bool(s["success"][k]),
                                proposal=to_action(q, proposal), authority=authority,
                                intervention_mask=s["intervention_mask"][k])
            current = ep.policy_version == version
            versions[ep.policy_version or "unknown"] += 1
            writer.end_episode(outcome=ep.outcome, policy_version=str(0 if current else stale_version),
                               policy_hash=ep.policy_version or "", bag=str(log.path), seed=ep.values.get("seed", ""))
            stats["episodes"] += 1
            if not current:
                continue  # the stale cutoff drops it: counted, not used
            stats["current_episodes"] += 1
            stats["steps"] += len(idx)
            stats["human_steps"] += int(np.count_nonzero(human))
            stats["interventions"] += int(np.count_nonzero(human[1:] & ~human[:-1]) + (1 if human[:1].any() else 0))
            stats["intervened_episodes"] += bool(human.any())
            stats["successes"] += ep.outcome == "success"
    env.close()
    writer.close()
    return {**{k: int(v) for k, v in stats.items()}, "versions": dict(versions)}


def majority_version(logs) -> str:
    counts = Counter(ep.policy_version for log in logs for ep in log.episodes if ep.outcome is not None)
    if not counts:
        raise ReplayError("no episode with an outcome in the logs: nothing to learn from (outcome labels needed)")
    version, _ = counts.most_common(1)[0]
    if not version:
        raise ReplayError("the logs' episodes carry no policy version (the recorder adds it from /r2s/policy/info): "
                          "pass --init-from with the policy they were recorded with")
    return version


# ---- fine-tuning --------------------------------------------------------------------------------------------------
def _rounds_config(algo: str, task: str, task_kwargs: dict, cfg: ReplayConfig):
    from stack.config import from_dict, load_preset
    from stack.runners.habc import HABCRoundsConfig

    base = from_dict(HABCRoundsConfig, load_preset("push_habc"))
    return dataclasses.replace(base, task=task, task_kwargs=dict(task_kwargs), rounds=1, seed=cfg.seed,
                               bc_steps=cfg.bc_steps, critic_steps=cfg.critic_steps,
                               habc=dataclasses.replace(base.habc, weighting=ALGOS[algo]))


def _demos_of(run_dir: Path) -> list[Path]:
    import yaml

    path = run_dir / "config.yaml"
    if not path.is_file():
        return []
    dataset = (yaml.safe_load(path.read_text()) or {}).get("dataset")
    return [Path(dataset)] if dataset and (Path(dataset) / "meta" / "info.json").is_file() else []


def replay(bags: list[str | Path], cfg: ReplayConfig = ReplayConfig()) -> dict:
    """Fine-tune from ``bags``; the report (also written as JSON and markdown into the new run directory)."""
    from stack import checkpoint
    from stack.bench.habc import plot_weights
    from stack.data.logs import read_log
    from stack.export import export_run
    from stack.runners.habc import HABCRounds, StartPolicy, build_data

    if cfg.algo not in ALGOS:
        raise ReplayError(f"--algo {cfg.algo!r}: expected one of {sorted(ALGOS)}")
    t0 = time.perf_counter()
    logs = []
    for bag in bags:
        if not Path(bag).exists():
            raise ReplayError(f"{bag}: no such bag")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            logs.append(read_log(bag))
        for w in caught:
            print(f"warning: {w.message}", file=sys.stderr)
    version = majority_version(logs) if cfg.init_from is None else None
    run_dir, init_hash = resolve_init(cfg.init_from, version or "", cfg.runs_dir)
    version = init_hash or version
    ckpt = checkpoint.load(run_dir)
    rcfg = _rounds_config(cfg.algo, ckpt.task, ckpt.task_kwargs, cfg)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out = Path(cfg.out_dir or Path(cfg.runs_dir) / f"{run_dir.name}-replay-{cfg.algo}-{stamp}")
    if out.exists() and any(out.iterdir()):
        raise ReplayError(f"--out {out}: exists and is not empty")
    stale_version = -(rcfg.habc.max_policy_lag + 1)
    data_stats = logs_to_dataset(logs, out / "log_dataset", ckpt.task, ckpt.task_kwargs, version, stale_version)
    if data_stats["current_episodes"] == 0:
        raise ReplayError(f"refused: none of the {data_stats['episodes']} episodes with an outcome was recorded "
                          f"by policy version {version} (run {run_dir.name}); the logs' versions: "
                          f"{data_stats['versions']}")
    stale = data_stats["episodes"] - data_stats["current_episodes"]
    if stale:
        print(f"r2s replay: {stale} episode(s) recorded by another policy version than {version} are dropped by the "
              f"stale cutoff (versions {data_stats['versions']})", file=sys.stderr)

    start = StartPolicy.from_run(run_dir, device=cfg.device)
    demos = _demos_of(run_dir) if cfg.demos else []
    rounds = HABCRounds(rcfg, start, demos, out / "habc", device=cfg.device)
    before = rounds.evaluate(cfg.eval_episodes, cfg.eval_seed)
    t1 = time.perf_counter()
    rounds.habc.policy_version = 0
    p = rounds.bc.policy
    data = build_data(demos, [out / "log_dataset"], start.obs_normalizer, start.action_scaler, p.obs_steps,
                      p.horizon, rcfg, 0, rounds.device)
    critic = rounds.fit_critic(data) if rounds.uses_critic else {}
    losses, weights = rounds.weighted_bc(data, rounds.gates(data))
    t2 = time.perf_counter()
    after = rounds.evaluate(cfg.eval_episodes, cfg.eval_seed)

    new_run = out
    checkpoint.save(checkpoint.checkpoints_root(new_run) / checkpoint.LATEST, modules={"policy": rounds.bc.eval_policy},
                    normalization=ckpt.normalization,
                    meta={**{k: v for k, v in ckpt.meta.items() if k != "format_version"},
                          "fine_tuned_from": str(run_dir), "fine_tuned_from_version": version,
                          "replay_algo": cfg.algo})
    exported = export_run(new_run)
    plot_weights([{"round": 0, "rollout_success": data_stats["successes"] / max(1, data_stats["current_episodes"]),
                   "weights": weights}], out / "replay_weights.png")
    report = {
        "algo": cfg.algo, "bags": [str(b) for b in bags], "init_run": str(run_dir), "init_version": version,
        "new_run": str(new_run), "new_policy": exported["path"], "new_version": exported["content_hash"],
        "success_before": before, "success_after": after, "eval_episodes": cfg.eval_episodes,
        "eval_seeds": [cfg.eval_seed, cfg.eval_seed + cfg.eval_episodes - 1],
        "episodes_used": data_stats["current_episodes"], "steps_used": int(len(data.obs)) - _demo_frames(data),
        "interventions_used": data_stats["interventions"], "intervened_episodes": data_stats["intervened_episodes"],
        "human_steps": data_stats["human_steps"], "log_successes": data_stats["successes"],
        "stale_episodes_dropped": int(data.stale_episodes), "episodes_without_outcome": data_stats[
            "without_outcome"], "dropped_steps": data_stats["dropped_steps"],
        "log_versions": data_stats["versions"], "demo_datasets": [str(d) for d in demos],
        "sources": rounds.source_counts(data), "bc_steps": cfg.bc_steps,
        "critic_steps": cfg.critic_steps if rounds.uses_critic else 0,
        "bc_loss": float(np.mean(losses)) if losses else None, **critic,
        "weight_quantiles": np.quantile(weights, [0.1, 0.5, 0.9]).round(3).tolist() if len(weights) else None,
        "weights_plot": str(out / "replay_weights.png"), "train_s": round(t2 - t1, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    (out / "replay_report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "replay_report.md").write_text(markdown(report))
    return report


def _demo_frames(data) -> int:
    from stack.algos.habc import DEMO

    return int((data.source == DEMO).sum().item())


def markdown(r: dict) -> str:
    return "\n".join([
        f"# r2s replay ({r['algo']})", "",
        f"- logs: {', '.join(r['bags'])}",
        f"- fine-tuned: {r['init_run']} (policy version `{r['init_version']}`) → {r['new_run']} "
        f"(`{r['new_policy']}`, version `{r['new_version']}`)", "",
        "| success in sim | before | after |", "|---|---|---|",
        f"| {r['eval_episodes']} episodes, seeds {r['eval_seeds'][0]}–{r['eval_seeds'][1]} | "
        f"{r['success_before']:.0%} | {r['success_after']:.0%} |", "",
        f"- data: {r['episodes_used']} episodes ({r['log_successes']} successful), {r['steps_used']} steps, "
        f"{r['interventions_used']} interventions in {r['intervened_episodes']} episodes ({r['human_steps']} human "
        f"steps); demonstrations {r['demo_datasets'] or 'none'}",
        f"- refused: {r['stale_episodes_dropped']} episodes of another policy version (stale cutoff), "
        f"{r['episodes_without_outcome']} without an outcome, {r['dropped_steps']} steps without observation or "
        "command",
        f"- frames by source: {r['sources']}; weights (10/50/90 %): {r['weight_quantiles']}",
        f"- weight histogram: {r['weights_plot']}", ""])


def cmd_replay(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s replay", description="fine-tune the policy that recorded intervention logs "
                                "(bags) from them; export the new policy and report success before/after in sim")
    p.add_argument("bags", nargs="+", help="bag directories (r2s record / r2s deploy)")
    p.add_argument("--algo", default="habc", choices=sorted(ALGOS))
    p.add_argument("--init-from", default=None, help="run directory or exported ONNX to fine-tune (default: the run "
                   "whose policy.onnx has the logs' policy version)")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--out", default=None, help="the new run directory (default: RUNS/<run>-replay-<algo>-<time>)")
    p.add_argument("--bc-steps", type=int, default=1000)
    p.add_argument("--critic-steps", type=int, default=2000)
    p.add_argument("--eval-episodes", type=int, default=50)
    p.add_argument("--no-demos", action="store_true", help="train on the logs only")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    cfg = ReplayConfig(algo=args.algo, init_from=args.init_from, runs_dir=args.runs_dir, out_dir=args.out,
                       bc_steps=args.bc_steps, critic_steps=args.critic_steps, eval_episodes=args.eval_episodes,
                       demos=not args.no_demos, device=args.device)
    try:
        report = replay(args.bags, cfg)
    except ReplayError as e:
        print(f"r2s replay: {e}", file=sys.stderr)
        return 1
    print(markdown(report))
    print(json.dumps(report))
    return 0


__all__ = ["ALGOS", "ReplayConfig", "ReplayError", "cmd_replay", "logs_to_dataset", "replay", "resolve_init",
           "runs_by_hash"]
