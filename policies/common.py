"""Building blocks shared by every policy and critic, plus checkpoint save/load.

Policies work in normalised spaces: observations arrive already normalised and actions live in [-1, 1]. The
statistics that map to and from the robot's units are data owned by the trainer (saved beside the checkpoint and
baked into the exported graph), never hidden inside these modules.

A checkpoint is a folder with two files:
    model.safetensors   the module's state_dict (parameters and persistent buffers)
    config.json         {"class": "<ClassName>", "kwargs": {...constructor arguments...}, "format": 1}
Every class registered with ``@register`` stores its constructor arguments in ``self.config`` so ``load_policy``
can rebuild it without running any code named in the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "mish": nn.Mish,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
}

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = 1


def make_activation(name: str) -> nn.Module:
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"activation {name!r} is unknown; choose one of {sorted(ACTIVATIONS)}") from None


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "tanh") -> nn.Sequential:
    """Linear → act → … → Linear(out_dim); no activation on the output."""
    layers: list[nn.Module] = []
    last = in_dim
    for width in hidden:
        layers += [nn.Linear(last, width), make_activation(activation)]
        last = width
    layers.append(nn.Linear(last, out_dim))
    return nn.Sequential(*layers)


class ResidualBlock(nn.Module):
    """Two pre-activation linear layers with a skip: x + L2(act(L1(act(x)))) (DPPO's TwoLayerPreActivationResNet)."""

    def __init__(self, dim: int, activation: str = "relu"):
        super().__init__()
        self.act1 = make_activation(activation)
        self.l1 = nn.Linear(dim, dim)
        self.act2 = make_activation(activation)
        self.l2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.l2(self.act2(self.l1(self.act1(x))))


class ResidualMLP(nn.Module):
    """Linear(in, w) → residual blocks of width w → Linear(w, out).

    ``hidden`` lists the hidden widths as DPPO's ``mlp_dims`` do: all equal and an odd count, the first being the
    input projection and each further pair one ``ResidualBlock``. (512, 512, 512) is one projection + one block.
    """

    def __init__(self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str = "relu"):
        super().__init__()
        hidden = tuple(hidden)
        if len(hidden) % 2 != 1 or len(set(hidden)) != 1:
            raise ValueError(f"ResidualMLP: hidden={hidden}; expected an odd number of equal widths, "
                             "e.g. (512, 512, 512)")
        width = hidden[0]
        self.input = nn.Linear(in_dim, width)
        self.blocks = nn.Sequential(*[ResidualBlock(width, activation) for _ in range((len(hidden) - 1) // 2)])
        self.output = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.output(self.blocks(self.input(x)))


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Transformer position embedding of a [B] tensor of (possibly fractional) times → [B, dim] (sin ‖ cos)."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal embedding: dim={dim}; expected an even number ≥ 4")
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=t.device, dtype=torch.float32) * (-math.log(10000.0) / (half - 1)))
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    return torch.cat([args.sin(), args.cos()], dim=-1)


class TimeEmbedding(nn.Module):
    """sinusoidal(dim) → Linear(dim, 2·dim) → Mish → Linear(2·dim, dim), as DPPO's DiffusionMLP.

    ``scale`` multiplies the time before the sinusoid: 1 for integer diffusion steps, larger for flow times in [0, 1]
    so that the fastest frequencies still vary across the interval.
    """

    def __init__(self, dim: int, scale: float = 1.0):
        super().__init__()
        self.dim = dim
        self.scale = scale
        self.proj = nn.Sequential(nn.Linear(dim, 2 * dim), nn.Mish(), nn.Linear(2 * dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.proj(sinusoidal_embedding(t * self.scale, self.dim))


class ChunkDenoiser(nn.Module):
    """The network of a generative chunk policy: f(x [B, H, A], t [B], cond [B, C]) → [B, H, A].

    Input is concat(flattened noisy chunk, time embedding, condition) (DPPO's DiffusionMLP layout); the trunk is a
    residual MLP (diffusion) or a plain MLP (flow). Kept a separate submodule so fine-tuning algorithms can deep-copy
    it.
    """

    def __init__(self, cond_dim: int, act_dim: int, horizon: int, hidden: Sequence[int], time_emb_dim: int,
                 activation: str, residual: bool, time_scale: float = 1.0):
        super().__init__()
        self.act_dim, self.horizon = act_dim, horizon
        self.time_embedding = TimeEmbedding(time_emb_dim, scale=time_scale)
        in_dim = horizon * act_dim + time_emb_dim + cond_dim
        out_dim = horizon * act_dim
        trunk = ResidualMLP if residual else mlp
        self.trunk = trunk(in_dim, hidden, out_dim, activation)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = torch.cat([x.reshape(b, -1), self.time_embedding(t.reshape(b)), cond], dim=-1)
        return self.trunk(h).reshape(b, self.horizon, self.act_dim)


# ---- observation / action shape checks ---------------------------------------------------------------------------
def flatten_obs(obs: torch.Tensor, obs_steps: int, obs_dim: int) -> torch.Tensor:
    """[B, obs_steps, obs_dim] (or [B, obs_dim] when obs_steps == 1) → [B, obs_steps·obs_dim]."""
    if obs.dim() == 3 and tuple(obs.shape[1:]) == (obs_steps, obs_dim):
        return obs.reshape(obs.shape[0], obs_steps * obs_dim)
    if obs.dim() == 2 and obs_steps == 1 and obs.shape[1] == obs_dim:
        return obs
    alt = f" or (B, {obs_dim})" if obs_steps == 1 else ""
    raise ValueError(f"obs has shape {tuple(obs.shape)}; policy expects (B, {obs_steps}, {obs_dim}) "
                     f"[obs_steps, obs_dim]{alt}")


def check_chunk(name: str, x: torch.Tensor, batch: int | None, horizon: int, act_dim: int) -> None:
    """Raise unless x is [batch, horizon, act_dim]."""
    if x.dim() != 3 or tuple(x.shape[1:]) != (horizon, act_dim) or (batch is not None and x.shape[0] != batch):
        b = "B" if batch is None else batch
        raise ValueError(f"{name} has shape {tuple(x.shape)}; policy expects ({b}, {horizon}, {act_dim}) "
                         "[horizon, act_dim]")


# ---- checkpoints -------------------------------------------------------------------------------------------------
REGISTRY: dict[str, type[nn.Module]] = {}


def register(cls: type[nn.Module]) -> type[nn.Module]:
    """Make a class loadable by ``load_policy`` (it must set ``self.config`` to its constructor kwargs)."""
    REGISTRY[cls.__name__] = cls
    return cls


def _jsonable(value):
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class CheckpointError(ValueError):
    """A checkpoint does not fit the module it is loaded into (names the tensor and both shapes)."""


def save_policy(module: nn.Module, path_dir: str | Path) -> Path:
    """Write ``module`` to ``path_dir`` (created if needed): safetensors weights + config.json. Returns the folder."""
    cls = type(module).__name__
    if cls not in REGISTRY or not hasattr(module, "config"):
        raise TypeError(f"save_policy: {cls} is not a registered r2s module with a .config; "
                        f"registered: {sorted(REGISTRY)}")
    path = Path(path_dir)
    path.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(tensors, str(path / WEIGHTS_FILE), metadata={"class": cls})
    config = {"class": cls, "format": CHECKPOINT_FORMAT, "kwargs": _jsonable(module.config)}
    (path / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return path


def check_state_dict(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Raise ``CheckpointError`` naming every missing, unexpected or wrongly shaped tensor."""
    expected = module.state_dict()
    problems = [f"{k}: checkpoint has {tuple(tensors[k].shape)}, policy expects {tuple(v.shape)}"
                for k, v in expected.items() if k in tensors and tuple(tensors[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    if missing:
        problems.append(f"missing from checkpoint: {missing}")
    if unexpected:
        problems.append(f"not in {type(module).__name__}: {unexpected}")
    if problems:
        raise CheckpointError(f"checkpoint does not fit {type(module).__name__}: " + "; ".join(problems))


def load_policy(path_dir: str | Path, policy: nn.Module | None = None, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the module saved in ``path_dir`` (or load its weights into ``policy``) and return it in eval mode.

    Tensor names and shapes are checked before anything is copied; a mismatch raises ``CheckpointError`` such as
    ``net.0.weight: checkpoint has (256, 17), policy expects (256, 11)``.
    """
    path = Path(path_dir)
    config = json.loads((path / CONFIG_FILE).read_text())
    cls_name = config["class"]
    if config.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path / CONFIG_FILE}: format {config.get('format')!r}; "
                              f"this code reads {CHECKPOINT_FORMAT}")
    if policy is None:
        if cls_name not in REGISTRY:
            raise CheckpointError(f"{path}: class {cls_name!r} is not a registered r2s module ({sorted(REGISTRY)})")
        policy = REGISTRY[cls_name](**config["kwargs"])
    elif type(policy).__name__ != cls_name:
        raise CheckpointError(f"{path} holds a {cls_name}; cannot load it into a {type(policy).__name__}")
    tensors = load_file(str(path / WEIGHTS_FILE), device="cpu")
    check_state_dict(policy, tensors)
    policy.load_state_dict(tensors, strict=True)
    return policy.to(device).eval()
