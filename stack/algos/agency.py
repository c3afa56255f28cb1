"""Agency transfer (Bolychev, Malaniya, Ibrahim, Osinenko 2026, arXiv 2606.09825; "CALFQ"): the task's baseline
controller embedded in training by per-step arbitration, agency handed to the learner by an episode-end schedule.

* Per step (``policies.arbitrated``): the learner proposes a_L (a SAC sample); its certificate value is
  q = min of the twin **target** critics at (s, a_L); the learner acts iff q > Q* + Δ or U < p (one draw per
  decision), else the baseline acts; p ← λp; a certificate sets Q* ← q.
* Q* is the episode's best certified pair (s†, a†) **valued by the same critic as q**: SAC updates the critic between
  the steps of an episode (replay ratio 1: one update per transition), and on zone the soft-Q level drifts by ~0.005
  per env step early on (mean 0 → +2.8 over the first 3k), so a value stored at certification time and compared with
  a later critic's q lets the drift alone (≫ Δ = 0.01 over an episode) certify: 23–25 % of decisions did before,
  7–8 % with the re-valuation. Each step therefore re-values (s†, a†) with the current target critics (one forward
  pass on 2N rows) before comparing.
* At each episode end (``AgencySchedule``): f = clip(k / (0.9·T_total), 0, 1) with k the env steps so far;
  p_ep = p₀ + (1 − p₀)·f; with L̄ the mean length of the last 20 episodes (rounded, ≥ 1) and R₀ = Σ_{t<L̄} p₀λ₀^t,
  R = R₀ + (L̄ − R₀)·f and λ solves Σ_{t<L̄} λ^t = R / p_ep on [0, 1] (bisection; the sum rises with λ from 1 to L̄).
  At f = 0 this gives λ₀ back, at f = 1 p = λ = 1: every draw grants the learner, so from the anneal fraction on
  the baseline is never called (and the critic is not evaluated for it).
* Buffer rule: the transition stores the **executed** action (the baseline's where it acted, mapped to the policy's
  [−1, 1] units) and its authority (1 learner, 0 baseline) — not the learner's unexecuted proposal (the reference code's
  bug). SAC then trains on every transition as ordinary off-policy data.

The learner (``policy``) is what a checkpoint's ``policy`` module holds and what ``r2s export`` writes; the baseline
is not part of it. The runner (``stack.runners.arbitrated``) gives the baseline as a callable on observations.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable

import numpy as np
import torch

from policies.arbitrated import Arbitrator, arbitrate
from stack.algos.sac import SAC


def geometric_sum(lam: float, n: int) -> float:
    """Σ_{t<n} λ^t."""
    if lam == 1.0:
        return float(n)
    return (1.0 - lam ** n) / (1.0 - lam)


def solve_lambda(target: float, n: int, iterations: int = 60) -> float:
    """λ ∈ [0, 1] with Σ_{t<n} λ^t = target (clipped to the reachable range [1, n])."""
    if n < 1:
        raise ValueError(f"n: expected a horizon >= 1, got {n!r}")
    if target <= 1.0:
        return 0.0
    if target >= n:
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if geometric_sum(mid, n) < target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


class AgencySchedule:
    """The episode-end schedule: (p_ep, λ) from the training fraction and the recent episode lengths."""

    def __init__(self, total_steps: int, p0: float = 0.9, lam0: float = 0.96, anneal_fraction: float = 0.9,
                 window: int = 20):
        if not 0.0 < p0 <= 1.0:
            raise ValueError(f"agency.p0: expected a probability in (0, 1], got {p0!r}")
        if not 0.0 <= lam0 <= 1.0:
            raise ValueError(f"agency.lam0: expected a decay in [0, 1], got {lam0!r}")
        if not 0.0 < anneal_fraction <= 1.0:
            raise ValueError(f"agency.anneal_fraction: expected a fraction in (0, 1], got {anneal_fraction!r}")
        if window < 1:
            raise ValueError(f"agency.window: expected >= 1 episodes, got {window!r}")
        self.total_steps = int(total_steps)
        self.p0, self.lam0, self.anneal_fraction = float(p0), float(lam0), float(anneal_fraction)
        self.lengths: deque[int] = deque(maxlen=int(window))
        self.p_ep, self.lam, self.f = self.p0, self.lam0, 0.0

    def fraction(self, env_steps: int) -> float:
        return min(max(env_steps / (self.anneal_fraction * self.total_steps), 0.0), 1.0)

    @property
    def annealed(self) -> bool:
        """The learner alone acts (f = 1)."""
        return self.f >= 1.0

    def update(self, env_steps: int, lengths=()) -> tuple[float, float]:
        """Record finished episodes' ``lengths`` and recompute (p_ep, λ) at ``env_steps``."""
        self.lengths.extend(int(n) for n in lengths)
        self.f = f = self.fraction(env_steps)
        self.p_ep = self.p0 + (1.0 - self.p0) * f
        if f >= 1.0:
            self.lam = 1.0
        elif self.lengths:
            n = max(1, int(round(float(np.mean(self.lengths)))))
            r0 = self.p0 * geometric_sum(self.lam0, n)
            self.lam = solve_lambda((r0 + (n - r0) * f) / self.p_ep, n)
        return self.p_ep, self.lam

    def state_dict(self) -> dict:
        return {"lengths": list(self.lengths), "p_ep": self.p_ep, "lam": self.lam, "f": self.f}

    def load_state_dict(self, state: dict) -> None:
        self.lengths.clear()
        self.lengths.extend(int(n) for n in state["lengths"])
        self.p_ep, self.lam, self.f = float(state["p_ep"]), float(state["lam"]), float(state["f"])


