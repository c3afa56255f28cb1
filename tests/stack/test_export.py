"""Export: parity with the torch policy for every kind, metadata the runtime accepts, failed parity deletes the file."""

import copy
import json

import numpy as np
import onnx
import pytest
import torch

from policies import DiffusionPolicy, FlowPolicy, GaussianPolicy
from robots.spec import ObsSegment, obs_layout_to_json
from stack.export import ExportError, ExportSpec, export_policy
from stack.runtime import OnnxPolicy
from tests.stack.test_runtime import ARM

OBS_DIM, ACT_DIM = 5, 2
LAYOUT = (ObsSegment("joint_pos", 2, "joint_states.position"), ObsSegment("joint_vel", 2, "joint_states.velocity"),
          ObsSegment("goal", 1, "topic:/goal"))
META = {**ARM.to_metadata(), "obs_layout": obs_layout_to_json(LAYOUT), "action_names": json.dumps(["a", "b"]),
        "run_id": "test"}


@pytest.fixture
def spec():
    rng = np.random.default_rng(1)
    return ExportSpec(rng.normal(size=OBS_DIM), rng.uniform(0.5, 2.0, OBS_DIM), 5.0,
                      np.array([-1.0, -0.5]), np.array([1.0, 0.5]), "minmax")


def _perturb(module):
    with torch.no_grad():  # fresh-init biases are small: make every parameter matter for the parity check
        for p in module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return module


CASES = [
    ("gaussian-mean", lambda: GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(32, 32)), {}, []),
    ("gaussian-sampled-tanh", lambda: GaussianPolicy(OBS_DIM, ACT_DIM, hidden=(32, 32), squash="tanh"),
     {"sampled": True}, [1, ACT_DIM]),
    ("flow-k1", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=4, act_steps=2, hidden=(64, 64)), {"steps": 1}, [4, 2]),
    ("flow-k10", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=4, act_steps=2, hidden=(64, 64)), {"steps": 10},
     [4, 2]),
    ("ddpm-20", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=(64, 64, 64)), {}, [21, 4, 2]),
    ("ddim-5-deterministic", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=(64, 64, 64)),
     {"sampler": "ddim", "ddim_steps": 5, "eta": 0.0}, [4, 2]),
    ("ddim-5-eta1", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=(64, 64, 64)),
     {"sampler": "ddim", "ddim_steps": 5, "eta": 1.0}, [6, 4, 2]),
]


@pytest.mark.parametrize("name,make,opts,noise_shape", CASES, ids=[c[0] for c in CASES])
def test_export_matches_torch_and_the_runtime_accepts_it(tmp_path, spec, name, make, opts, noise_shape):
    torch.manual_seed(0)
    policy = _perturb(make())
    result = export_policy(policy, spec, tmp_path / "p.onnx", META, **opts)
    tol = 1e-4 if name == "ddpm-20" else 1e-5
    assert result["parity_max_abs_err"] <= tol
    assert result["noise_shape"] == noise_shape
    model = onnx.load(tmp_path / "p.onnx")
    props = {p.key: p.value for p in model.metadata_props}
    assert props["policy_type"] == policy.kind and props["robot"] == ARM.name
    assert json.loads(props["noise_shape"]) == noise_shape
    runtime = OnnxPolicy.load(tmp_path / "p.onnx", ARM, LAYOUT)
    command = runtime.step(np.zeros(OBS_DIM))
    assert command.shape == (ACT_DIM,)
    assert np.all(command >= [-1.0, -0.5]) and np.all(command <= [1.0, 0.5])


def test_dppo_policy_exports_both_networks(tmp_path, spec):
    """A DPPO-fine-tuned policy runs the frozen network for early steps and the fine-tuned one for the last K′."""
    torch.manual_seed(0)
    policy = _perturb(DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=(64, 64, 64), denoising_steps=10))
    fine_tuned = _perturb(copy.deepcopy(policy.net))
    net_for_step = lambda i: policy.net if i < 6 else fine_tuned  # noqa: E731
    both = export_policy(policy, spec, tmp_path / "both.onnx", META, net_for_step=net_for_step)
    frozen_only = export_policy(policy, spec, tmp_path / "frozen.onnx", META)
    assert both["parity_max_abs_err"] <= 1e-5
    assert both["content_hash"] != frozen_only["content_hash"]


def test_failed_parity_deletes_the_file(tmp_path, spec, monkeypatch):
    import stack.export as export

    monkeypatch.setattr(export, "parity_check", lambda *a, **k: 0.5)
    with pytest.raises(ExportError, match="parity check failed"):
        export_policy(GaussianPolicy(OBS_DIM, ACT_DIM), spec, tmp_path / "p.onnx", META)
    assert not (tmp_path / "p.onnx").exists()


def test_normalisation_and_bounds_are_baked_in(tmp_path):
    """An identity-like policy shows the graph applies (obs − mean)/std and maps [-1, 1] to the bounds."""
    policy = GaussianPolicy(1, 1, hidden=())
    with torch.no_grad():
        policy.mean.weight.fill_(1.0)
        policy.mean.bias.zero_()
    spec = ExportSpec(np.array([2.0]), np.array([4.0]), None, np.array([0.0]), np.array([10.0]), "minmax")
    meta = {**META, "joint_names": json.dumps(["a"]), "action_names": json.dumps(["a"]),
            "obs_layout": obs_layout_to_json((ObsSegment("x", 1, "topic:/x"),))}
    export_policy(policy, spec, tmp_path / "p.onnx", meta)
    runtime = OnnxPolicy.load(tmp_path / "p.onnx", None)
    # obs 4 → normalised 0.5 → action 0.5 in [-1, 1] → 0 + (0.5 + 1)/2 · 10 = 7.5
    np.testing.assert_allclose(runtime.infer(np.array([[[4.0]]], np.float32))[0, 0], [7.5], atol=1e-6)
    np.testing.assert_allclose(runtime.infer(np.array([[[100.0]]], np.float32))[0, 0], [10.0], atol=1e-6)


def test_unrolled_chain_stores_each_weight_once(tmp_path, spec):
    """20 denoising steps share one denoiser: the file must not hold 20 copies of its weights."""
    policy = _perturb(DiffusionPolicy(OBS_DIM, ACT_DIM, hidden=(64, 64, 64)))
    export_policy(policy, spec, tmp_path / "p.onnx", META)
    stored = sum(int(np.prod(t.dims)) for t in onnx.load(tmp_path / "p.onnx").graph.initializer)
    params = sum(p.numel() for p in policy.parameters())
    assert stored < 2 * params, (stored, params)
