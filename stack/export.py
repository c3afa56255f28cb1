"""``r2s export RUN_DIR``: a trained policy → one ONNX file a robot runs with numpy + onnxruntime.

The graph is written directly from the policy's weights (not traced), so it is exactly the computation the robot
needs and no more. Per-node overhead dominates small networks, so the graph is *worked*:

* observation normalisation and the action-bound mapping are inside the graph (one Sub/Mul/Clip each);
* a generative policy's chain is unrolled for a chosen K; the denoiser's first layer is split
  ``W·[x, emb(t), obs] = W_x·x + (W_t·emb(t_k) + b) + W_o·obs``: the observation projection is computed once per
  network, the time term is a constant per step, so each step costs one matmul less and no concatenation;
* per-step scalars (Euler ``dt``, DDPM ``√(1−ᾱ)/√ᾱ``) are folded into the last layer's weights.

Inputs ``obs`` [B, obs_steps, obs_dim] (and ``noise`` for a sampled policy), output ``action`` [B, H, act_dim] in
robot units; metadata as ``stack/runtime/metadata.py`` specifies, plus (from a run) ``robot_overlay`` and
``robot_overlay_hash``: the ``r2s sysid`` overlay its simulator carried ("" both: the nominal model; absent: a run
from before r2s recorded it; see ``stack.run_overlay``). After writing: ``onnx.checker``, then a parity
check against the torch policy on fresh random inputs; a failed check deletes the file and raises.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

import stack
from policies.common import ResidualMLP

OPSET = 18
PARITY_TOL = {"fp32": 1e-5, "fp32_ddpm20": 1e-4}


class ExportError(RuntimeError):
    """The policy could not be exported, or the exported graph disagrees with the torch policy."""


# ---- a small graph builder -----------------------------------------------------------------------------------------
class Graph:
    def __init__(self):
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0
        self._by_content: dict[bytes, str] = {}

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{hint}_{self._n}"

    def const(self, array, hint: str = "c") -> str:
        """An initializer; identical arrays are stored once (an unrolled chain reuses its weights at every step)."""
        array = np.asarray(array, dtype=np.float32)
        key = hashlib.sha1(array.tobytes() + str(array.shape).encode()).digest()
        if key not in self._by_content:
            name = self.name(hint)
            self.inits.append(numpy_helper.from_array(array, name))
            self._by_content[key] = name
        return self._by_content[key]

    def const_i64(self, values, hint: str = "shape") -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(values, dtype=np.int64), name))
        return name

    def op(self, op_type: str, inputs: list[str], hint: str | None = None, out: str | None = None, **attrs) -> str:
        out = out or self.name(hint or op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def gemm(self, x: str, weight: np.ndarray, bias: np.ndarray | None) -> str:
        """x [B, in] @ weight[out, in]^T + bias: one Gemm node."""
        inputs = [x, self.const(weight, "W")] + ([self.const(bias, "b")] if bias is not None else [])
        return self.op("Gemm", inputs, "gemm", transB=1)

    def activation(self, x: str, module: nn.Module) -> str:
        if isinstance(module, nn.Tanh):
            return self.op("Tanh", [x])
        if isinstance(module, nn.ReLU):
            return self.op("Relu", [x])
        if isinstance(module, nn.Mish):
            return self.op("Mish", [x])
        if isinstance(module, nn.SiLU):
            return self.op("Mul", [x, self.op("Sigmoid", [x])], "silu")
        if isinstance(module, nn.ELU):
            return self.op("Elu", [x], alpha=float(module.alpha))
        raise ExportError(f"activation {type(module).__name__} is not supported by the exporter")

    def clip(self, x: str, low, high) -> str:
        return self.op("Max", [self.op("Min", [x, self.const(high, "hi")]), self.const(low, "lo")], "clip")


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _linears(seq: nn.Sequential) -> list[tuple[nn.Linear, nn.Module | None]]:
    """A Linear/activation Sequential as [(linear, activation after it or None)]."""
    mods, out = list(seq), []
    for i, m in enumerate(mods):
        if isinstance(m, nn.Linear):
            act = mods[i + 1] if i + 1 < len(mods) and not isinstance(mods[i + 1], nn.Linear) else None
            out.append((m, act))
    return out


def emit_mlp(g: Graph, x: str, seq: nn.Sequential, out_scale: float = 1.0, first_preact: str | None = None) -> str:
    """Run an MLP; ``first_preact`` replaces the first layer's output (hoisted), ``out_scale`` is folded in."""
    layers = _linears(seq)
    for i, (lin, act) in enumerate(layers):
        last = i == len(layers) - 1
        if i == 0 and first_preact is not None:
            x = first_preact
        else:
            w, b = _np(lin.weight), _np(lin.bias)
            x = g.gemm(x, w * out_scale if last else w, b * out_scale if last else b)
        if act is not None:
            x = g.activation(x, act)
    return x


