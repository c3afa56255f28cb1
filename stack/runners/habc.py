"""HABC rounds (``stack.algos.habc``) with a simulated operator: roll out → store → update heads → g → weighted BC.

Each round, in process and at sim speed:

1. **Rollouts** (``collect_round``): ``rollouts_per_round`` episodes of the current policy, in lockstep, each with a
   ``SimulatedOperator`` — the task's baseline controller standing in for the human — that takes over when the
   policy is failing: progress stalled (a distance to done from the task's ``info`` — push: puck→goal plus half of
   fingertip→puck — has not dropped by ``stall_eps`` over ``stall_steps`` steps) or, optionally, a predicted
   failure (``p_v < p_threshold``). It holds authority for ``takeover_steps`` steps and commands only the
   operator's ``dims`` (all by default: the per-dimension intervention mask). Proposals and takeovers go through
   ``stack.ros.safety.SafetySupervisor``'s mux (``OperatorMux``), so authority and mask are the ones a robot's
   safety node would publish.
2. **Storage**: every round is an ``EpisodeWriter`` dataset with the fields a robot's log converts to — the
   observation, the executed action, the policy's proposal, authority, intervention mask, is_intervention per frame;
   outcome, success_step and policy_version per episode. Training reads those datasets back (``build_data``), so
   replayed robot logs take the same path.
3. **Update**: the critic's heads (``critic_steps`` steps) → g of every frame → ``bc_steps`` weighted BC steps on
   the demonstrations and the rollouts whose policy is at most ``max_policy_lag`` versions old.

``weighting`` selects HABC, its viability-only variant or a peer on the same data (``stack.algos.habc.WEIGHTINGS``).
The start policy is a BC checkpoint (``start``); its observation normaliser and action scaling stay frozen.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from stack.algos.bc import BC
from stack.algos.habc import (DEMO, HABC, SOURCE_NAMES, HABCConfig, assign_credit, human_controlled,
                              require_habc_fields)
from stack.config import BCConfig
from stack.controller import PolicyController
from stack.data import EpisodeDataset, EpisodeWriter, window_indices
from stack.data.episodes import AUTHORITY_KEY, IS_INTERVENTION
from stack.operator import OperatorConfig, SimulatedOperator, progress
from stack.ros.safety import SafetySupervisor
from stack.runners.offline import to_policy_space


@dataclass(frozen=True)
class HABCRoundsConfig:
    task: str = "push"
    task_kwargs: dict = field(default_factory=lambda: {"action_mode": "delta"})
    rounds: int = 3
    rollouts_per_round: int = 30
    bc_steps: int = 1000
    """Weighted BC gradient steps per round."""
    critic_steps: int = 500
    """Critic gradient steps per round (before the BC steps)."""
    batch_size: int = 256
    lr: float = 3e-4
    lr_final: float = 1e-4
    rollout_zero_noise: bool = False
    """Rollouts sample the flow from seeded noise (evaluation starts it from 0)."""
    demo_action_key: str = "action.proposal"
    """Column of the demonstrations that is cloned (the pretraining's)."""
    reweight_interventions_from_round: int | None = 1
    """From this round on intervention windows get g (None: never); the viability head has had a round by then."""
    seed: int = 1
    operator: OperatorConfig = field(default_factory=OperatorConfig)
    habc: HABCConfig = field(default_factory=HABCConfig)


# ---- the simulated operator (stack.operator) through the safety mux ------------------------------------------------
class OperatorMux:
    """``SafetySupervisor``'s mux used in process: each step the measured joints, the policy's joint target and (in a
    takeover) the operator's arrive at the same instant and one decision is made.

    The smallest adapter the supervisor needs: a simulated clock (t = step · control period, stamps from it) and
    the motion limiter made inert (velocity/acceleration scales 1e6) by default, because the evaluation runs the
    policy without a supervisor and the rollouts must execute what it would; ``limit_motion=True`` keeps it."""

    def __init__(self, spec, limit_motion: bool = False):
        scale = 1.0 if limit_motion else 1e6
        self.sup = SafetySupervisor(spec, timeout_s=1.0, velocity_scale=scale, acceleration_scale=scale)
        self.period = spec.control_period_s
        self.step_index = 0

    def decide(self, q: np.ndarray, policy_target: np.ndarray, operator_target: np.ndarray | None,
               dims: np.ndarray) -> tuple[np.ndarray, str, np.ndarray]:
        """(executed joint target, authority, intervention mask [bool]) of this step."""
        t = self.step_index * self.period
        self.step_index += 1
        stamp = int(round(t * 1e9))
        refused = self.sup.measured(q, t)
        if refused is not None:
            raise RuntimeError(f"OperatorMux: the supervisor refused the simulated joint_states ({refused})")
        self.sup.command("policy", policy_target, t, stamp)
        if operator_target is not None:
            self.sup.command("human", operator_target, t, stamp, commanded=dims)
        self.sup.set_authority("human" if operator_target is not None else "policy")
        d = self.sup.decide(t, new_command=True)
        if d is None or d.holding:
            raise RuntimeError(f"OperatorMux: the supervisor held ({d.status if d else 'no measurement'})")
        return d.command, d.authority, d.mask.astype(bool)


# ---- rollouts -------------------------------------------------------------------------------------------------------
def _joint_targets(env, q: np.ndarray, action: np.ndarray) -> np.ndarray:
    """An env action → the joint target it stands for (delta actions relative to the measured joints)."""
    from sim.tasks.arm import delta_to_absolute

    if env.action_mode == "delta":
        return delta_to_absolute(q, action, env.delta_scale, env.joint_low, env.joint_high)
    return np.asarray(action, np.float64)


def _env_action(env, q: np.ndarray, target: np.ndarray) -> np.ndarray:
    from sim.tasks.arm import absolute_to_delta

    return absolute_to_delta(q, target, env.delta_scale) if env.action_mode == "delta" else target


def collect_round(controller: PolicyController, cfg: HABCRoundsConfig, out_dir: Path, seed: int,
                  policy_version: int, p_v=None, authority: str | None = None) -> tuple[Path, dict]:
    """``cfg.rollouts_per_round`` episodes (env i reset with ``seed + i``) with the simulated operator; written to
    ``out_dir``. ``p_v(obs [B, obs_dim]) -> [B]`` feeds the operator's predicted-failure trigger."""
    from sim.pool import resolve_task

    n = cfg.rollouts_per_round
    envs = [resolve_task(cfg.task)(**cfg.task_kwargs) for _ in range(n)]
    op_cfg = cfg.operator
    ops = [SimulatedOperator(op_cfg) for _ in range(n)]
    muxes = [OperatorMux(env.robot) for env in envs]
    act_dim = envs[0].action_space.shape[0]
    dims = np.zeros(act_dim, bool)
    dims[list(op_cfg.dims) if op_cfg.dims is not None else slice(None)] = True
    nq = envs[0].home.size
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]
    controller.reset()
    steps: list[list[dict]] = [[] for _ in range(n)]
    operating = [False] * n
    running = list(range(n))
    while running:
        batch = np.stack([obs[i] for i in running])
        proposals = controller.act_batch(batch, running)
        still = []
        for k, i in enumerate(running):
            env, o = envs[i], obs[i]
            q = o[:nq]
            op_target = _joint_targets(env, q, env.baseline(o)) if operating[i] else None
            target, who, mask = muxes[i].decide(q, _joint_targets(env, q, proposals[k]), op_target, dims)
            executed = proposals[k] if not mask.any() else _env_action(env, q, target)
            nxt, reward, terminated, truncated, info = env.step(executed)
            steps[i].append(dict(obs=o, action=env.check_action(executed), reward=reward, terminated=terminated,
                                 truncated=truncated, success=bool(info.get("success", False)),
                                 proposal=proposals[k], authority=(authority or op_cfg.authority) if mask.any()
                                 else "policy", intervention_mask=mask,
                                 distance=progress(info, op_cfg.progress)))
            obs[i] = nxt
            if terminated or truncated:
                continue
            still.append(i)
        if p_v is not None and still:
            pv = p_v(np.stack([obs[i] for i in still]))
        for j, i in enumerate(still):
            info_pv = float(pv[j]) if p_v is not None else None
            operating[i] = ops[i].active(steps[i][-1]["distance"], steps[i][-1]["success"], info_pv)
        running = still
    writer = EpisodeWriter.for_task(out_dir, cfg.task, envs[0],
                                    extra_info={"task_kwargs": dict(cfg.task_kwargs), "source": "habc_rollouts"})
    stats = {"episodes": n, "success": 0, "intervened": 0, "human_frames": 0, "frames": 0}
    for i in range(n):
        for s in steps[i]:
            writer.add_step(s["obs"], s["action"], s["reward"], terminated=s["terminated"], truncated=s["truncated"],
                            success=s["success"], proposal=s["proposal"], authority=s["authority"],
                            intervention_mask=s["intervention_mask"])
        human = sum(s["authority"] != "policy" for s in steps[i])
        meta = writer.end_episode(policy_version=str(policy_version), seed=seed + i, takeovers=ops[i].takeovers)
        stats["success"] += meta["outcome"] == "success"
        stats["intervened"] += human > 0
        stats["human_frames"] += human
        stats["frames"] += len(steps[i])
    for env in envs:
        env.close()
    return writer.close(), stats