ARBITRATION_SEED_OFFSET = 7919
"""The arbitrator's draws are seeded with seed + this (every agency backbone's rule)."""


class AgencyTransfer:
    """SAC with per-step arbitration against a baseline. ``act`` → (executed actions, authority); ``end_episodes``
    after episodes finish; ``update`` is SAC's."""

    def __init__(self, sac: SAC, schedule: AgencySchedule, num_envs: int, delta: float = 0.01, seed: int = 0):
        self.sac = sac
        self.schedule = schedule
        self.arbitrator = Arbitrator(num_envs, delta, seed=seed + ARBITRATION_SEED_OFFSET)
        self.arbitrator.start_episodes(slice(None), schedule.p_ep)
        self.device = sac.device
        self.calls = {"baseline_rows": 0, "certified": 0, "decisions": 0}
        self.held = np.zeros(num_envs, bool)
        """Envs whose episode holds a certified pair (s†, a†) (Q* re-valued from it each step)."""
        self.cert_obs: torch.Tensor | None = None
        self.cert_act: torch.Tensor | None = None

    @property
    def actor(self):
        return self.sac.actor

    @property
    def alpha(self) -> float:
        return self.sac.alpha

    @property
    def updates(self) -> int:
        return self.sac.updates

    def policy_modules(self) -> dict:
        return self.sac.policy_modules()

    @torch.no_grad()
    def certificate_values(self, obs: torch.Tensor, actions: torch.Tensor) -> np.ndarray:
        """q = min of the twin target critics at (obs, actions)."""
        q1, q2 = self.sac.qnet_target(obs, actions)
        return torch.minimum(q1, q2).reshape(-1).cpu().numpy().astype(np.float64)

    def act(self, obs: np.ndarray, baseline: Callable[[np.ndarray], np.ndarray],
            env_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """``(executed actions [N, act_dim] in policy units, authority [N] bool: True = the learner acted)`` at
        ``env_steps`` into training. ``baseline(obs_rows) -> actions in policy units`` is called only on the rows the
        baseline acts on, and never from the anneal fraction on (also inside episodes that began before it)."""
        obs_t = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        proposals_t = self.sac.act(obs_t)
        proposals = proposals_t.cpu().numpy().astype(np.float64)
        n = proposals.shape[0]
        self.calls["decisions"] += n
        if self.schedule.annealed or self.schedule.fraction(env_steps) >= 1.0:
            # p = λ = 1: every draw would grant the learner; skip the critic and the draw
            return proposals, np.ones(n, bool)
        held = np.flatnonzero(self.held)
        if held.size:  # q and the episode's best pair valued by the same (current) critic
            values = self.certificate_values(torch.cat((obs_t, self.cert_obs[held])),
                                             torch.cat((proposals_t, self.cert_act[held])))
            q, self.arbitrator.q_star[held] = values[:n], values[n:]
        else:
            q = self.certificate_values(obs_t, proposals_t)
        authority, certified = self.arbitrator.decide(q, self.schedule.lam)
        self._hold(certified, obs_t, proposals_t)
        self.calls["certified"] += int(certified.sum())
        self.calls["baseline_rows"] += int((~authority).sum())
        return arbitrate(obs, proposals, authority, baseline), authority

    def end_episodes(self, envs: np.ndarray, lengths, env_steps: int) -> None:
        """Episodes in ``envs`` (mask) ended with ``lengths``: update the schedule, restart those envs' arbitration."""
        p_ep, _ = self.schedule.update(env_steps, lengths)
        self.arbitrator.start_episodes(envs, p_ep)
        self.held[envs] = False

    def restart_all(self) -> None:
        """Every env starts a new episode (after a checkpoint's reset)."""
        self.arbitrator.start_episodes(slice(None), self.schedule.p_ep)
        self.held[:] = False

    def _hold(self, certified: np.ndarray, obs: torch.Tensor, actions: torch.Tensor) -> None:
        """The certified rows' (s, a_L) become their episodes' best pair."""
        rows = np.flatnonzero(certified)
        if not rows.size:
            return
        if self.cert_obs is None:
            self.cert_obs, self.cert_act = torch.zeros_like(obs), torch.zeros_like(actions)
        idx = torch.as_tensor(rows, device=obs.device)
        self.cert_obs[idx], self.cert_act[idx] = obs[idx], actions[idx]
        self.held[rows] = True

    def update(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return self.sac.update(batch)

    def state_dict(self) -> dict:
        pairs = None if self.cert_obs is None else {"obs": self.cert_obs.cpu(), "act": self.cert_act.cpu()}
        return {"sac": self.sac.state_dict(), "schedule": self.schedule.state_dict(),
                "arbitrator": self.arbitrator.state_dict(), "calls": dict(self.calls),
                "held": self.held.tolist(), "pairs": pairs}

    def load_state_dict(self, state: dict) -> None:
        self.sac.load_state_dict(state["sac"])
        self.schedule.load_state_dict(state["schedule"])
        self.arbitrator.load_state_dict(state["arbitrator"])
        self.calls = {k: int(v) for k, v in state["calls"].items()}
        self.held = np.asarray(state.get("held", np.zeros_like(self.held)), bool)
        pairs = state.get("pairs")
        if pairs is None:
            self.cert_obs = self.cert_act = None
            self.held[:] = False
        else:
            self.cert_obs, self.cert_act = pairs["obs"].to(self.device), pairs["act"].to(self.device)


def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu") -> AgencyTransfer:
    """Agency transfer on SAC (``cfg.sac`` networks and hyperparameters, ``cfg.agency`` the arbitration)."""
    from stack.algos.sac import make_algo as make_sac

    a = cfg.agency
    if not math.isfinite(a.delta) or a.delta < 0:
        raise ValueError(f"agency.delta: expected a finite margin >= 0, got {a.delta!r}")
    schedule = AgencySchedule(cfg.total_env_steps, a.p0, a.lam0, a.anneal_fraction, a.window)
    return AgencyTransfer(make_sac(cfg, obs_dim, act_dim, device), schedule, cfg.env.num_envs, a.delta, cfg.seed)


__all__ = ["AgencySchedule", "AgencyTransfer", "geometric_sum", "make_algo", "solve_lambda"]