def emit_residual_trunk(g: Graph, h: str, trunk: ResidualMLP, out_scale: float) -> str:
    """ResidualMLP after its (hoisted) input projection: blocks, then the output layer (scale folded in)."""
    for block in trunk.blocks:
        z = g.gemm(g.activation(h, block.act1), _np(block.l1.weight), _np(block.l1.bias))
        z = g.gemm(g.activation(z, block.act2), _np(block.l2.weight), _np(block.l2.bias))
        h = g.op("Add", [h, z], "res")
    return g.gemm(h, _np(trunk.output.weight) * out_scale, _np(trunk.output.bias) * out_scale)


class HoistedDenoiser:
    """A ChunkDenoiser with its first layer split into chunk, time and observation parts (see module docstring)."""

    def __init__(self, g: Graph, net: nn.Module, cond: str):
        self.g, self.net = g, net
        chunk = net.horizon * net.act_dim
        temb = net.time_embedding.dim
        first = net.trunk.input if isinstance(net.trunk, ResidualMLP) else _linears(net.trunk)[0][0]
        w, b = _np(first.weight), _np(first.bias)
        self.w_x, self.w_t, w_o, self.b = w[:, :chunk], w[:, chunk:chunk + temb], w[:, chunk + temb:], b
        self.obs_proj = g.gemm(cond, w_o, None)  # once per inference, shared by every step of this network

    def __call__(self, x: str, t: float, out_scale: float) -> str:
        """Network output × out_scale for flat chunk x [B, H·A] at time t (the net's own time units)."""
        g, net = self.g, self.net
        with torch.no_grad():
            emb = _np(net.time_embedding(torch.tensor([t], dtype=torch.float32)))[0]
        step_bias = self.w_t @ emb + self.b
        pre = g.op("Add", [g.gemm(x, self.w_x, step_bias), self.obs_proj], "pre")
        if isinstance(net.trunk, ResidualMLP):
            return emit_residual_trunk(g, pre, net.trunk, out_scale)
        return emit_mlp(g, x, net.trunk, out_scale, first_preact=pre)


# ---- what gets exported --------------------------------------------------------------------------------------------
@dataclass
class DeltaTargets:
    """How a delta action becomes an absolute joint target: ``clip(q + scale · clip(a, −1, 1), low, high)`` with
    ``q`` the observation's ``joint_pos`` segment (at ``joint_offset``, raw units, newest observation step)."""

    joint_offset: int
    scale: float
    joint_low: np.ndarray
    joint_high: np.ndarray


