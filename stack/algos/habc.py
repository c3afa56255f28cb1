"""HABC — hierarchical advantage-weighted behaviour cloning (Fang, Huang et al. 2026, arXiv 2606.17043; the method
note ``shared/methods/habc.md``; no official code): fine-tune a pretrained flow/diffusion policy from binary episode
outcomes and interventions without a policy gradient — a critic turns into per-sample weights on the policy's own
BC loss (``stack.algos.bc.BC``, flow matching or denoising).

* **Critic** (``HABCCritic``): a shared observation encoder φ(s) and two heads — the viability logit ``z_v(s)``
  (``p_v = sigmoid(z_v) ≈ P(success | s)``, BCE on the outcome of *attributable* frames) and the efficiency value
  ``V_e(s) ≈ −(discounted steps to success)`` (Huber TD, δ = 1, step cost −1, target 0 at the success step, on the
  frames of successful episodes up to their success step, policy and intervention alike).
* **Advantages and gate** (heads detached): ``A_v = z_v(s') − z_v(s)``, ``A_e = −1 + γ·V_e(s') − V_e(s)`` and
  ``g = 1 + tanh((1 − p_v(s))·A_v + p_v(s)·A_e) ∈ (0, 2)``: low viability → weight by viability progress, high →
  by efficiency. ``s'`` is ``advantage_steps`` frames ahead (k-step: ``A_e = −Σ_{i<k} γ^i + γ^k V_e(s') − V_e(s)``);
  the note's formulas are the case k = 1 (and γ = 1). ``g = 1`` during the first ``warmup_steps`` BC steps.
* **Per-sample weights** (``raw_weights``): demonstrations 1; successful autonomous frames g; failed autonomous 0;
  intervention windows 1, or g once ``reweight_interventions`` is on; unattributed frames (policy frames before an
  episode's last intervention) 0. The non-demonstration weights of a batch are normalised to mean 1
  (``normalise_weights``) and multiply the per-sample BC loss.
* **Intervention-aware credit** (``assign_credit``): a fully autonomous episode's outcome labels every frame; with
  any human-controlled frame, only the policy segment after the last one gets the outcome label; an earlier frame
  whose window (the ``window`` frames from it on: the note's windows are its policies' 50-step action chunks, so a
  window is what a sample imitates) holds at least ``intervention_threshold`` of ``window`` human-controlled frames
  is an intervention window — an imitation and efficiency target, never an outcome label — and the other earlier
  frames are unattributed (no label, weight 0). Set ``window`` to the policy's horizon (the preset: 4, threshold 1,
  the note's 20 %); with a window longer than the chunk, a takeover's last frames (whose window is mostly the
  policy's) are unattributed, as the note's definition implies.
* **Stale-policy cutoff**: a rollout whose ``policy_version`` is more than ``max_policy_lag`` versions behind the
  current policy is dropped, at the episode level when the data is assembled and at the batch level in
  ``weighted_bc_step`` (both counted).

Logs without authority flags are refused (``require_habc_fields``): the credit assignment would silently be wrong.
The rounds (rollouts with a simulated operator, storage, this update) are ``stack.runners.habc``'s.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stack.algos.bc import BC, ema_update
from stack.data.episodes import AUTHORITY, AUTHORITY_KEY, IS_INTERVENTION, MASK, DatasetError

# ---- sources of a frame ---------------------------------------------------------------------------------------------
DEMO, AUTO_SUCCESS, AUTO_FAILURE, INTERVENTION, UNATTRIBUTED = 0, 1, 2, 3, 4
SOURCE_NAMES = {DEMO: "demo", AUTO_SUCCESS: "auto_success", AUTO_FAILURE: "auto_failure",
                INTERVENTION: "intervention", UNATTRIBUTED: "unattributed"}
GATE_CLIP = 8.0
WEIGHTINGS = ("habc", "viability", "uniform", "filtered", "interventions")
"""``habc`` the gate of the note; ``viability`` its viability-only variant (g = 1 + tanh(A_v)); the peers on the
same data: ``uniform`` (plain BC), ``filtered`` (successful episodes only), ``interventions`` (HG-DAgger: the
human-controlled frames only). Demonstrations keep weight 1 in every one."""


@dataclass(frozen=True)
class HABCConfig:
    window: int = 50
    """Frames of a training window (the note's 50-step chunk)."""
    intervention_threshold: int = 10
    """A window with at least this many human-controlled frames (of ``window``) is an intervention window."""
    gamma: float = 0.99
    """Discount of the efficiency head (steps to success)."""
    advantage_steps: int = 1
    """k: s' is k frames ahead (the policy's act_steps makes it one decision)."""
    warmup_steps: int = 500
    """g = 1 for this many weighted BC steps (the critic is untrained at first)."""
    reweight_interventions: bool = False
    """Intervention windows get g instead of 1 (switch on once the viability head is trained)."""
    weighting: str = "habc"
    """One of ``WEIGHTINGS``."""
    max_policy_lag: int = 1
    """Rollouts of a policy more than this many versions behind the current one are dropped."""
    critic_hidden: tuple[int, ...] = (256, 256)
    critic_lr: float = 1e-3
    critic_batch_size: int = 256
    huber_delta: float = 1.0
    target_tau: float = 0.02
    """Polyak rate of the critic copy that gives V_e(s') in the TD target (the note's stopgrad, made stable: TD on a
    shared encoder bootstrapping from itself diverged in the tests)."""
    weight_eps: float = 1e-6
    """ε of the normalisation w = w̃ / max(mean(w̃), ε)."""

    def __post_init__(self):
        if not 1 <= self.intervention_threshold <= self.window:
            raise ValueError(f"intervention_threshold={self.intervention_threshold}; expected 1 ≤ it ≤ "
                             f"window={self.window}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.advantage_steps < 1 or not 0 < self.gamma <= 1:
            raise ValueError(f"advantage_steps={self.advantage_steps} (≥ 1), gamma={self.gamma} (in (0, 1])")


# ---- refusing logs HABC cannot use ----------------------------------------------------------------------------------
EPISODE_KEYS = ("outcome", "success_step", "policy_version")
FRAME_KEYS = (AUTHORITY_KEY, MASK, IS_INTERVENTION)


def require_habc_fields(features: Sequence[str], episodes: Sequence[dict], where: str = "dataset") -> None:
    """Refuse a log that lacks the per-frame authority flags or the per-episode outcome/version: HABC's credit
    assignment needs them to be reliable (the note's 'a log without them cannot be used')."""
    for key in FRAME_KEYS:
        if key not in features:
            raise DatasetError(f"{where}: HABC needs the per-frame field {key!r} (who commanded each action); this "
                               f"log has {sorted(features)}")
    for i, ep in enumerate(episodes):
        for key in EPISODE_KEYS:
            if key not in ep:
                raise DatasetError(f"{where} (episode {i}): HABC needs the episode field {key!r}")


def human_controlled(authority: np.ndarray, is_intervention: np.ndarray) -> np.ndarray:
    """Frames not commanded by the policy alone: authority human/baseline, or any dimension overridden."""
    return (np.asarray(authority) != AUTHORITY["policy"]) | np.asarray(is_intervention, bool)


# ---- intervention-aware credit assignment ---------------------------------------------------------------------------
def intervention_windows(human: np.ndarray, window: int, threshold: int) -> np.ndarray:
    """Per frame t: whether its window — the ``window`` frames [t, t + window), the stretch the sample's action chunk
    covers, clipped to the episode — holds at least threshold/window human-controlled frames."""
    human = np.asarray(human, bool)
    n = len(human)
    csum = np.concatenate([[0], np.cumsum(human)])
    start = np.arange(n)
    end = np.minimum(start + window, n)
    count = csum[end] - csum[start]
    return count * window >= threshold * (end - start)


def assign_credit(human: np.ndarray, success: bool, window: int = 50, threshold: int = 10
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(source [T], outcome label [T], NaN where none) of one rollout episode.

    No human-controlled frame: every frame is autonomous and labelled with the outcome. Otherwise only the frames
    after the last human-controlled one are; earlier frames are intervention windows (imitation/efficiency targets,
    no label) or unattributed (no label, no weight).
    """
    human = np.asarray(human, bool)
    n = len(human)
    auto = AUTO_SUCCESS if success else AUTO_FAILURE
    source = np.full(n, auto, np.int8)
    label = np.full(n, 1.0 if success else 0.0)
    if human.any():
        last = int(np.flatnonzero(human)[-1])
        before = np.arange(n) <= last
        windows = intervention_windows(human, window, threshold)
        source[before] = np.where(windows[before], INTERVENTION, UNATTRIBUTED)
        label[before] = np.nan
    return source, label


# ---- the critic -----------------------------------------------------------------------------------------------------
class HABCCritic(nn.Module):
    """φ(s) → (viability logit z_v [B], efficiency value V_e [B]). LayerNorm in the encoder: on separable outcomes the
    BCE keeps growing the shared features, and the efficiency head (Huber: bounded gradients) could not follow."""

    def __init__(self, obs_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        layers: list[nn.Module] = []
        width = obs_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.LayerNorm(h), nn.SiLU()]
            width = h
        self.encoder = nn.Sequential(*layers)
        self.viability = nn.Linear(width, 1)
        self.efficiency = nn.Linear(width, 1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(obs)
        return self.viability(h).squeeze(-1), self.efficiency(h).squeeze(-1)


def viability_loss(z: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(z, label)


def efficiency_target(v_next: torch.Tensor, terminal: torch.Tensor, gamma: float) -> torch.Tensor:
    """y_e = 0 at the success step, else −1 + γ·stopgrad(V_e(s'))."""
    return torch.where(terminal, torch.zeros_like(v_next), -1.0 + gamma * v_next.detach())


def advantages(z: torch.Tensor, z_next: torch.Tensor, v: torch.Tensor, v_next: torch.Tensor, k: torch.Tensor,
               gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_v, A_e) over k frames [B]: A_v = z_v(s') − z_v(s); A_e = −Σ_{i<k} γ^i + γ^k·V_e(s') − V_e(s)."""
    k = k.to(v.dtype)
    cost = k if gamma == 1.0 else (1.0 - gamma**k) / (1.0 - gamma)
    return z_next - z, -cost + gamma**k * v_next - v


def gate(z: torch.Tensor, a_v: torch.Tensor, a_e: torch.Tensor, viability_only: bool = False) -> torch.Tensor:
    """g = 1 + tanh((1 − p_v)·A_v + p_v·A_e) ∈ (0, 2) (viability-only: 1 + tanh(A_v)); inputs detached. The
    argument is clipped to ±8: beyond ~9 float32's tanh rounds to ±1 and g would touch 0 or 2."""
    z, a_v, a_e = z.detach(), a_v.detach(), a_e.detach()
    if viability_only:
        x = a_v
    else:
        p = torch.sigmoid(z)
        x = (1.0 - p) * a_v + p * a_e
    return 1.0 + torch.tanh(x.clamp(-GATE_CLIP, GATE_CLIP))


# ---- weights --------------------------------------------------------------------------------------------------------
def raw_weights(source: torch.Tensor, g: torch.Tensor, cfg: HABCConfig, step: int) -> torch.Tensor:
    """HABC's per-sample weights before normalisation (the note's table); g = 1 before ``cfg.warmup_steps``."""
    one, zero = torch.ones_like(g), torch.zeros_like(g)
    g = one if step < cfg.warmup_steps else g
    out = torch.where(source == AUTO_SUCCESS, g, zero)  # failed autonomous and unattributed frames: 0
    out = torch.where(source == DEMO, one, out)
    return torch.where(source == INTERVENTION, g if cfg.reweight_interventions else one, out)


def peer_weights(weighting: str, source: torch.Tensor, episode_success: torch.Tensor, human: torch.Tensor
                 ) -> torch.Tensor:
    """The non-HABC peers' weights: plain BC 1; filtered BC 1 on successful episodes; HG-DAgger 1 on human frames;
    demonstrations 1 in each."""
    demo = source == DEMO
    if weighting == "uniform":
        keep = torch.ones_like(demo)
    elif weighting == "filtered":
        keep = demo | episode_success
    elif weighting == "interventions":
        keep = demo | human
    else:
        raise ValueError(f"peer_weights: expected 'uniform', 'filtered' or 'interventions', got {weighting!r}")
    return keep.float()


def normalise_weights(w: torch.Tensor, is_demo: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Non-demonstration weights divided by max(their mean, ε) (mean 1); demonstrations keep theirs."""
    rest = ~is_demo
    if not rest.any():
        return w
    mean = w[rest].mean().clamp_min(eps)
    return torch.where(rest, w / mean, w)


def stale(policy_version: torch.Tensor, current: int, max_lag: int) -> torch.Tensor:
    """Rollout samples whose policy is more than ``max_lag`` versions older than ``current`` (demos: version −1,
    never stale)."""
    return (policy_version >= 0) & (current - policy_version > max_lag)


# ---- the update -----------------------------------------------------------------------------------------------------
class HABC:
    """The critic, its optimiser, and the weighted BC step on a ``BC`` (its policy, optimiser, EMA, lr schedule)."""

    def __init__(self, bc: BC, obs_dim: int, cfg: HABCConfig, device: str | torch.device = "cpu"):
        self.bc, self.cfg, self.device = bc, cfg, torch.device(device)
        self.critic = HABCCritic(obs_dim, cfg.critic_hidden).to(self.device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.policy_version = 0
        self.bc_steps = 0
        self.critic_steps = 0
        self.stale_batches = 0
        self.stale_samples = 0

    @property
    def viability_only(self) -> bool:
        return self.cfg.weighting == "viability"

    def critic_step(self, obs: torch.Tensor, label: torch.Tensor, eff_obs: torch.Tensor, eff_next: torch.Tensor,
                    eff_terminal: torch.Tensor) -> dict:
        """One step: BCE of z_v on labelled frames (obs, label) + Huber TD of V_e on successful-episode frames."""
        loss = torch.zeros((), device=self.device)
        out = {}
        if len(obs):
            z, _ = self.critic(obs)
            lv = viability_loss(z, label)
            loss = loss + lv
            out["viability_loss"] = float(lv.detach())
        if len(eff_obs) and not self.viability_only:
            _, v = self.critic(eff_obs)
            with torch.no_grad():
                _, v_next = self.critic_target(eff_next)
            target = efficiency_target(v_next, eff_terminal, self.cfg.gamma)
            le = F.huber_loss(v, target, delta=self.cfg.huber_delta)
            loss = loss + le
            out["efficiency_loss"] = float(le.detach())
        if loss.requires_grad:
            self.critic_optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.critic_optimizer.step()
            ema_update(self.critic_target, self.critic, 1.0 - self.cfg.target_tau)
        self.critic_steps += 1
        return out

    @torch.no_grad()
    def gates(self, obs: torch.Tensor, obs_next: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """g of every frame (obs [N, obs_dim], s' = obs_next, k frames apart), with the parts behind it."""
        z, v = self.critic(obs)
        z_next, v_next = self.critic(obs_next)
        a_v, a_e = advantages(z, z_next, v, v_next, k, self.cfg.gamma)
        g = gate(z, a_v, a_e, self.viability_only)
        return g, {"p_v": torch.sigmoid(z), "a_v": a_v, "a_e": a_e}

    def sample_weights(self, source: torch.Tensor, g: torch.Tensor, episode_success: torch.Tensor,
                       human: torch.Tensor) -> torch.Tensor:
        """Normalised per-sample weights of a batch under ``cfg.weighting`` at the current BC step."""
        if self.cfg.weighting in ("habc", "viability"):
            w = raw_weights(source, g, self.cfg, self.bc_steps)
        else:
            w = peer_weights(self.cfg.weighting, source, episode_success, human)
        return normalise_weights(w, source == DEMO, self.cfg.weight_eps)

    def weighted_bc_step(self, obs: torch.Tensor, actions: torch.Tensor, source: torch.Tensor, g: torch.Tensor,
                         episode_success: torch.Tensor, human: torch.Tensor, policy_version: torch.Tensor
                         ) -> tuple[float | None, torch.Tensor | None]:
        """Drop the batch's stale samples (counted; a batch left empty is dropped and counted), weight, step.
        Returns (loss, weights), (None, None) for a dropped batch."""
        old = stale(policy_version, self.policy_version, self.cfg.max_policy_lag)
        if old.any():
            self.stale_samples += int(old.sum())
            keep = ~old
            if not keep.any():
                self.stale_batches += 1
                return None, None
            obs, actions, source, g = obs[keep], actions[keep], source[keep], g[keep]
            episode_success, human = episode_success[keep], human[keep]
        w = self.sample_weights(source, g, episode_success, human)
        loss = self.bc.train_step(obs, actions, weights=w)
        self.bc_steps += 1
        return loss, w

    def state_dict(self) -> dict:
        return {"critic": self.critic.state_dict(), "critic_target": self.critic_target.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict(),
                "bc": self.bc.state_dict(), "policy_version": self.policy_version, "bc_steps": self.bc_steps,
                "critic_steps": self.critic_steps, "stale_batches": self.stale_batches,
                "stale_samples": self.stale_samples}

    def load_state_dict(self, state: dict) -> None:
        self.critic.load_state_dict(state["critic"])
        self.critic_target.load_state_dict(state["critic_target"])
        self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        self.bc.load_state_dict(state["bc"])
        for key in ("policy_version", "bc_steps", "critic_steps", "stale_batches", "stale_samples"):
            setattr(self, key, int(state[key]))


__all__ = ["AUTO_FAILURE", "AUTO_SUCCESS", "DEMO", "HABC", "HABCConfig", "HABCCritic", "INTERVENTION",
           "SOURCE_NAMES", "UNATTRIBUTED", "WEIGHTINGS", "advantages", "assign_credit", "efficiency_target", "gate",
           "human_controlled", "intervention_windows", "normalise_weights", "peer_weights", "raw_weights",
           "require_habc_fields", "stale"]
