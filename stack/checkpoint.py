"""The only reader and writer of a checkpoint: ``runs/<name>/checkpoints/<tag>/`` (``latest``, ``step_<N>``).

Layout (format version ``FORMAT_VERSION``)::

    <module>/           policies.save_policy of each trained module (policy/, critic/, …): rebuildable without this code
    normalization.json  {"obs": ObsNormalizer state, "action": ActionScaler state[, "reward": RewardScaler state]}
    trainer.pt          what resuming needs besides the modules: optimisers, the algorithm's generators, counters, the
                        torch RNG, a replay buffer (SAC) — loaded with ``weights_only=True`` (tensors and plain data)
    meta.json           written last: format_version, algo, policy kind, task, task_kwargs, dims, horizon/act_steps/
                        obs_steps, how the policy samples at evaluation, seed, env_steps (the run's step axis)

``save`` is atomic for every trainer: everything is written into a sibling ``.<tag>.tmp/`` and fsynced, then the old
folder is renamed to ``.<tag>.old``, the new one into place, and the old one removed. A crash at any point leaves a
complete checkpoint: before the first rename the old one is untouched; between the two renames ``resolve`` finds
``.<tag>.old`` (and the next ``save`` puts it back first). ``load`` refuses a missing, partial or mismatched
checkpoint with a ``CheckpointError`` naming the file and the field.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

FORMAT_VERSION = 2
"""Bumped whenever the layout or the meaning of a field changes; a checkpoint of another version is refused (and the
benchmarks' caches in runs/ rebuilt: ``is_current``)."""
LATEST = "latest"
META_FILE, NORMALIZATION_FILE, TRAINER_FILE = "meta.json", "normalization.json", "trainer.pt"
REQUIRED_META = ("format_version", "algo", "policy", "task", "obs_dim", "act_dim", "horizon", "act_steps",
                 "obs_steps", "sampling", "seed", "env_steps")
"""Fields every meta.json carries (readers need no defaults)."""


class CheckpointError(ValueError):
    """A checkpoint is missing, partial or does not fit what it is loaded for; the message names file and field."""


# ---- paths ----------------------------------------------------------------------------------------------------------
def checkpoints_root(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def resolve(path: str | Path, tag: str = LATEST) -> Path:
    """A run directory (its ``checkpoints/<tag>``) or a checkpoint folder → the complete checkpoint folder.

    Falls back to ``.<tag>.old`` when a save was interrupted between its two renames. Raises ``CheckpointError``
    naming what was looked for when there is none."""
    path = Path(path)
    if (path / META_FILE).exists() or not (path / "checkpoints").is_dir():
        folder = path
    else:
        folder = checkpoints_root(path) / tag
    if (folder / META_FILE).exists():
        return folder
    old = folder.parent / f".{folder.name}.old"
    if (old / META_FILE).exists():
        return old
    if folder.exists():
        raise CheckpointError(f"{folder}: partial checkpoint (no {META_FILE}, which is written last)")
    raise CheckpointError(f"no checkpoint at {folder}")


def exists(path: str | Path, tag: str = LATEST) -> bool:
    try:
        resolve(path, tag)
        return True
    except CheckpointError:
        return False


def read_meta(path: str | Path, tag: str = LATEST) -> dict:
    """``meta.json`` of a checkpoint (torch-free), validated: every ``REQUIRED_META`` field, this format version."""
    folder = resolve(path, tag)
    file = folder / META_FILE
    try:
        meta = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{file}: unreadable ({e})") from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: expected a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{file}: field 'format_version' is {version!r}; this code reads {FORMAT_VERSION} "
                              "(a checkpoint of another r2s version: train it again)")
    missing = [k for k in REQUIRED_META if k not in meta]
    if missing:
        raise CheckpointError(f"{file}: missing field(s) {missing}")
    return meta


def is_current(path: str | Path, tag: str = LATEST) -> bool:
    """Whether ``path`` holds a complete checkpoint of this format version (a cache may be reused)."""
    try:
        read_meta(path, tag)
        return True
    except CheckpointError:
        return False


# ---- writing --------------------------------------------------------------------------------------------------------
def _write(path: Path, write: Callable[[Path], Any]) -> None:
    """Write one part of a checkpoint (``write(path)``: a file, or a module's folder) and fsync what it wrote. The
    single place a checkpoint part is written, so a test can inject a failure at any of them."""
    write(path)
    for file in (sorted(path.iterdir()) if path.is_dir() else [path]):
        with open(file, "rb") as f:
            os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rename(src: Path, dst: Path) -> None:
    os.replace(src, dst)


def save(folder: str | Path, *, modules: dict, normalization: dict, meta: dict, trainer_state: dict | None = None) \
        -> Path:
    """Write a checkpoint into ``folder`` (e.g. ``runs/x/checkpoints/latest``) atomically; returns ``folder``.

    modules: {name: registered nn.Module} (``policies.save_policy``); normalization: JSON-able states; meta: the
    ``REQUIRED_META`` fields but ``format_version`` (added here) and anything else; trainer_state: torch-saveable
    tensors and plain data."""
    import torch
    from policies import save_policy

    folder = Path(folder)
    missing = [k for k in REQUIRED_META if k != "format_version" and k not in meta]
    if missing:
        raise CheckpointError(f"checkpoint.save: meta lacks field(s) {missing}")
    if "policy" not in modules:
        raise CheckpointError("checkpoint.save: modules must include 'policy'")
    root = folder.parent
    root.mkdir(parents=True, exist_ok=True)
    tmp, old = root / f".{folder.name}.tmp", root / f".{folder.name}.old"
    if not folder.exists() and (old / META_FILE).exists():  # an earlier save stopped between its renames
        _rename(old, folder)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    tmp.mkdir()
    for name, module in modules.items():
        _write(tmp / name, lambda p, m=module: save_policy(m, p))
    _write(tmp / NORMALIZATION_FILE, lambda p: p.write_text(json.dumps(normalization, indent=1)))
    if trainer_state is not None:
        _write(tmp / TRAINER_FILE, lambda p: torch.save(trainer_state, p))
    full_meta = {"format_version": FORMAT_VERSION, **meta}
    _write(tmp / META_FILE, lambda p: p.write_text(json.dumps(full_meta, indent=1)))  # last: marks it complete
    for sub in [tmp, *(tmp / n for n in modules)]:
        _fsync_dir(sub)
    if folder.exists():
        _rename(folder, old)
    _rename(tmp, folder)
    _fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return folder


# ---- reading --------------------------------------------------------------------------------------------------------
class Checkpoint:
    """A validated checkpoint folder: ``meta``, ``normalization`` and, on demand, modules and trainer state."""

    def __init__(self, path: str | Path, tag: str = LATEST, require: Iterable[str] = ("policy",)):
        self.meta = read_meta(path, tag)
        self.path = resolve(path, tag)
        for name in require:
            for part in ("config.json", "model.safetensors"):
                if not (self.path / name / part).exists():
                    raise CheckpointError(f"{self.path / name / part}: missing (module {name!r} of the checkpoint)")
        file = self.path / NORMALIZATION_FILE
        try:
            self.normalization = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{file}: unreadable ({e})") from e
        for key in ("obs", "action"):
            if key not in self.normalization:
                raise CheckpointError(f"{file}: missing field {key!r}")
        self._check_dims(file)

    def _check_dims(self, file: Path) -> None:
        obs_dim, act_dim = int(self.meta["obs_dim"]), int(self.meta["act_dim"])
        got_obs = len(self.normalization["obs"]["mean"])
        if got_obs != obs_dim:
            raise CheckpointError(f"{file}: field 'obs.mean' has {got_obs} entries; meta.json says obs_dim={obs_dim}")
        got_act = len(self.normalization["action"]["low"])
        if got_act != act_dim:
            raise CheckpointError(f"{file}: field 'action.low' has {got_act} entries; meta.json says act_dim={act_dim}")

    # ---- typed views ----------------------------------------------------------------------------------------------
    @property
    def algo(self) -> str:
        return str(self.meta["algo"])

    @property
    def task(self) -> str:
        return str(self.meta["task"])

    @property
    def task_kwargs(self) -> dict:
        return dict(self.meta.get("task_kwargs") or {})

    @property
    def seed(self) -> int:
        return int(self.meta["seed"])

    @property
    def env_steps(self) -> int:
        return int(self.meta["env_steps"])

    def obs_normalizer(self):
        from stack.normalize import ObsNormalizer

        norm = ObsNormalizer(int(self.meta["obs_dim"]))
        norm.load_state_dict(self.normalization["obs"])
        return norm

    def action_scaler(self):
        from stack.rollout import ActionScaler

        return ActionScaler.from_state_dict(self.normalization["action"])

    def module(self, name: str = "policy", into=None, device="cpu"):
        """Module ``name`` rebuilt (or its weights loaded ``into`` an existing module), its dims checked against
        meta.json."""
        from policies import load_policy
        from policies.common import CheckpointError as ModuleCheckpointError

        folder = self.path / name
        if not (folder / "config.json").exists():
            raise CheckpointError(f"{folder}: missing (module {name!r} of the checkpoint)")
        try:
            module = load_policy(folder, into, device=device)
        except ModuleCheckpointError as e:
            raise CheckpointError(str(e)) from e
        if name == "policy":
            for field in ("obs_dim", "act_dim"):
                have = getattr(module, field, None)
                if have is not None and int(have) != int(self.meta[field]):
                    raise CheckpointError(f"{folder / 'config.json'}: the policy's {field} is {have}; "
                                          f"{self.path / META_FILE} says {field}={self.meta[field]}")
        return module

    def trainer_state(self) -> dict:
        import torch

        file = self.path / TRAINER_FILE
        if not file.exists():
            raise CheckpointError(f"{file}: missing (needed to resume)")
        # On the CPU: generator states must stay CPU byte tensors; optimisers move their state to the parameters.
        return torch.load(file, map_location="cpu", weights_only=True)

    def check_matches(self, **expected) -> None:
        """Refuse a checkpoint whose meta differs from what the caller needs (e.g. algo, task, obs_dim), naming the
        field."""
        for key, want in expected.items():
            have = self.meta.get(key)
            if have != want:
                raise CheckpointError(f"{self.path / META_FILE}: field {key!r} is {have!r}; expected {want!r}")


def load(path: str | Path, tag: str = LATEST, require: Iterable[str] = ("policy",)) -> Checkpoint:
    """The checkpoint of a run directory or checkpoint folder, validated (``CheckpointError`` otherwise)."""
    return Checkpoint(path, tag, require)


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """(env_steps, folder) of every complete checkpoint of a run (``step_<N>/`` and ``latest/``), by steps."""
    out: dict[int, Path] = {}
    root = checkpoints_root(run_dir)
    if not root.is_dir():
        return []
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir():
            continue
        try:
            steps = int(read_meta(folder)["env_steps"])
        except CheckpointError:
            continue
        if folder.name != LATEST or steps not in out:
            out[steps] = folder
    return sorted(out.items())


__all__ = ["FORMAT_VERSION", "LATEST", "Checkpoint", "CheckpointError", "exists", "is_current", "list_checkpoints",
           "load", "read_meta", "resolve", "save"]