# ---- training data from episode datasets ----------------------------------------------------------------------------
@dataclass
class HABCData:
    """Every frame of the demonstrations and of the fresh rollouts, on the device, with its credit."""

    obs: torch.Tensor
    actions: torch.Tensor
    obs_idx: torch.Tensor
    act_idx: torch.Tensor
    train_frames: torch.Tensor
    source: torch.Tensor
    label: torch.Tensor
    human: torch.Tensor
    episode_success: torch.Tensor
    policy_version: torch.Tensor
    next_k: torch.Tensor
    """Index of s' (advantage_steps ahead, clipped to the episode) and the frames between."""
    k: torch.Tensor
    eff_frames: torch.Tensor
    """Frames of successful rollouts up to their success step (the efficiency head's TD targets)."""
    eff_terminal: torch.Tensor
    stale_episodes: int = 0


def build_data(demos: list[Path], rollouts: list[Path], normalizer, scaler, obs_steps: int, horizon: int,
               cfg: HABCRoundsConfig, current_version: int, device) -> HABCData:
    """Demonstrations (weight 1, no outcome label) and rollouts (credit from their authority flags; refused without
    them; episodes of a policy more than ``max_policy_lag`` versions old dropped and counted)."""
    hc = cfg.habc
    parts: dict[str, list] = {k: [] for k in ("obs", "act", "source", "label", "human", "success", "version",
                                              "eff", "terminal")}
    lengths: list[int] = []
    stale_episodes = 0

    def add(ds, i, action_key, source, label, human, success, version, eff, terminal):
        ep = ds.episode(i, ["observation.state", action_key])
        parts["obs"].append(ep["observation.state"])
        parts["act"].append(ep[action_key])
        for key, v in (("source", source), ("label", label), ("human", human), ("success", success),
                       ("version", version), ("eff", eff), ("terminal", terminal)):
            parts[key].append(v)
        lengths.append(len(source))

    for path in demos:
        ds = EpisodeDataset(path)
        for i, n in enumerate(ds.episode_lengths):
            n = int(n)
            add(ds, i, cfg.demo_action_key, np.full(n, DEMO, np.int8), np.full(n, np.nan), np.zeros(n, bool),
                np.ones(n, bool), np.full(n, -1), np.zeros(n, bool), np.zeros(n, bool))
    for path in rollouts:
        ds = EpisodeDataset(path)
        require_habc_fields(ds.features, ds.episodes, str(path))
        for i, meta in enumerate(ds.episodes):
            version = int(meta["policy_version"])
            if current_version - version > hc.max_policy_lag:
                stale_episodes += 1
                continue
            cols = ds.episode(i, [AUTHORITY_KEY, IS_INTERVENTION])
            human = human_controlled(cols[AUTHORITY_KEY], cols[IS_INTERVENTION])
            success = meta["outcome"] == "success"
            source, label = assign_credit(human, success, hc.window, hc.intervention_threshold)
            n = len(human)
            eff = np.zeros(n, bool)
            terminal = np.zeros(n, bool)
            if success and meta["success_step"] is not None:
                eff[: meta["success_step"] + 1] = True
                terminal[meta["success_step"]] = True
            add(ds, i, "action", source, label, human, np.full(n, success), np.full(n, version), eff, terminal)
    if not lengths:
        raise ValueError(f"HABC: no training data — no demonstrations and all {stale_episodes} rollout episodes are "
                         f"more than max_policy_lag={hc.max_policy_lag} versions behind version {current_version}")
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    obs_idx, act_idx = window_indices(lengths, obs_steps, horizon)
    complete = act_idx[:, -1] - act_idx[:, 0] == horizon - 1
    ends = np.repeat(np.cumsum(lengths) - 1, lengths)
    t = np.arange(len(ends))
    next_k = np.minimum(t + hc.advantage_steps, ends)
    eff_frames = np.flatnonzero(cat["eff"])

    def dev(x, dtype=None):
        return torch.as_tensor(np.ascontiguousarray(x), device=device, dtype=dtype)

    return HABCData(
        obs=dev(normalizer(cat["obs"]), torch.float32),
        actions=dev(to_policy_space(scaler, cat["act"]), torch.float32),
        obs_idx=dev(obs_idx), act_idx=dev(act_idx), train_frames=dev(np.flatnonzero(complete)),
        source=dev(cat["source"].astype(np.int64)), label=dev(cat["label"], torch.float32),
        human=dev(cat["human"]), episode_success=dev(cat["success"]), policy_version=dev(cat["version"]),
        next_k=dev(next_k), k=dev(next_k - t), eff_frames=dev(eff_frames),
        eff_terminal=dev(cat["terminal"][eff_frames]), stale_episodes=stale_episodes)


