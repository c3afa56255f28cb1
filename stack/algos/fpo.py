"""FPO: Flow Policy Optimization (McAllister, Ge, Yi et al. 2025, arXiv 2507.21053; akanazawa/fpo) with the FPO++
options (Yi, Choi et al. 2026, arXiv 2602.02481; amazon-far/fpo-control).

A flow-matching policy has no tractable likelihood, so FPO replaces PPO's likelihood ratio by one built from
conditional flow-matching (CFM) losses, an ELBO surrogate. At rollout time every decision's pre-clip sample a (the
action chunk, x_τ=0 of the Euler ODE from random noise) gets N_mc stored pairs (τ_i, ε_i), and the loss of each under
the rollout parameters (ℓ_old) is taken in one batched pass when the update begins, before any parameter moves::

    ℓ(τ, ε) = Σ_{h < executed} mean_d (x_τ + (1 − τ)·v_θ(x_τ, τ, s) − ε)²_{h,d},   x_τ = τ·ε + (1 − τ)·a
              ("epsilon" mode: the velocity output supervised as ε-MSE, FPO's default; "velocity": (v − (ε − a))²)

summed over the chunk's executed actions (FPO++'s chunk-level ratio; an env whose episode ended inside the chunk
counts only the actions it executed; one action per decision is FPO's setting), each a mean over action dims as the
reference. Every epoch recomputes ℓ_θ on the *stored* pairs::

    FPO     r   = exp(mean_i ℓ_old,i − mean_i ℓ_θ,i)                one ratio per decision
    FPO++   ρ_i = exp(ℓ_old,i − ℓ_θ,i)                             one per sample, same advantage for all i
            only ℓ_old is clamped, at ``loss_clamp`` (4), per chunk position before the chunk sum; ℓ_θ never is,
            so a sample whose ℓ_θ rises above the clamp gets a ratio < 1 that pulls it back (FPO++'s
            ``clamp_old_cfm_loss``, amazon-far/fpo-control ``finetune_online_rl.py``); the log-ratio is clamped
            at ±``log_ratio_clamp`` (5) straight-through (clamped forward, unclamped gradient), as that code does

    L_π = E[max(−Â r, −Â clip(r, 1 ± ε))]                          PPO-clip, ε = 0.05
    ASPO (FPO++): Â ≥ 0 → PPO-clip;  Â < 0 → −(ρÂ − |Â|/(2ε)·(ρ − 1)²)  (SPO: pulls ρ back to 1 from both sides)
    loss = L_π + vf_coef·½E[(V − R)²]                               no entropy term

with advantages from the runner's GAE (over decisions), normalised per minibatch. Evaluation and deployment use
zero-sampling (FPO++): the ODE starts from ε = 0, so the policy is deterministic.

Agency transfer (agency_fpo, ``stack.algos.agency_on_policy``): a rollout with an ``authority`` extra has the
baseline's decisions masked out of the surrogate, KL and clip fraction (advantages normalised over the learner's);
the value loss uses every decision.
"""

from __future__ import annotations


import torch
from torch import nn

from stack import distributed
from stack.algos.on_policy import (OnPolicyAlgorithm, explained_variance, masked_mean, normalize_advantages,
                                   ppo_clip_objective, value_loss)
from stack.config import FPOConfig
from stack.rollout import RolloutStorage

LOG_RATIO_GUARD = 20.0
"""|log r| beyond which the log-ratio is clamped (straight-through) when no log_ratio_clamp is set."""
VARIANT_DEFAULTS = {
    "fpo": {"per_sample_ratio": False, "trust_region": "ppo", "loss_clamp": None, "log_ratio_clamp": None},
    "fpo++": {"per_sample_ratio": True, "trust_region": "aspo", "loss_clamp": 4.0, "log_ratio_clamp": 5.0},
}


def resolve_options(cfg: FPOConfig) -> dict:
    """The ratio/objective options with the variant's defaults filled in where the config leaves None."""
    if cfg.variant not in VARIANT_DEFAULTS:
        raise ValueError(f"fpo.variant={cfg.variant!r}; expected one of {sorted(VARIANT_DEFAULTS)}")
    out = {}
    for key, default in VARIANT_DEFAULTS[cfg.variant].items():
        value = getattr(cfg, key)
        out[key] = default if value is None else value
    for key in ("loss_clamp", "log_ratio_clamp"):
        if out[key] is not None and out[key] <= 0:
            out[key] = None
    return out


