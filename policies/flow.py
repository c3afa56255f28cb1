"""Flow-matching (rectified flow) policy over an action chunk, with the CFM loss FPO's ratio is built from.

Convention (FPO's): x_τ = τ·ε + (1 − τ)·a, τ = 1 is noise, τ = 0 the action chunk a ∈ [-1, 1]^{H × act_dim}
(normalised action space; normalisation belongs to the trainer). The network predicts the velocity
v_θ(x_τ, τ, s) ≈ dx_τ/dτ = ε − a. Sampling integrates the ODE with K uniform Euler steps from τ = 1 to 0,
x ← x − (1/K)·v(x, τ_k), τ_k = 1 − k/K; any K works at inference. Zero-sampling (FPO++) starts from ε = 0.
The sample is clipped to [-1, 1] at the end; ``sample(..., return_presquash=True)`` also returns the unclipped one.

Two scales, both part of every forward pass (so they travel with the checkpoint's config and into the ONNX graph):

* ``output_scale`` c: the velocity is c·net(x_τ, τ, s) (FPO's ``policy_mlp_output_scale`` 0.25: a fresh network's
  velocity is small, so its samples start near the noise);
* ``noise_scale`` σ: the flow's source is N(0, σ²I) instead of N(0, I). It is implemented as a flow over z = a/σ
  (the ODE integrates z from ε ~ N(0, I), the action is σ·z; the CFM loss is taken on z = a/σ): the same flow as one
  from σ·ε, with its losses in units of σ, which leaves every likelihood ratio unchanged (a constant change of
  variables cancels in a ratio). A fresh flow's actions then have std ≈ σ — how FPO on ``reach`` starts at the same
  action std as PPO's Gaussian (exp(−1) ≈ 0.37) instead of ≈ 1.

Both default to 1 (plain flow matching; BC and checkpoints written before these options load unchanged).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from policies.common import ChunkDenoiser, check_chunk, flatten_obs, register

LOSS_MODES = ("velocity", "epsilon")
REDUCTIONS = ("sum", "per_position")


@register
class FlowPolicy(nn.Module):
    """Velocity network ``self.net`` (a ``ChunkDenoiser``, plain MLP trunk) + Euler sampler + CFM loss.

    loss_mode: "velocity" (default, plain flow matching: ‖v − (ε − a)‖²) or "epsilon" (FPO's default: ε̂ = x_τ +
    (1 − τ)·v supervised by ‖ε̂ − ε‖² = (1 − τ)²·‖v − (ε − a)‖²). BC uses "velocity" by default because the ε form gives
    zero weight to τ → 1, the very velocity a zero-noise or 1-step sampler starts from; FPO passes mode="epsilon".
    """

    kind = "flow"

    def __init__(self, obs_dim: int, act_dim: int, horizon: int = 4, act_steps: int = 4, obs_steps: int = 1,
                 euler_steps: int = 10, hidden: Sequence[int] = (256, 256, 256), time_emb_dim: int = 16,
                 activation: str = "silu", time_scale: float = 100.0, loss_mode: str = "velocity",
                 action_clip: float = 1.0, output_scale: float = 1.0, noise_scale: float = 1.0):
        super().__init__()
        if not 1 <= act_steps <= horizon:
            raise ValueError(f"act_steps={act_steps}; expected 1 ≤ act_steps ≤ horizon={horizon}")
        if loss_mode not in LOSS_MODES:
            raise ValueError(f"loss_mode={loss_mode!r}; expected one of {LOSS_MODES}")
        if not (output_scale > 0 and noise_scale > 0):
            raise ValueError(f"output_scale={output_scale}, noise_scale={noise_scale}; both must be > 0")
        self.config = dict(obs_dim=obs_dim, act_dim=act_dim, horizon=horizon, act_steps=act_steps,
                           obs_steps=obs_steps, euler_steps=euler_steps, hidden=tuple(hidden),
                           time_emb_dim=time_emb_dim, activation=activation, time_scale=time_scale,
                           loss_mode=loss_mode, action_clip=action_clip, output_scale=float(output_scale),
                           noise_scale=float(noise_scale))
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.horizon, self.act_steps, self.obs_steps = horizon, act_steps, obs_steps
        self.euler_steps, self.loss_mode, self.action_clip = euler_steps, loss_mode, action_clip
        self.output_scale, self.noise_scale = float(output_scale), float(noise_scale)
        # τ ∈ [0, 1] is scaled by time_scale before the sinusoid so its fast frequencies vary across [0, 1].
        self.net = ChunkDenoiser(obs_steps * obs_dim, act_dim, horizon, hidden, time_emb_dim, activation,
                                 residual=False, time_scale=time_scale)

    def noise_shape(self, batch: int, mode: str | None = None) -> tuple[int, ...]:
        """Shape of ``act``'s noise: the initial ε, (B, H, act_dim), whatever the number of steps."""
        return (batch, self.horizon, self.act_dim)

    def velocity(self, x: torch.Tensor, tau: torch.Tensor | float, obs: torch.Tensor) -> torch.Tensor:
        """v_θ(x [B, H, A], τ ([B] or scalar), obs) → [B, H, A], in the flow's own units (z = a / noise_scale)."""
        cond = flatten_obs(obs, self.obs_steps, self.obs_dim)
        tau = torch.as_tensor(tau, dtype=x.dtype, device=x.device).expand(x.shape[0])
        return self._net(x, tau, cond)

    def _net(self, x: torch.Tensor, tau: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The velocity network with its output scale (every forward pass, as FPO's reference)."""
        v = self.net(x, tau, cond)
        return v if self.output_scale == 1.0 else v * self.output_scale

    def sample(self, obs: torch.Tensor, noise: torch.Tensor | None = None, steps: int | None = None,
               zero_noise: bool = False, return_presquash: bool = False):
        """K Euler steps from τ = 1 to 0 (in z = a/σ; ``noise`` is ε ~ N(0, I) whatever σ), then a = σ·z. Returns the
        clipped chunk, or (clipped, pre-clip) if return_presquash."""
        steps = self.euler_steps if steps is None else int(steps)
        if steps < 1:
            raise ValueError(f"steps={steps}; expected ≥ 1")
        b = obs.shape[0]
        shape = (b, self.horizon, self.act_dim)
        if noise is not None:
            if zero_noise:
                raise ValueError("pass either noise or zero_noise=True, not both")
            check_chunk("noise", noise, b, self.horizon, self.act_dim)
            x = noise
        elif zero_noise:
            x = torch.zeros(shape, device=obs.device, dtype=obs.dtype)
        else:
            x = torch.randn(shape, device=obs.device, dtype=obs.dtype)
        dt = 1.0 / steps
        cond = flatten_obs(obs, self.obs_steps, self.obs_dim)
        # The K times are the same for every row: embed them in one pass, not one small-batch pass per step (acting
        # is per-op overhead at rollout batch sizes). Then each step is ChunkDenoiser.forward's concat and trunk.
        taus = torch.tensor([1.0 - k * dt for k in range(steps)], device=x.device, dtype=x.dtype)
        emb = self.net.time_embedding(taus)
        for k in range(steps):
            h = torch.cat([x.reshape(b, -1), emb[k].expand(b, -1), cond], dim=-1)
            v = self.net.trunk(h).reshape(shape)
            x = x - dt * (v if self.output_scale == 1.0 else v * self.output_scale)
        if self.noise_scale != 1.0:
            x = x * self.noise_scale
        action = x.clamp(-self.action_clip, self.action_clip) if self.action_clip is not None else x
        return (action, x) if return_presquash else action

    def act(self, obs: torch.Tensor, noise: torch.Tensor | None = None, steps: int | None = None,
            zero_noise: bool = False) -> torch.Tensor:
        """[B, obs_steps, obs_dim] → action chunk [B, H, act_dim] in [-1, 1]; zero_noise starts from ε = 0."""
        return self.sample(obs, noise=noise, steps=steps, zero_noise=zero_noise)

    def cfm_loss(self, obs: torch.Tensor, actions: torch.Tensor, tau: torch.Tensor, eps: torch.Tensor,
                 mode: str | None = None, reduction: str = "sum") -> torch.Tensor:
        """Per-sample conditional flow-matching loss — the one CFM loss of r2s (BC and FPO's ratio both use it).

        Shapes: actions [B, H, A]; either tau [B] with eps [B, H, A] → lead = [B], or N_mc pairs per action, tau
        [B, N] with eps [B, N, H, A] → lead = [B, N] (FPO stores these pairs at rollout time and re-evaluates them
        every epoch). mode: "velocity" ‖v − (ε − a)‖² or "epsilon" ‖x_τ + (1 − τ)·v − ε‖²; None → self.loss_mode.
        reduction: "sum" over (H, act_dim) → lead; "per_position": the mean over act_dim of each chunk position →
        lead + [H] (FPO sums the positions a decision executed). With noise_scale σ ≠ 1 the loss is that of z = a/σ.
        """
        mode = self.loss_mode if mode is None else mode
        if mode not in LOSS_MODES:
            raise ValueError(f"mode={mode!r}; expected one of {LOSS_MODES}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction={reduction!r}; expected one of {REDUCTIONS}")
        b = actions.shape[0]
        check_chunk("actions", actions, None, self.horizon, self.act_dim)
        lead = tuple(tau.shape)
        if not (lead == (b,) or (len(lead) == 2 and lead[0] == b)):
            raise ValueError(f"tau has shape {lead}; expected ({b},) or ({b}, N_mc)")
        if tuple(eps.shape) != lead + (self.horizon, self.act_dim):
            raise ValueError(f"eps has shape {tuple(eps.shape)}; expected {lead + (self.horizon, self.act_dim)} "
                             "[tau's shape, horizon, act_dim]")
        n = 1 if len(lead) == 1 else lead[1]
        cond = flatten_obs(obs, self.obs_steps, self.obs_dim)
        # flatten (B, N) so each (action, τ_i, ε_i) pair is one row of the network's batch
        if self.noise_scale != 1.0:
            actions = actions / self.noise_scale
        a = actions.unsqueeze(1).expand(b, n, self.horizon, self.act_dim).reshape(b * n, self.horizon, self.act_dim)
        cond = cond.unsqueeze(1).expand(b, n, cond.shape[-1]).reshape(b * n, -1)
        e = eps.reshape(b * n, self.horizon, self.act_dim)
        t = tau.reshape(b * n).to(a.dtype)
        tt = t.reshape(-1, 1, 1)
        x_tau = tt * e + (1 - tt) * a
        v = self._net(x_tau, t, cond)
        if mode == "velocity":
            err = v - (e - a)
        else:
            err = x_tau + (1 - tt) * v - e
        if reduction == "per_position":
            return err.pow(2).mean(-1).reshape(lead + (self.horizon,))
        return err.pow(2).sum(dim=(-1, -2)).reshape(lead)

    def bc_loss(self, obs: torch.Tensor, actions: torch.Tensor, tau: torch.Tensor | None = None,
                eps: torch.Tensor | None = None, mode: str | None = None) -> torch.Tensor:
        """CFM loss with τ ~ U(0, 1) and ε ~ N(0, I) (unless given) → [B]."""
        b = actions.shape[0]
        tau = torch.rand(b, device=actions.device, dtype=actions.dtype) if tau is None else tau
        eps = torch.randn_like(actions) if eps is None else eps
        return self.cfm_loss(obs, actions, tau, eps, mode=mode)