@dataclass
class ExportSpec:
    """Everything beside the network that the graph and its metadata need."""

    obs_mean: np.ndarray
    obs_std: np.ndarray
    obs_clip: float | None
    action_low: np.ndarray
    action_high: np.ndarray
    action_mode: str
    """'minmax': policy space [-1, 1] → [low, high]; 'raw': the policy acts in env units (clamped to bounds)."""
    delta: DeltaTargets | None = None
    """A policy trained on delta joint targets: the graph adds them to the observed joint positions, so the robot
    receives absolute targets (``sim.tasks.arm.delta_to_absolute``)."""

    def to_env_torch(self, a: torch.Tensor, obs: torch.Tensor | None = None) -> torch.Tensor:
        low, high = torch.as_tensor(self.action_low).to(a), torch.as_tensor(self.action_high).to(a)
        if self.action_mode == "minmax":
            a = (high + low) / 2 + a.clamp(-1, 1) * (high - low) / 2
        else:
            a = torch.minimum(torch.maximum(a, low), high)
        if self.delta is None:
            return a
        d = self.delta
        q = obs[:, -1:, d.joint_offset: d.joint_offset + a.shape[-1]]
        jlo, jhi = torch.as_tensor(d.joint_low).to(a), torch.as_tensor(d.joint_high).to(a)
        return torch.minimum(torch.maximum(q + d.scale * a.clamp(-1, 1), jlo), jhi)

    @property
    def robot_low(self) -> np.ndarray:
        """Bounds of what the graph outputs (robot units)."""
        return np.asarray(self.delta.joint_low if self.delta else self.action_low)

    @property
    def robot_high(self) -> np.ndarray:
        return np.asarray(self.delta.joint_high if self.delta else self.action_high)

    def normalize_torch(self, obs: torch.Tensor) -> torch.Tensor:
        x = (obs - torch.as_tensor(self.obs_mean).to(obs)) / torch.as_tensor(self.obs_std).to(obs)
        return x.clamp(-self.obs_clip, self.obs_clip) if self.obs_clip else x


def _emit_obs(g: Graph, policy, spec: ExportSpec) -> str:
    """obs [B, S, D] → normalised, flattened [B, S·D]."""
    s, d = policy.obs_steps, policy.obs_dim
    x = g.op("Reshape", ["obs", g.const_i64([-1, s * d])], "obs_flat")
    x = g.op("Mul", [g.op("Sub", [x, g.const(np.tile(spec.obs_mean, s), "mean")]),
                     g.const(np.tile(1.0 / spec.obs_std, s), "inv_std")], "obs_norm")
    if spec.obs_clip:
        x = g.clip(x, -spec.obs_clip, spec.obs_clip)
    return x


def _emit_action(g: Graph, x: str, spec: ExportSpec, horizon: int, act_dim: int, clip_policy_space: bool) -> str:
    """Policy-space chunk [B, H·A] → robot units [B, H, A], clamped to the action bounds (for a delta policy: the
    delta added to the observed joint positions, clamped to the joint limits)."""
    if spec.delta is not None:
        delta = _emit_env_action(g, x, spec, horizon, act_dim, clip_policy_space, out=None)
        d = spec.delta
        last = g.op("Slice", ["obs", g.const_i64([-1]), g.const_i64([np.iinfo(np.int64).max]), g.const_i64([1])],
                    "obs_last")
        q = g.op("Slice", [last, g.const_i64([d.joint_offset]), g.const_i64([d.joint_offset + act_dim]),
                           g.const_i64([2])], "joint_pos")
        target = g.op("Add", [q, g.op("Mul", [g.clip(delta, -1.0, 1.0), g.const(np.float32(d.scale), "delta_scale")])],
                      "target")
        low, high = np.asarray(d.joint_low, np.float32), np.asarray(d.joint_high, np.float32)
        return g.op("Max", [g.op("Min", [target, g.const(high, "hi")]), g.const(low, "lo")], out="action")
    return _emit_env_action(g, x, spec, horizon, act_dim, clip_policy_space, out="action")


def _emit_env_action(g: Graph, x: str, spec: ExportSpec, horizon: int, act_dim: int, clip_policy_space: bool,
                     out: str | None) -> str:
    """Policy-space chunk [B, H·A] → the env's action units [B, H, A], clamped to the env's action bounds."""
    low, high = np.tile(spec.action_low, horizon), np.tile(spec.action_high, horizon)
    if spec.action_mode == "minmax":
        if clip_policy_space:
            x = g.clip(x, -1.0, 1.0)
        x = g.op("Add", [g.op("Mul", [x, g.const((high - low) / 2, "half")]), g.const((high + low) / 2, "center")])
    else:
        x = g.clip(x, low, high)
    return g.op("Reshape", [x, g.const_i64([-1, horizon, act_dim])], "env_action", out=out)