# ---- the loss's pieces (called directly by the tests) ---------------------------------------------------------------
def cfm_losses(policy: nn.Module, obs: torch.Tensor, actions: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor,
               mode: str = "epsilon") -> torch.Tensor:
    """Per-position CFM losses of N_mc pairs: obs [B, obs_dim], actions [B, H, A], tau [B, N], eps [B, N, H, A]
    → [B, N, H], each the mean over action dims (``FlowPolicy.cfm_loss`` with ``reduction="per_position"``: H kept
    apart so a chunk cut short by an episode's end counts only the actions it executed)."""
    return policy.cfm_loss(obs, actions, tau, eps, mode=mode, reduction="per_position")


def clamp_ste(x: torch.Tensor, min: float | None = None, max: float | None = None) -> torch.Tensor:  # noqa: A002
    """Clamp in the forward pass, identity in the backward pass (straight-through)."""
    return x + (x.clamp(min=min, max=max) - x).detach()


def fpo_log_ratio(loss_old: torch.Tensor, loss_new: torch.Tensor, per_sample: bool, loss_clamp: float | None,
                  log_ratio_clamp: float | None) -> torch.Tensor:
    """Log-ratio from per-sample chunk losses [B, N]: [B, N] per sample (FPO++), else [B, 1] from the means (FPO).

    ``loss_clamp`` clamps ℓ_old only (a rollout-time constant), never ℓ_θ: for ℓ_old = 5, ℓ_θ = 6 and clamp 4 the
    ratio is exp(4 − 6) = 0.135, which pulls ℓ_θ back (FPO++'s ``clamp_old_cfm_loss``). ``FPO`` clamps ℓ_old per chunk
    position before summing the chunk (as the FPO++ code) and passes ``loss_clamp=None`` here."""
    if loss_clamp is not None:
        loss_old = loss_old.clamp(max=loss_clamp)
    if per_sample:
        log_ratio = loss_old - loss_new
    else:
        log_ratio = loss_old.mean(-1, keepdim=True) - loss_new.mean(-1, keepdim=True)
    # FPO++'s clamp when set; else only a numerical guard far outside any ratio the clip lets matter: exp overflows
    # past ~88 once pre-clip samples drift far, and 0·inf then turns even a clipped sample's gradient into NaN.
    bound = LOG_RATIO_GUARD if log_ratio_clamp is None else log_ratio_clamp
    return clamp_ste(log_ratio, -bound, bound)


def fpo_policy_loss(ratio: torch.Tensor, advantages: torch.Tensor, clip: float, trust_region: str = "ppo",
                    rows: torch.Tensor | None = None) -> torch.Tensor:
    """Surrogate to minimise, mean over every ratio; ``advantages`` broadcast against ``ratio`` ([B, 1] vs [B, N]);
    ``rows`` [B] (bool): the mean over those decisions' ratios only (agency transfer's learner steps).

    'ppo': max(−Â r, −Â clip(r, 1 ± ε)). 'aspo' (FPO++): that for Â ≥ 0 and the SPO objective for Â < 0,
    −(Âρ − |Â|/(2ε)·(ρ − 1)²), whose gradient |Â|·(1 + (ρ − 1)/ε) vanishes at ρ = 1 − ε: a ratio that overshot below
    1 − ε is pulled back up (PPO-clip's gradient is zero there), one above is pushed down.
    """
    adv = advantages.expand_as(ratio)
    mask = None if rows is None else rows.unsqueeze(-1).expand_as(ratio)
    ppo = ppo_clip_objective(ratio, adv, clip)
    if trust_region == "ppo":
        return masked_mean(ppo, mask)
    if trust_region != "aspo":
        raise ValueError(f"trust_region={trust_region!r}; expected 'ppo' or 'aspo'")
    spo = -(adv * ratio - adv.abs() / (2.0 * clip) * (ratio - 1.0).pow(2))
    return masked_mean(torch.where(adv >= 0, ppo, spo), mask)


