"""Per-step arbitration between a learned policy and a baseline controller (agency transfer, CALF family).

Per env and step t, with the episode's state Q* (best certified critic value, −inf at the episode's start) and p
(relax probability, ``p_ep`` at the start, multiplied by λ every step)::

    cert  = q > Q* + Δ          # improvement certificate on the critic's value of the learner's proposal
    relax = U < p               # ONE uniform draw per decision, made whether or not the certificate fires
    learner acts  iff  cert or relax;  else the baseline acts
    p ← λ·p ;  if cert: Q* ← q

The baseline is a callable given to ``arbitrate`` (numpy in, numpy out); it is called only for the rows it must act
on and not at all when every row is granted to the learner — from the schedule's anneal fraction on (p = λ = 1) it is
never called. numpy only (nothing of ours, no torch): the same rule can run beside a robot with a numpy baseline.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

DELTA = 0.01
"""Certificate margin Δ: a proposal must beat the episode's best certified value by this much."""


class Arbitrator:
    """Arbitration state of ``num_envs`` parallel episodes and the per-step rule. ``authority`` True = learner."""

    def __init__(self, num_envs: int, delta: float = DELTA, seed: int = 0):
        if num_envs < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs!r}")
        if not delta >= 0:
            raise ValueError(f"delta: expected >= 0 (certificate margin), got {delta!r}")
        self.delta = float(delta)
        self.q_star = np.full(num_envs, -np.inf)
        self.p = np.ones(num_envs)
        self.rng = np.random.default_rng(seed)

    def start_episodes(self, envs, p_ep: float) -> None:
        """New episodes in ``envs`` (indices or a boolean mask): Q* = −inf, p = p_ep."""
        if not 0.0 <= p_ep <= 1.0:
            raise ValueError(f"p_ep: expected a probability in [0, 1], got {p_ep!r}")
        self.q_star[envs] = -np.inf
        self.p[envs] = p_ep

    def decide(self, q: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray]:
        """``(authority, certified)`` for critic values ``q`` [N] of the learner's proposals; advances p and Q*."""
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam: expected a decay factor in [0, 1], got {lam!r}")
        q = np.asarray(q, np.float64)
        certified = q > self.q_star + self.delta
        relax = self.rng.random(q.shape[0]) < self.p  # one draw per decision
        self.p *= lam
        self.q_star = np.where(certified, q, self.q_star)
        return certified | relax, certified

    def state_dict(self) -> dict:
        import json

        return {"q_star": self.q_star.tolist(), "p": self.p.tolist(), "delta": self.delta,
                "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        import json

        self.q_star = np.asarray(state["q_star"], np.float64)
        self.p = np.asarray(state["p"], np.float64)
        self.delta = float(state["delta"])
        self.rng.bit_generator.state = json.loads(state["rng"])


def arbitrate(obs: np.ndarray, proposals: np.ndarray, authority: np.ndarray,
              baseline: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The executed actions: the learner's proposal where it has authority, the baseline's action elsewhere (the
    baseline is called on those rows only, and not at all when there are none)."""
    executed = np.array(proposals, dtype=np.float64, copy=True)
    rows = np.flatnonzero(~np.asarray(authority, bool))
    if rows.size:
        executed[rows] = np.asarray(baseline(np.asarray(obs)[rows]), np.float64).reshape(rows.size, -1)
    return executed


__all__ = ["DELTA", "Arbitrator", "arbitrate"]