def _noise_slice(g: Graph, noise: str, index: int, chunk: int) -> str:
    """noise [B, K+1, H, A] → draw ``index`` flattened to [B, H·A]."""
    sl = g.op("Slice", [noise, g.const_i64([index]), g.const_i64([index + 1]), g.const_i64([1])], "draw")
    return g.op("Reshape", [sl, g.const_i64([-1, chunk])], "draw_flat")


def build_gaussian(g: Graph, policy, spec: ExportSpec, sampled: bool) -> tuple[list[int], str]:
    cond = _emit_obs(g, policy, spec)
    h = emit_mlp(g, cond, policy.trunk)
    mean = g.gemm(h, _np(policy.mean.weight), _np(policy.mean.bias))
    x = mean
    if sampled:
        if policy.state_dependent_std:
            raise ExportError("export: a sampled Gaussian with state-dependent std is not supported; export the mean")
        std = np.exp(_np(policy.log_std))
        noise = g.op("Reshape", ["noise", g.const_i64([-1, policy.act_dim])], "noise_flat")
        x = g.op("Add", [mean, g.op("Mul", [noise, g.const(std, "std")])], "sample")
    if policy.squash == "tanh":
        x = g.op("Tanh", [x])
    return ([1, policy.act_dim] if sampled else []), _emit_action(g, x, spec, 1, policy.act_dim, True)


def build_flow(g: Graph, policy, spec: ExportSpec, steps: int) -> tuple[list[int], str]:
    cond = _emit_obs(g, policy, spec)
    chunk = policy.horizon * policy.act_dim
    net = HoistedDenoiser(g, policy.net, cond)
    x = g.op("Reshape", ["noise", g.const_i64([-1, chunk])], "x")
    dt = 1.0 / steps
    for k in range(steps):
        # x ← x − dt·v(x, τ_k): dt and the policy's output scale (every forward pass) are folded into the last layer
        x = g.op("Sub", [x, net(x, 1.0 - k * dt, out_scale=dt * getattr(policy, "output_scale", 1.0))], "euler")
    noise_scale = getattr(policy, "noise_scale", 1.0)
    if noise_scale != 1.0:  # the ODE runs in z = a/σ (policies/flow.py): the action is σ·z
        x = g.op("Mul", [x, g.const(np.float32(noise_scale), "noise_scale")], "unscale")
    clip = policy.action_clip
    if clip is not None:
        x = g.clip(x, -clip, clip)
    return [policy.horizon, policy.act_dim], _emit_action(g, x, spec, policy.horizon, policy.act_dim, False)