# ---- the algorithm --------------------------------------------------------------------------------------------------
class FPO(OnPolicyAlgorithm):
    """FPO / FPO++ on a ``policies.FlowPolicy`` and a state-value critic ``V(s) -> [B]``."""

    def __init__(self, policy: nn.Module, critic: nn.Module, cfg: FPOConfig, device: str | torch.device = "cpu",
                 seed: int = 0, act_steps: int | None = None):
        if getattr(policy, "kind", None) != "flow":
            raise TypeError(f"FPO trains a flow policy (policies.FlowPolicy), got {type(policy).__name__}")
        if policy.obs_steps != 1:
            raise ValueError(f"FPO here conditions on one observation; the policy has obs_steps={policy.obs_steps}")
        self.cfg = cfg
        self.opts = resolve_options(cfg)
        self.device = torch.device(device)
        self.policy = policy.to(self.device)
        self.critic = critic.to(self.device)
        self.act_steps = int(act_steps or policy.act_steps)
        if not 1 <= self.act_steps <= policy.horizon:
            raise ValueError(f"act_steps={self.act_steps}; expected 1 ≤ act_steps ≤ horizon={policy.horizon}")
        self.eval_steps = int(cfg.eval_steps or policy.euler_steps)
        self.updates = 0
        """Updates done (critic-only ones included): the first ``n_critic_warmup_itr`` leave the flow as it is."""
        critic_lr = cfg.lr if cfg.critic_lr is None else cfg.critic_lr
        # One Adam, two parameter groups (actor, critic): FPO++ fine-tuning gives them different rates, which the
        # learning-rate schedule keeps in ratio.
        self.optimizer = torch.optim.Adam([{"params": list(self.policy.parameters()), "lr": cfg.lr},
                                           {"params": list(self.critic.parameters()), "lr": critic_lr}])
        self.parameters = [*self.policy.parameters(), *self.critic.parameters()]
        # Own generators, saved with the checkpoint, so a resumed run draws the same chunks, pairs and minibatches.
        self.sample_generator = torch.Generator(device=self.device).manual_seed(seed)
        self.pair_generator = torch.Generator(device=self.device).manual_seed(seed + 2)
        self._setup({"optimizer": self.optimizer},
                    {"sample_generator": self.sample_generator, "pair_generator": self.pair_generator,
                     "shuffle_generator": torch.Generator().manual_seed(seed + 1)})

    # ---- checkpoints --------------------------------------------------------------------------------------------
    def flow_scales(self) -> dict[str, float]:
        return {"output_scale": float(self.policy.output_scale), "noise_scale": float(self.policy.noise_scale)}

    def state_dict(self) -> dict:
        return {**super().state_dict(), "flow_scales": self.flow_scales(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the run's flow must have the scales it was trained with. A run written before the scales were
        part of the forward pass (no ``flow_scales``: its weights carry the old init-time ×0.25) resumed with
        ``output_scale`` 0.25 would scale its velocities twice — refused, naming the fix."""
        from stack.checkpoint import CheckpointError

        saved = state.get("flow_scales", {"output_scale": 1.0, "noise_scale": 1.0})
        if saved != self.flow_scales():
            hint = (" (a run from before output_scale became a forward-pass multiplier: its weights already carry it;"
                    " resume with --fpo.output-scale 1 --fpo.noise-scale 1)" if "flow_scales" not in state else "")
            raise CheckpointError(f"the checkpoint's flow was trained with {saved}; this run's flow has "
                                  f"{self.flow_scales()}{hint}")
        super().load_state_dict(state)
        self.updates = int(state.get("updates", 0))

    # ---- acting (the collector's Agent protocol) ----------------------------------------------------------------
    def extras_spec(self) -> dict[str, tuple[int, ...]]:
        p, n = self.policy, self.cfg.n_mc
        return {"x0": (p.horizon, p.act_dim), "tau": (n,), "eps": (n, p.horizon, p.act_dim)}

    def policy_modules(self) -> dict[str, nn.Module]:
        return {"policy": self.policy, "critic": self.critic}

    def eval_sampling(self) -> dict:
        """How a loaded checkpoint samples (``stack.controller``): zero-sampling with the evaluation Euler steps."""
        return {"zero_noise": True, "steps": self.eval_steps}

    def draw_pairs(self, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """N_mc (τ, ε) pairs per decision: τ [b, N] (U(0, 1) or the Euler grid), ε [b, N, H, A] ~ N(0, I)."""
        p, n, g = self.policy, self.cfg.n_mc, self.pair_generator
        if self.cfg.tau_sampling == "grid":
            k = torch.randint(0, p.euler_steps, (b, n), generator=g, device=self.device)
            tau = 1.0 - k.float() / p.euler_steps
        else:
            tau = torch.rand((b, n), generator=g, device=self.device)
        eps = torch.randn((b, n, p.horizon, p.act_dim), generator=g, device=self.device)
        return tau, eps

    @torch.no_grad()
    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Euler ODE from random noise → (pre-clip chunk [N, act_steps, A], {x0, tau, eps}, V [N]).

        ℓ_old of the stored pairs is not taken here but at the start of ``update``, in one batched pass over the whole
        rollout: the parameters have not changed since the rollout began, so it is the same number, at a fraction of
        the cost of one small-batch pass per decision."""
        p = self.policy
        noise = torch.randn((obs.shape[0], p.horizon, p.act_dim), generator=self.sample_generator, device=self.device)
        _, x0 = p.sample(obs, noise=noise, return_presquash=True)
        tau, eps = self.draw_pairs(obs.shape[0])
        extras = {"x0": x0, "tau": tau, "eps": eps}
        return x0[:, : self.act_steps], extras, self.critic(obs)

    @torch.no_grad()
    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs)

    # ---- learning -----------------------------------------------------------------------------------------------
    def chunk_losses(self, obs: torch.Tensor, x0: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor,
                     executed: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
        """ℓ_θ of each stored pair, summed over the executed actions of the chunk → [B, N]; ``clamp``: each position's
        loss clamped at this first (ℓ_old only)."""
        per_pos = cfm_losses(self.policy, obs, x0, tau, eps, self.cfg.loss_mode)
        if clamp is not None:
            per_pos = per_pos.clamp(max=clamp)
        return (per_pos * executed_mask(executed, x0.shape[1])).sum(-1)

    @torch.no_grad()
    def old_losses(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """ℓ_old [B, N] of every stored pair under the rollout parameters, in one batched pass, each chunk position
        clamped at ``loss_clamp`` (FPO++) before the chunk sum."""
        return self.chunk_losses(b["obs"], b["x0"], b["tau"], b["eps"], b["executed"], self.opts["loss_clamp"])

    def minibatch_loss(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one minibatch (fields of ``storage.flat()`` and ``loss_old`` from ``old_losses``; without it,
        ℓ_old is taken now, i.e. at the current parameters) and its statistics (detached)."""
        cfg, o = self.cfg, self.opts
        loss_old = mb["loss_old"] if "loss_old" in mb else self.old_losses(mb)
        loss_new = self.chunk_losses(mb["obs"], mb["x0"], mb["tau"], mb["eps"], mb["executed"])
        # ℓ_old arrives clamped (``old_losses``); ℓ_θ is never clamped
        log_ratio = fpo_log_ratio(loss_old, loss_new, o["per_sample_ratio"], None, o["log_ratio_clamp"])
        # Agency transfer: the baseline's decisions (authority 0) are masked out of the actor's terms (their stored
        # pairs are of the unexecuted proposal); the critic trains on every decision.
        learner = mb["authority"] > 0.5 if "authority" in mb else None
        per_ratio = None if learner is None else learner.unsqueeze(-1).expand_as(log_ratio)
        if learner is not None:
            log_ratio = torch.where(per_ratio, log_ratio, torch.zeros_like(log_ratio))
        ratio = log_ratio.exp()
        adv = mb["advantages"]
        if cfg.norm_adv:
            adv = normalize_advantages(adv, learner)
        pg_loss = fpo_policy_loss(ratio, adv.unsqueeze(-1), cfg.clip_coef, o["trust_region"], learner)
        v_loss = value_loss(self.critic(mb["obs"]), mb["values"], mb["returns"],
                            cfg.clip_coef if cfg.clip_vloss else None)
        with torch.no_grad():
            stats = {"policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
                     "approx_kl": masked_mean((ratio - 1.0) - log_ratio, per_ratio),
                     "clipfrac": masked_mean(((ratio - 1.0).abs() > cfg.clip_coef).float(), per_ratio),
                     "ratio_dev": (ratio - 1.0).abs().max(), "cfm_loss": loss_new.detach().mean()}
        return pg_loss + cfg.vf_coef * v_loss, stats

    def update(self, storage: RolloutStorage) -> dict[str, float]:
        """Epochs of minibatch steps on one rollout, every epoch on the same stored (τ, ε) pairs."""
        cfg = self.cfg
        b = storage.flat()
        if self.updates < cfg.n_critic_warmup_itr:
            return self._warm_critic(b)
        self.updates += 1
        keys = ("obs", "x0", "tau", "eps", "executed", "advantages", "values", "returns", "authority")
        data = {k: b[k] for k in keys if k in b}
        data["loss_old"] = self.old_losses(data)
        stats: list[dict[str, torch.Tensor]] = []
        for _epoch in range(cfg.update_epochs):
            for mb in self.epoch_minibatches(data, cfg.num_minibatches):
                loss, st = self.minibatch_loss(mb)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                distributed.all_reduce_gradients(self.parameters)  # several learner processes: their mean
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(self.parameters, cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                stats.append(st)
        keys = [k for k in stats[0] if k != "ratio_dev"]
        means = distributed.all_mean(torch.stack([torch.stack([s[k] for s in stats]).mean() for k in keys]))
        out = dict(zip(keys, means.tolist()))
        # max |r − 1| over the first minibatch of the first epoch: 0 unless acting and updating disagree.
        out["first_ratio_dev"] = float(distributed.all_max(stats[0]["ratio_dev"]))
        out["max_ratio_dev"] = float(distributed.all_max(torch.stack([s["ratio_dev"] for s in stats]).max()))
        out["explained_variance"] = explained_variance(b["values"], b["returns"])
        return out

    def _warm_critic(self, b: dict[str, torch.Tensor]) -> dict[str, float]:
        """A critic-only update: ``critic_warmup_epochs`` (or ``update_epochs``) epochs of unclipped ½(V − R)² over
        the rollout's decisions. The actor's gradients stay None, so Adam leaves the flow (and its moments) as they
        are: the rollouts of these iterations are the pretrained flow's."""
        cfg = self.cfg
        fields = {k: b[k] for k in ("obs", "values", "returns")}
        losses = []
        for _epoch in range(cfg.critic_warmup_epochs or cfg.update_epochs):
            for mb in self.epoch_minibatches(fields, cfg.num_minibatches):
                v_loss = value_loss(self.critic(mb["obs"]), mb["values"], mb["returns"], None)
                self.optimizer.zero_grad(set_to_none=True)
                (cfg.vf_coef * v_loss).backward()
                distributed.all_reduce_gradients(self.critic.parameters())
                if cfg.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(list(self.critic.parameters()), cfg.max_grad_norm, foreach=True)
                self.optimizer.step()
                losses.append(float(v_loss.detach()))
        self.updates += 1
        with torch.no_grad():
            fitted = self.critic(b["obs"])
        return {"value_loss": float(distributed.all_mean(torch.tensor(sum(losses) / len(losses)))),
                "critic_warmup": 1.0,
                "explained_variance": explained_variance(b["values"], b["returns"]),
                "explained_variance_after": explained_variance(fitted, b["returns"])}


def executed_mask(executed: torch.Tensor, horizon: int) -> torch.Tensor:
    """[B] executed action counts → [B, 1, H] float mask of the chunk positions that reached the env."""
    pos = torch.arange(horizon, device=executed.device)
    return (pos < executed.reshape(-1, 1)).to(torch.float32).unsqueeze(1)


# ---- construction (the runner's entry point) -------------------------------------------------------------------------
def build_flow_policy(cfg: FPOConfig, obs_dim: int, act_dim: int) -> nn.Module:
    """A fresh flow policy (training from scratch): FPO's small velocity MLP whose output is multiplied by
    ``output_scale`` in every forward pass (FPO's ``policy_mlp_output_scale`` 0.25, akanazawa/fpo
    ``playground/src/flow_policy/fpo.py``), with its source noise N(0, ``noise_scale``²I) (``policies/flow.py``)."""
    from policies import FlowPolicy

    act_steps = cfg.act_steps or cfg.horizon
    return FlowPolicy(obs_dim, act_dim, horizon=cfg.horizon, act_steps=act_steps, euler_steps=cfg.euler_steps,
                      hidden=cfg.hidden, activation=cfg.activation, loss_mode=cfg.loss_mode,
                      output_scale=cfg.output_scale, noise_scale=cfg.noise_scale)


def make_algo(cfg, obs_dim: int, act_dim: int, device: str | torch.device = "cpu",
              pretrained: nn.Module | None = None) -> FPO:
    """FPO for the runner (``cfg`` a TrainConfig: its ``fpo`` section and ``seed``): a fresh flow policy, or the
    BC-pretrained one (``init_from``) with its own horizon, act_steps (unless ``fpo.act_steps`` is set) and Euler
    steps."""
    from policies import ValueNet

    f: FPOConfig = cfg.fpo
    if pretrained is not None:
        if getattr(pretrained, "kind", None) != "flow":
            raise TypeError(f"FPO fine-tunes a flow policy; init_from holds a {type(pretrained).__name__}")
        policy, act_steps = pretrained, f.act_steps or pretrained.act_steps
    else:
        policy = build_flow_policy(f, obs_dim, act_dim)
        act_steps = policy.act_steps
    critic = ValueNet(obs_dim, hidden=f.critic_hidden, activation=f.critic_activation)
    return FPO(policy, critic, f, device, seed=cfg.seed, act_steps=act_steps)


__all__ = ["FPO", "FPOConfig", "build_flow_policy", "cfm_losses", "clamp_ste", "executed_mask", "fpo_log_ratio",
           "fpo_policy_loss", "make_algo", "resolve_options"]
