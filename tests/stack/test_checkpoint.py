"""stack.checkpoint: atomic saves (a failure injected at every part leaves the previous checkpoint complete),
validated loads that name the file and the field, the format version."""

from __future__ import annotations

import json

import pytest
import torch

from policies import GaussianPolicy, ValueNet
from stack import checkpoint
from stack.checkpoint import CheckpointError

OBS, ACT = 3, 2


def _parts(steps: int, scale: float = 1.0) -> dict:
    torch.manual_seed(steps)
    policy, critic = GaussianPolicy(OBS, ACT, hidden=(8,)), ValueNet(OBS, hidden=(8,))
    with torch.no_grad():
        for p in policy.parameters():
            p.mul_(scale)
    meta = {"algo": "ppo", "policy": "gaussian", "task": "point_mass", "obs_dim": OBS, "act_dim": ACT,
            "horizon": 1, "act_steps": 1, "obs_steps": 1, "sampling": {}, "seed": 1, "env_steps": steps}
    norm = {"obs": {"enabled": True, "clip": 10.0, "epsilon": 1e-8, "mean": [0.0] * OBS, "var": [1.0] * OBS,
                    "count": 1.0},
            "action": {"mode": "minmax", "low": [-1.0] * ACT, "high": [1.0] * ACT}}
    return {"modules": {"policy": policy, "critic": critic}, "normalization": norm, "meta": meta,
            "trainer_state": {"step": torch.tensor(steps)}}


def _save(folder, steps):
    return checkpoint.save(folder, **_parts(steps))


def test_save_then_load_round_trip(tmp_path):
    folder = _save(tmp_path / "checkpoints" / "latest", 100)
    ckpt = checkpoint.load(tmp_path)  # a run directory resolves to checkpoints/latest
    assert ckpt.path == folder and ckpt.env_steps == 100 and ckpt.meta["format_version"] == checkpoint.FORMAT_VERSION
    want = _parts(100)["modules"]["policy"].state_dict()
    got = ckpt.module("policy").state_dict()
    assert all(torch.equal(want[k], got[k]) for k in want)
    assert int(ckpt.trainer_state()["step"]) == 100
    assert [s for s, _ in checkpoint.list_checkpoints(tmp_path)] == [100]


def _count_parts(tmp_path) -> int:
    calls = []
    real = checkpoint._write

    def counting(path, write):
        calls.append(path)
        real(path, write)

    checkpoint._write = counting
    try:
        _save(tmp_path / "probe", 1)
    finally:
        checkpoint._write = real
    return len(calls)


def _failing(real, k: int):
    """``real`` (a checkpoint part writer or the rename), raising on its k-th call (0-based)."""
    calls = {"n": 0}

    def wrapped(*args):
        if calls["n"] == k:
            raise OSError(f"injected failure at call {k}")
        calls["n"] += 1
        return real(*args)

    return wrapped


@pytest.mark.parametrize("where", ["part", "first_rename", "second_rename"])
def test_an_interrupted_save_leaves_the_previous_checkpoint_complete(tmp_path, monkeypatch, where):
    folder = tmp_path / "checkpoints" / "latest"
    _save(folder, 100)
    n_parts = _count_parts(tmp_path)
    assert n_parts == 5  # policy/, critic/, normalization.json, trainer.pt, meta.json
    failures = range(n_parts) if where == "part" else [0]
    for k in failures:
        if where == "part":
            monkeypatch.setattr(checkpoint, "_write", _failing(checkpoint._write, k))
        else:
            at = 0 if where == "first_rename" else 1
            monkeypatch.setattr(checkpoint, "_rename", _failing(checkpoint._rename, at))
        with pytest.raises(OSError, match="injected"):
            _save(folder, 200)
        monkeypatch.undo()
        ckpt = checkpoint.load(tmp_path, require=("policy", "critic"))  # complete and loadable
        assert ckpt.env_steps == 100
        ckpt.module("policy"), ckpt.module("critic"), ckpt.trainer_state()
    # and the next save succeeds and wins
    _save(folder, 300)
    assert checkpoint.load(tmp_path).env_steps == 300
    assert sorted(p.name for p in folder.parent.iterdir()) == ["latest"]


def test_load_refuses_missing_partial_and_mismatched_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        checkpoint.load(tmp_path / "nothing")
    folder = _save(tmp_path / "run" / "checkpoints" / "latest", 5)
    (folder / "meta.json").rename(folder / "meta.json.bak")
    with pytest.raises(CheckpointError, match="partial checkpoint"):
        checkpoint.load(tmp_path / "run")
    (folder / "meta.json.bak").rename(folder / "meta.json")

    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    with pytest.raises(CheckpointError, match=r"meta.json: field 'format_version' is 1; this code reads"):
        checkpoint.load(folder)
    assert not checkpoint.is_current(folder)
    (folder / "meta.json").write_text(json.dumps({k: v for k, v in meta.items() if k != "act_dim"}))
    with pytest.raises(CheckpointError, match=r"meta.json: missing field\(s\) \['act_dim'\]"):
        checkpoint.load(folder)
    (folder / "meta.json").write_text(json.dumps({**meta, "obs_dim": 4}))
    with pytest.raises(CheckpointError, match=r"normalization.json: field 'obs.mean' has 3 entries; .*obs_dim=4"):
        checkpoint.load(folder)
    (folder / "meta.json").write_text(json.dumps(meta))
    ckpt = checkpoint.load(folder)
    with pytest.raises(CheckpointError, match=r"field 'task' is 'point_mass'; expected 'hopper'"):
        ckpt.check_matches(task="hopper")
    (folder / "policy" / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"policy/model.safetensors: missing"):
        checkpoint.load(folder)