def build_diffusion(g: Graph, policy, spec: ExportSpec, sampler: str, ddim_steps: int | None, eta: float,
                    stochastic: bool, net_for_step=None) -> tuple[list[int], str]:
    """Unrolled DDPM/DDIM chain; ``net_for_step(i)`` picks the network of chain position i (DPPO: frozen/fine-tuned)."""
    cond = _emit_obs(g, policy, spec)
    h, a = policy.horizon, policy.act_dim
    chunk = h * a
    k = policy.num_steps(sampler, ddim_steps)
    timesteps = policy.chain_timesteps(sampler, ddim_steps).tolist()
    nets: dict[int, HoistedDenoiser] = {}

    def hoisted(i: int) -> HoistedDenoiser:
        net = net_for_step(i) if net_for_step is not None else policy.net
        if id(net) not in nets:
            nets[id(net)] = HoistedDenoiser(g, net, cond)
        return nets[id(net)]

    ac = policy.alphas_cumprod.double()
    x = _noise_slice(g, "noise", 0, chunk) if stochastic else g.op("Reshape", ["noise", g.const_i64([-1, chunk])])
    for i, t in enumerate(timesteps):
        alpha = float(ac[t])
        # x̂0 = x/√ᾱ − (√(1−ᾱ)/√ᾱ)·ε̂, the second factor folded into the output layer
        eps_scaled = hoisted(i)(x, float(t), out_scale=math.sqrt(1 - alpha) / math.sqrt(alpha))
        x0 = g.op("Sub", [g.op("Mul", [x, g.const(1.0 / math.sqrt(alpha))]), eps_scaled], "x0")
        if policy.denoised_clip is not None:
            x0 = g.clip(x0, -policy.denoised_clip, policy.denoised_clip)
        if sampler == "ddpm":
            c_x0 = float(policy.posterior_mean_coef1.double()[t])
            c_x = float(policy.posterior_mean_coef2.double()[t])
            std = math.exp(0.5 * float(policy.posterior_log_variance_clipped.double()[t]))
        else:
            alpha_prev = float(ac[timesteps[i + 1]]) if i + 1 < k else 1.0
            sigma = eta * math.sqrt(max((1 - alpha_prev) / (1 - alpha) * (1 - alpha / alpha_prev), 0.0))
            d = math.sqrt(max(1 - alpha_prev - sigma**2, 0.0))
            # mean = √ᾱ_prev·x̂0 + d·ε̂ with ε̂ = (x − √ᾱ·x̂0)/√(1−ᾱ) recomputed from the clamped x̂0
            c_x0 = math.sqrt(alpha_prev) - d * math.sqrt(alpha) / math.sqrt(1 - alpha)
            c_x = d / math.sqrt(1 - alpha)
            std = sigma
        x = g.op("Add", [g.op("Mul", [x0, g.const(c_x0)]), g.op("Mul", [x, g.const(c_x)])], "mean")
        if stochastic and std > 0:
            x = g.op("Add", [x, g.op("Mul", [_noise_slice(g, "noise", i + 1, chunk), g.const(std)])], "step")
        if i == k - 1 and policy.final_action_clip is not None:
            x = g.clip(x, -policy.final_action_clip, policy.final_action_clip)
    shape = [k + 1, h, a] if stochastic else [h, a]
    return shape, _emit_action(g, x, spec, h, a, clip_policy_space=False)


# ---- the torch reference the parity check compares with ------------------------------------------------------------
def torch_reference(policy, spec: ExportSpec, obs: torch.Tensor, noise: torch.Tensor | None,
                    opts: dict) -> torch.Tensor:
    x = spec.normalize_torch(obs)
    with torch.no_grad():
        if policy.kind == "gaussian":
            a = policy.act(x, noise=noise, deterministic=noise is None)
            if spec.action_mode == "minmax":
                a = a.clamp(-1, 1)
        elif policy.kind == "flow":
            a = policy.act(x, noise=noise, steps=opts["steps"])
        else:
            a = policy.act(x, noise=noise, deterministic=not opts["stochastic"], sampler=opts["sampler"],
                           ddim_steps=opts["ddim_steps"], eta=opts["eta"], net_for_step=opts.get("net_for_step"))
    return spec.to_env_torch(a, obs)