# ---- one method's rounds --------------------------------------------------------------------------------------------
@dataclass
class StartPolicy:
    """The pretrained BC policy the rounds start from, with its frozen normalisation and evaluation sampling."""

    policy: torch.nn.Module
    obs_normalizer: object
    action_scaler: object
    sampling: dict

    @classmethod
    def from_run(cls, run_dir, device="cpu") -> StartPolicy:
        from stack import checkpoint

        ckpt = checkpoint.load(run_dir)
        return cls(ckpt.module("policy", device=device), ckpt.obs_normalizer(), ckpt.action_scaler(),
                   dict(ckpt.meta["sampling"]))


class HABCRounds:
    """One method (``cfg.habc.weighting``) from a start policy through ``cfg.rounds`` rounds."""

    def __init__(self, cfg: HABCRoundsConfig, start: StartPolicy, demos: list[Path], out_dir: Path,
                 device: str = "cpu"):
        self.cfg, self.start, self.demos, self.out_dir = cfg, start, list(demos), Path(out_dir)
        self.device = torch.device(device)
        torch.manual_seed(cfg.seed)
        policy = copy.deepcopy(start.policy).to(self.device)
        bc_cfg = BCConfig(lr=cfg.lr, lr_final=cfg.lr_final, batch_size=cfg.batch_size, ema=True)
        self.bc = BC(policy, bc_cfg, cfg.rounds * cfg.bc_steps, self.device)
        self.habc = HABC(self.bc, policy.obs_dim, cfg.habc, self.device)
        self.generator = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.rollouts: list[Path] = []
        self.history: list[dict] = []

    @property
    def uses_critic(self) -> bool:
        return self.cfg.habc.weighting in ("habc", "viability")

    def controller(self, seed: int, zero_noise: bool) -> PolicyController:
        sampling = {**self.start.sampling, "zero_noise": zero_noise}
        return PolicyController(self.bc.eval_policy, self.start.obs_normalizer, self.start.action_scaler, sampling,
                                device=self.device, seed=seed)

    def p_v(self, obs: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(self.start.obs_normalizer(obs), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            return torch.sigmoid(self.habc.critic(x)[0]).cpu().numpy()

    def round(self, r: int) -> dict:
        cfg = self.cfg
        t0 = time.perf_counter()
        seed = 1_000 * cfg.seed + 100 * r  # rollout seeds: the same for every method of a seed and round
        self.habc.policy_version = r
        trigger = self.p_v if (cfg.operator.p_threshold is not None and self.uses_critic and r > 0) else None
        path, stats = collect_round(self.controller(seed, cfg.rollout_zero_noise), cfg,
                                    self.out_dir / f"round-{r}", seed, policy_version=r, p_v=trigger)
        self.rollouts.append(path)
        t1 = time.perf_counter()
        p = self.bc.policy
        data = build_data(self.demos, self.rollouts, self.start.obs_normalizer, self.start.action_scaler,
                          p.obs_steps, p.horizon, cfg, r, self.device)
        reweight = cfg.reweight_interventions_from_round is not None and r >= cfg.reweight_interventions_from_round
        self.habc.cfg = dataclasses.replace(self.habc.cfg, reweight_interventions=reweight)
        critic_log = self.fit_critic(data) if self.uses_critic else {}
        g = self.gates(data)
        t2 = time.perf_counter()
        losses, weights = self.weighted_bc(data, g)
        t3 = time.perf_counter()
        row = {"round": r, "rollout_success": stats["success"] / stats["episodes"],
               "intervened_episodes": stats["intervened"], "human_frames": stats["human_frames"],
               "frames": stats["frames"], "stale_episodes": data.stale_episodes,
               "stale_batches": self.habc.stale_batches, "bc_loss": float(np.mean(losses)) if losses else None,
               **critic_log, "sources": self.source_counts(data),
               "weights": weights.tolist(), "rollout_s": round(t1 - t0, 2), "critic_s": round(t2 - t1, 2),
               "bc_s": round(t3 - t2, 2)}
        self.history.append(row)
        return row

    def fit_critic(self, data: HABCData) -> dict:
        cfg, hc = self.cfg, self.cfg.habc
        labelled = torch.nonzero(~torch.isnan(data.label)).squeeze(-1)
        logs: list[dict] = []
        for _ in range(cfg.critic_steps):
            i = labelled[torch.randint(0, len(labelled), (hc.critic_batch_size,), generator=self.generator,
                                       device=self.device)] if len(labelled) else labelled
            e = torch.randint(0, len(data.eff_frames), (hc.critic_batch_size,), generator=self.generator,
                              device=self.device) if len(data.eff_frames) else data.eff_frames
            frames = data.eff_frames[e]
            nxt = torch.minimum(frames + 1, data.next_k.new_tensor(len(data.obs) - 1))
            logs.append(self.habc.critic_step(data.obs[i], data.label[i], data.obs[frames], data.obs[nxt],
                                              data.eff_terminal[e]))
        keys = {k for log in logs for k in log}
        return {k: float(np.mean([log[k] for log in logs[-50:] if k in log])) for k in keys}

    def gates(self, data: HABCData) -> torch.Tensor:
        if not self.uses_critic:
            return torch.ones(len(data.obs), device=self.device)
        g, _ = self.habc.gates(data.obs, data.obs[data.next_k], data.k)
        return g

    def weighted_bc(self, data: HABCData, g: torch.Tensor) -> tuple[list[float], np.ndarray]:
        losses, weights = [], []
        frames = data.train_frames
        for _ in range(self.cfg.bc_steps):
            idx = frames[torch.randint(0, len(frames), (self.cfg.batch_size,), generator=self.generator,
                                       device=self.device)]
            loss, w = self.habc.weighted_bc_step(
                data.obs[data.obs_idx[idx]], data.actions[data.act_idx[idx]], data.source[idx], g[idx],
                data.episode_success[idx], data.human[idx], data.policy_version[idx])
            if loss is not None:
                losses.append(loss)
                weights.append(w[data.source[idx] != DEMO].cpu().numpy())
        return losses, np.concatenate(weights) if weights else np.zeros(0)

    @staticmethod
    def source_counts(data: HABCData) -> dict:
        counts = torch.bincount(data.source, minlength=len(SOURCE_NAMES)).tolist()
        return {SOURCE_NAMES[s]: int(c) for s, c in enumerate(counts)}

    def evaluate(self, episodes: int, seed: int) -> float:
        from stack.evaluate import evaluate

        return float(evaluate(self.controller(seed, zero_noise=self.start.sampling.get("zero_noise", True)),
                              self.cfg.task, episodes, seed, task_kwargs=self.cfg.task_kwargs)["success_rate"])

    def run(self) -> list[dict]:
        for r in range(self.cfg.rounds):
            self.round(r)
        (self.out_dir / "history.json").write_text(json.dumps(
            [{k: v for k, v in row.items() if k != "weights"} for row in self.history], indent=2) + "\n")
        return self.history


__all__ = ["HABCData", "HABCRounds", "HABCRoundsConfig", "OperatorConfig", "OperatorMux", "SimulatedOperator",
           "StartPolicy", "build_data", "collect_round"]
