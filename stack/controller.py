"""``PolicyController``: a trained policy as a numpy controller — raw observations in, env actions out.

One class for every policy kind and every caller (the runners' evaluations, ``r2s eval``, demos, the benchmarks, and
the torch side of the demo's comparison with the ONNX runtime in simulation). Per env slot it keeps the last
``obs_steps`` observations (the first repeated at an episode's start) and a queue of actions; when a slot's queue is
empty the policy plans a chunk for every empty slot at once::

    normalise (ObsNormalizer) → policy.act(obs, noise) [B, H, A] → first act_steps actions → clip and scale
    (ActionScaler) → queue

A Gaussian policy is the case H = act_steps = 1. Sampling options (saved in a checkpoint's ``meta.json``):

    gaussian   {"deterministic": True}  the mean (False: a seeded N(μ, σ) draw)
    flow       {"zero_noise": True, "steps": K}  FPO++'s zero-sampling (False: seeded ε ~ N(0, I))
    diffusion  {"sampler": "ddpm" | "ddim", "ddim_steps": K, "eta": η}  seeded chain noise

Noise comes from the controller's own generator, seeded at construction (``seed``): an evaluation is a function of
the weights, the env seeds and this seed only — never of how much noise training has drawn — so ``r2s eval`` on a
checkpoint reproduces the runner's evaluation of it.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import torch

DEFAULT_SAMPLING = {"gaussian": {"deterministic": True}, "flow": {"zero_noise": True},
                    "diffusion": {}}
SAMPLING_KEYS = {"gaussian": ("deterministic",), "flow": ("zero_noise", "steps"),
                 "diffusion": ("sampler", "ddim_steps", "eta", "deterministic")}
"""The options each kind reads (others are ignored, so one override such as ``deterministic=False,
zero_noise=False`` makes any policy sample stochastically)."""


class PolicyController:
    """``act_batch(obs [B, obs_dim], slots) -> env actions [B, act_dim]`` (stateful per slot), ``reset()``."""

    def __init__(self, policy: torch.nn.Module, obs_normalizer, action_scaler, sampling: dict | None = None,
                 act_steps: int | None = None, device: str | torch.device = "cpu", seed: int = 0):
        self.policy = policy  # no layer of these policies behaves differently in train() and eval() mode
        self.kind = getattr(policy, "kind", "gaussian")
        self.obs_normalizer = obs_normalizer
        self.action_scaler = action_scaler
        merged = {**DEFAULT_SAMPLING.get(self.kind, {}), **(sampling or {})}
        self.sampling = {k: v for k, v in merged.items() if k in SAMPLING_KEYS.get(self.kind, ())}
        self.horizon = int(getattr(policy, "horizon", 1))
        self.obs_steps = int(getattr(policy, "obs_steps", 1))
        self.act_steps = int(act_steps or getattr(policy, "act_steps", 1))
        if not 1 <= self.act_steps <= self.horizon:
            raise ValueError(f"act_steps={self.act_steps}; expected 1 ≤ act_steps ≤ horizon={self.horizon}")
        self.device = torch.device(device)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._history: dict[int, deque] = {}
        self._queue: dict[int, deque] = {}

    @classmethod
    def from_checkpoint(cls, path, device: str | torch.device = "cpu", seed: int | None = None,
                        act_steps: int | None = None, **sampling) -> PolicyController:
        """The policy of a run directory's latest checkpoint (a checkpoint folder, or a loaded
        ``stack.checkpoint.Checkpoint``), sampling as its meta.json says (``sampling`` overrides: e.g.
        ``zero_noise=False``, ``sampler="ddim", ddim_steps=5, eta=0``). ``seed`` defaults to the run's evaluation
        seed (``stack.config.eval_seed``)."""
        from stack import checkpoint
        from stack.config import eval_seed

        ckpt = path if isinstance(path, checkpoint.Checkpoint) else checkpoint.load(path)
        return cls(ckpt.module("policy", device=device), ckpt.obs_normalizer(), ckpt.action_scaler(),
                   {**ckpt.meta["sampling"], **sampling}, act_steps or ckpt.meta["act_steps"], device,
                   eval_seed(ckpt.seed) if seed is None else seed)

    def reset(self) -> None:
        """Forget every slot's history and queue (the next observation of each slot starts an episode) and restart
        the noise from the seed."""
        self._history.clear()
        self._queue.clear()
        self.generator.manual_seed(self.seed)

    # ---- planning -------------------------------------------------------------------------------------------------
    def _noise(self, b: int) -> torch.Tensor | None:
        p, opts = self.policy, self.sampling
        if self.kind == "gaussian":
            return None if opts.get("deterministic", True) else torch.randn(p.noise_shape(b), generator=self.generator)
        if self.kind == "flow":
            shape = p.noise_shape(b)
            return torch.zeros(shape) if opts.get("zero_noise", True) else torch.randn(shape, generator=self.generator)
        mode = "deterministic" if opts.get("deterministic") else None
        shape = p.noise_shape(b, mode, sampler=opts.get("sampler"), ddim_steps=opts.get("ddim_steps"),
                              eta=opts.get("eta"))
        return torch.randn(shape, generator=self.generator)

    @torch.no_grad()
    def plan(self, obs_hist: np.ndarray) -> np.ndarray:
        """Observation histories [B, obs_steps, obs_dim] (env units) → env-action chunks [B, act_steps, act_dim]."""
        x = torch.from_numpy(self.obs_normalizer(obs_hist)).to(self.device)
        noise = self._noise(x.shape[0])
        noise = noise.to(self.device) if noise is not None else None
        opts = self.sampling
        if self.kind == "gaussian":
            chunk = self.policy.act(x, noise=noise, deterministic=noise is None)
        elif self.kind == "flow":
            chunk = self.policy.act(x, noise=noise, steps=opts.get("steps"))
        else:
            chunk = self.policy.act(x, noise=noise, **{k: v for k, v in opts.items() if v is not None})
        return self.action_scaler.to_env(chunk[:, : self.act_steps].cpu().numpy())

    # ---- acting ---------------------------------------------------------------------------------------------------
    def act_batch(self, obs: np.ndarray, slots) -> np.ndarray:
        """One step of the envs ``slots`` (their observations ``obs [B, obs_dim]``) → actions [B, act_dim]."""
        obs = np.asarray(obs, np.float64)
        for o, s in zip(obs, slots):
            if s not in self._history:
                self._history[s] = deque([o] * self.obs_steps, maxlen=self.obs_steps)
                self._queue[s] = deque()
            else:
                self._history[s].append(o)
        empty = [k for k, s in enumerate(slots) if not self._queue[s]]
        if empty:
            hist = np.stack([np.stack(self._history[slots[k]]) for k in empty])
            for k, chunk in zip(empty, self.plan(hist)):
                self._queue[slots[k]].extend(chunk)
        return np.stack([self._queue[s].popleft() for s in slots])

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        """Single env (``obs [obs_dim]`` → ``[act_dim]``) or a batch of envs in lockstep (``[B, obs_dim]``)."""
        obs = np.asarray(obs)
        if obs.ndim == 1:
            return self.act_batch(obs[None], [0])[0]
        return self.act_batch(obs, list(range(len(obs))))


__all__ = ["PolicyController"]