# ---- export --------------------------------------------------------------------------------------------------------
def export_policy(policy, spec: ExportSpec, out: str | Path, metadata: dict[str, str], *, steps: int | None = None,
                  sampler: str | None = None, ddim_steps: int | None = None, eta: float | None = None,
                  sampled: bool | None = None, net_for_step=None, parity_tol: float | None = None,
                  seed: int = 0) -> dict:
    """Write ``out`` and return {"path", "parity_max_abs_err", "nodes", ...}. Raises ExportError on failed parity."""
    policy = policy.eval().float().cpu()
    if spec.delta is not None and policy.act_steps > 1:
        # Each delta of an executed chunk is relative to the joints measured at its own step, which the graph (run
        # once per chunk) cannot see: the conversion would have to run per tick in the robot runtime.
        raise ExportError(f"export: act_steps = {policy.act_steps}: a delta-target policy that executes chunks cannot "
                          "be converted to absolute targets inside the graph; train it with act_steps 1 or on "
                          "absolute targets (task_kwargs action_mode 'absolute')")
    g = Graph()
    opts: dict = {}
    if policy.kind == "gaussian":
        sampled = bool(sampled)
        noise_shape, _ = build_gaussian(g, policy, spec, sampled)
        denoising_steps = 0
        opts["sampled"] = sampled
    elif policy.kind == "flow":
        steps = int(steps or policy.euler_steps)
        noise_shape, _ = build_flow(g, policy, spec, steps)
        denoising_steps = opts["steps"] = steps
    elif policy.kind == "diffusion":
        sampler, k, eta = policy._resolve(sampler, ddim_steps, eta)
        ddim_steps = None if sampler == "ddpm" else k
        if net_for_step is None and hasattr(policy, "chain_nets"):  # DPPO: frozen + fine-tuned networks
            net_for_step = policy.chain_nets(sampler, ddim_steps)
        stochastic = policy.is_stochastic(False, sampler, ddim_steps, eta) if sampled is None else bool(sampled)
        noise_shape, _ = build_diffusion(g, policy, spec, sampler, ddim_steps, eta, stochastic, net_for_step)
        denoising_steps = k
        opts.update(sampler=sampler, ddim_steps=ddim_steps, eta=eta, stochastic=stochastic, net_for_step=net_for_step)
    else:
        raise ExportError(f"export: policy kind {policy.kind!r} is not supported")

    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["batch", policy.obs_steps, policy.obs_dim])]
    if noise_shape:
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["batch", *noise_shape]))
    outputs = [helper.make_tensor_value_info("action", TensorProto.FLOAT,
                                             ["batch", policy.horizon, policy.act_dim])]
    model = helper.make_model(helper.make_graph(g.nodes, f"r2s_{policy.kind}", inputs, outputs, g.inits),
                              opset_imports=[helper.make_opsetid("", OPSET)], producer_name="r2s",
                              producer_version=stack.__version__)
    model.ir_version = 8  # readable by onnxruntime ≥ 1.14 (robots with older installs)
    digest = hashlib.sha256(b"".join(t.SerializeToString() for t in g.inits)
                            + b"".join(n.SerializeToString() for n in g.nodes)).hexdigest()[:16]
    props = {
        **metadata,
        "r2s_version": stack.__version__, "obs_dim": str(policy.obs_dim), "obs_steps": str(policy.obs_steps),
        "act_dim": str(policy.act_dim), "horizon": str(policy.horizon), "act_steps": str(policy.act_steps),
        "policy_type": policy.kind, "denoising_steps": str(denoising_steps), "noise_shape": json.dumps(noise_shape),
        "action_low": json.dumps(np.asarray(spec.robot_low, float).tolist()),
        "action_high": json.dumps(np.asarray(spec.robot_high, float).tolist()),
        "content_hash": digest,
    }
    props.setdefault("run_id", "")
    helper.set_model_props(model, props)
    onnx.checker.check_model(model, full_check=True)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, out)

    if parity_tol is None:
        long_ddpm = policy.kind == "diffusion" and opts["sampler"] == "ddpm" and denoising_steps >= 20
        parity_tol = PARITY_TOL["fp32_ddpm20" if long_ddpm else "fp32"]
    err = parity_check(out, policy, spec, opts, noise_shape, seed)
    if not err <= parity_tol:
        out.unlink(missing_ok=True)
        raise ExportError(f"export: parity check failed: max |onnx − torch| = {err:.3g} > {parity_tol:g}; "
                          f"{out} deleted")
    return {"path": str(out), "parity_max_abs_err": err, "nodes": len(g.nodes), "content_hash": digest,
            "noise_shape": noise_shape}


def parity_check(path: Path, policy, spec: ExportSpec, opts: dict, noise_shape: list[int], seed: int,
                 batch: int = 16) -> float:
    """Max abs difference between onnxruntime and torch on fresh random observations (and noise), not zeros."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    obs = (spec.obs_mean + spec.obs_std * rng.standard_normal((batch, policy.obs_steps, policy.obs_dim)))
    obs = obs.astype(np.float32)
    noise = rng.standard_normal((batch, *noise_shape)).astype(np.float32) if noise_shape else None
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {"obs": obs} | ({"noise": noise} if noise is not None else {})
    (onnx_action,) = session.run(["action"], feeds)
    ref = torch_reference(policy, spec, torch.from_numpy(obs), None if noise is None else torch.from_numpy(noise), opts)
    return float(np.abs(onnx_action - ref.numpy()).max())


# ---- from a run directory ------------------------------------------------------------------------------------------
def export_spec_from_normalization(norm: dict) -> ExportSpec:
    obs, act = norm["obs"], norm["action"]
    mean = np.asarray(obs.get("mean", 0.0), np.float64)
    if obs.get("enabled", True):
        std = np.sqrt(np.asarray(obs["var"], np.float64) + obs.get("epsilon", 1e-8))
        clip = obs.get("clip")
    else:
        mean, std, clip = np.zeros_like(mean), np.ones_like(mean), None
    return ExportSpec(mean, std, clip, np.asarray(act["low"]), np.asarray(act["high"]), act["mode"])


def delta_targets(task_name: str, task_kwargs: dict | None) -> DeltaTargets | None:
    """The delta → absolute conversion of a task trained with ``action_mode="delta"`` (``None`` otherwise)."""
    if (task_kwargs or {}).get("action_mode", "absolute") != "delta":
        return None
    from sim.registry import make_task

    env = make_task(task_name, **task_kwargs)
    try:
        offset = 0
        for seg in env.obs_layout:
            if seg.name == "joint_pos":
                break
            offset += seg.size
        else:
            raise ExportError(f"export: task {task_name!r} has delta actions but no joint_pos observation segment")
        return DeltaTargets(offset, env.delta_scale, env.joint_low.copy(), env.joint_high.copy())
    finally:
        env.close()


def robot_metadata(task_name: str, task_kwargs: dict | None = None) -> dict[str, str]:
    """Robot spec + observation layout + action names of a task, as metadata strings."""
    from robots.spec import obs_layout_to_json
    from sim.registry import make_task

    env = make_task(task_name, **(task_kwargs or {}))
    try:
        robot, layout = env.robot, env.obs_layout
        action_names = getattr(env, "action_names", None) or robot.joint_names[: env.action_space.shape[0]]
        return {**robot.to_metadata(), "obs_layout": obs_layout_to_json(layout),
                "action_names": json.dumps(list(action_names)), "task": task_name}
    finally:
        env.close()


def export_run(run_dir: str | Path, out: str | Path | None = None, **opts) -> dict:
    """Export the latest checkpoint of a run (PPO, BC, FPO, DPPO, SAC) to ``<run>/policy.onnx`` (or ``out``)."""
    from stack import checkpoint
    from stack.run_overlay import export_props

    run_dir = Path(run_dir)
    try:
        ckpt = checkpoint.load(run_dir)
    except checkpoint.CheckpointError as e:
        raise ExportError(f"export: {e}") from e
    policy = ckpt.module("policy")
    spec = export_spec_from_normalization(ckpt.normalization)
    spec.delta = delta_targets(ckpt.task, ckpt.task_kwargs)
    meta = robot_metadata(ckpt.task, ckpt.task_kwargs)
    meta["run_id"] = run_dir.name
    meta.update(export_props(ckpt.meta))  # the robot overlay it was trained with (stack.run_overlay)
    return export_policy(policy, spec, out or run_dir / "policy.onnx", meta, **opts)


def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="r2s export", description="Export a trained run's policy to one ONNX file.")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="output path (default: RUN_DIR/policy.onnx)")
    p.add_argument("--steps", type=int, default=None, help="Euler steps (flow)")
    p.add_argument("--sampler", choices=["ddpm", "ddim"], default=None, help="diffusion sampler")
    p.add_argument("--ddim-steps", type=int, default=None)
    p.add_argument("--eta", type=float, default=None)
    p.add_argument("--sampled", action="store_true", help="Gaussian: export the sampled policy with a noise input")
    args = p.parse_args(argv)
    try:
        result = export_run(args.run_dir, args.out, steps=args.steps, sampler=args.sampler,
                            ddim_steps=args.ddim_steps, eta=args.eta, sampled=args.sampled or None)
    except ExportError as e:
        print(str(e), file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0
