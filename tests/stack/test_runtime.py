"""The torch-free runtime against small hand-built ONNX graphs: spec checks, input checks, chunk queue, clamping."""

import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from robots.spec import JointSpec, ObsSegment, RobotSpec, SpecMismatch
from stack.runtime import MetadataError, ObservationError, OnnxPolicy

ARM = RobotSpec(
    name="toy_arm",
    joints=(JointSpec("a", -1.0, 1.0, 2.0, 1.0), JointSpec("b", -0.5, 0.5, 2.0, 1.0)),
    control_mode="position",
    control_rate_hz=50.0,
    model_source="r2s:toy.xml",
)
LAYOUT = (ObsSegment("joint_pos", 2, "joint_states.position"), ObsSegment("goal", 1, "topic:/goal"))


def linear_chunk_model(path, weight, horizon=4, act_steps=2, obs_steps=1, noise=False, **meta_overrides):
    """action[b, h, :] = obs[b, -1, :] @ weight[h] (+ noise): a graph whose outputs the test can predict."""
    obs_dim, act_dim = weight.shape[1], weight.shape[2]
    w = numpy_helper.from_array(weight.transpose(1, 0, 2).reshape(obs_dim, horizon * act_dim).astype(np.float32), "W")
    nodes = [
        helper.make_node("Slice", ["obs", "start", "end", "axis"], ["last"]),
        helper.make_node("Reshape", ["last", "flat_shape"], ["last2d"]),
        helper.make_node("MatMul", ["last2d", "W"], ["flat"]),
        helper.make_node("Reshape", ["flat", "chunk_shape"], ["action" if not noise else "mean"]),
    ]
    inits = [
        w,
        numpy_helper.from_array(np.array([-1], np.int64), "start"),
        numpy_helper.from_array(np.array([obs_steps], np.int64), "end"),
        numpy_helper.from_array(np.array([1], np.int64), "axis"),
        numpy_helper.from_array(np.array([-1, obs_dim], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([-1, horizon, act_dim], np.int64), "chunk_shape"),
    ]
    inputs = [helper.make_tensor_value_info("obs", TensorProto.FLOAT, ["B", obs_steps, obs_dim])]
    if noise:
        inputs.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, ["B", horizon, act_dim]))
        nodes.append(helper.make_node("Add", ["mean", "noise"], ["action"]))
    graph = helper.make_graph(nodes, "toy", inputs,
                              [helper.make_tensor_value_info("action", TensorProto.FLOAT, ["B", horizon, act_dim])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    meta = {
        **ARM.to_metadata(),
        "r2s_version": "test", "obs_layout": json.dumps([s.__dict__ for s in LAYOUT]), "obs_dim": str(obs_dim),
        "obs_steps": str(obs_steps), "action_names": json.dumps(["a", "b"][:act_dim]),
        "action_low": json.dumps([-10.0] * act_dim), "action_high": json.dumps([10.0] * act_dim),
        "act_dim": str(act_dim), "horizon": str(horizon), "act_steps": str(act_steps),
        "policy_type": "flow" if noise else "gaussian", "denoising_steps": "0",
        "noise_shape": json.dumps([horizon, act_dim] if noise else []), "run_id": "t", "content_hash": "x",
        **meta_overrides,
    }
    onnx.helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture
def weight():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 3, 2)).astype(np.float32) * 0.1


def test_chunk_queue_executes_act_steps_then_replans(tmp_path, weight):
    policy = OnnxPolicy.load(linear_chunk_model(tmp_path / "m.onnx", weight), ARM, LAYOUT)
    calls = []
    real_infer = policy.infer
    policy.infer = lambda o, noise=None: (calls.append(o.copy()), real_infer(o, noise))[1]
    o1, o2, o3 = (np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.1, -0.2]), np.array([-0.1, 0.0, 0.4]))
    c1, c2, c3 = policy.step(o1), policy.step(o2), policy.step(o3)
    assert len(calls) == 2, "act_steps=2: the third step must re-plan, the second must not"
    np.testing.assert_allclose(c1, o1 @ weight[0], atol=1e-6)
    np.testing.assert_allclose(c2, o1 @ weight[1], atol=1e-6)  # second action of the first chunk
    np.testing.assert_allclose(c3, o3 @ weight[0], atol=1e-6)


def test_commands_are_clamped_to_robot_limits(tmp_path):
    weight = np.zeros((4, 3, 2), np.float32)
    weight[:, 2, :] = 100.0  # the goal feature drives both joints far beyond their limits
    policy = OnnxPolicy.load(linear_chunk_model(tmp_path / "m.onnx", weight), ARM, LAYOUT)
    np.testing.assert_allclose(policy.step([0, 0, 1.0]), [1.0, 0.5])
    policy.reset()
    np.testing.assert_allclose(policy.step([0, 0, -1.0]), [-1.0, -0.5])


@pytest.mark.parametrize("bad,match", [
    ([0.1, 0.2], r"shape \(2,\); policy expects \(3,\) = joint_pos\[2\], goal\[1\]"),
    ([0.1, np.nan, 0.0], r"NaN/inf at index \[1\] \(\['joint_pos\[1\]'\]\)"),
    ([0.1, 0.0, np.inf], r"goal\[0\]"),
])
def test_bad_observations_are_refused_without_a_command(tmp_path, weight, bad, match):
    policy = OnnxPolicy.load(linear_chunk_model(tmp_path / "m.onnx", weight), ARM, LAYOUT)
    with pytest.raises(ObservationError, match=match):
        policy.step(bad)
    assert policy.queue_length == 0  # nothing was planned from the bad input


@pytest.mark.parametrize("override,field", [
    ({"robot": "other_arm"}, "robot"),
    ({"joint_names": json.dumps(["b", "a"])}, "joint_names"),
    ({"control_rate_hz": "100.0"}, "control_rate_hz"),
    ({"control_mode": "effort"}, "control_mode"),
])
def test_model_for_another_robot_is_refused_naming_the_field(tmp_path, weight, override, field):
    path = linear_chunk_model(tmp_path / "m.onnx", weight, **override)
    with pytest.raises(SpecMismatch, match=field):
        OnnxPolicy.load(path, ARM, LAYOUT)


def test_observation_layout_mismatch_is_refused(tmp_path, weight):
    path = linear_chunk_model(tmp_path / "m.onnx", weight)
    other = (ObsSegment("joint_pos", 2, "joint_states.position"), ObsSegment("target", 1, "topic:/goal"))
    with pytest.raises(SpecMismatch, match=r"obs_layout\[1\]"):
        OnnxPolicy.load(path, ARM, other)


def test_model_without_r2s_metadata_is_refused(tmp_path, weight):
    path = linear_chunk_model(tmp_path / "m.onnx", weight)
    model = onnx.load(path)
    del model.metadata_props[:]
    onnx.save(model, path)
    with pytest.raises(MetadataError, match="missing key"):
        OnnxPolicy.load(path, ARM)


def test_zero_noise_is_deterministic_and_random_noise_is_seeded(tmp_path, weight):
    path = linear_chunk_model(tmp_path / "m.onnx", weight, noise=True)
    obs = np.array([0.2, -0.1, 0.3])
    zero = OnnxPolicy.load(path, ARM, noise="zero")
    np.testing.assert_allclose(zero.step(obs), obs @ weight[0], atol=1e-6)
    a = OnnxPolicy.load(path, ARM, noise="random", seed=3, warmup=0).step(obs)
    b = OnnxPolicy.load(path, ARM, noise="random", seed=3, warmup=0).step(obs)
    c = OnnxPolicy.load(path, ARM, noise="random", seed=4, warmup=0).step(obs)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_temporal_ensembling_weights_the_oldest_prediction_most(tmp_path, weight):
    policy = OnnxPolicy.load(linear_chunk_model(tmp_path / "m.onnx", weight), ARM, temporal_ensemble=0.5)
    o1, o2 = np.array([0.1, 0.2, 0.3]), np.array([0.3, 0.1, -0.2])
    np.testing.assert_allclose(policy.step(o1), o1 @ weight[0], atol=1e-6)
    w = np.exp(-0.5 * np.arange(2))
    expected = (w[0] * (o1 @ weight[1]) + w[1] * (o2 @ weight[0])) / w.sum()
    np.testing.assert_allclose(policy.step(o2), expected, atol=1e-6)


def test_runtime_never_imports_torch(tmp_path, weight):
    path = linear_chunk_model(tmp_path / "m.onnx", weight)
    code = (
        "import sys; from stack.runtime import OnnxPolicy; from tests.stack.test_runtime import ARM; "
        f"p = OnnxPolicy.load({str(path)!r}, ARM); p.step([0.1, 0.2, 0.3]); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


# ---- models that cannot run are refused at load, saying why (issue 11.5) ------------------------------------------
@pytest.mark.parametrize("content,match", [
    (b"", "onnxruntime cannot load it"),
    (b"this is not an onnx file at all", "onnxruntime cannot load it"),
    ("truncated", "onnxruntime cannot load it"),
])
def test_a_file_onnxruntime_cannot_load_is_refused_naming_the_cause(tmp_path, weight, content, match):
    from stack.runtime import ModelError

    path = tmp_path / "bad.onnx"
    if content == "truncated":
        whole = linear_chunk_model(tmp_path / "m.onnx", weight).read_bytes()
        path.write_bytes(whole[: len(whole) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ModelError, match=match) as info:
        OnnxPolicy.load(path, ARM)
    assert str(path) in str(info.value) and len(str(info.value)) > len(str(path)) + 30


@pytest.mark.parametrize("kwargs,overrides,match", [
    ({"act_steps": 0}, {}, r"act_steps: 0; expected >= 1"),
    ({"horizon": 2, "act_steps": 3}, {}, r"horizon: 2 is shorter than act_steps 3"),
    ({}, {"action_names": json.dumps(["a"])}, r"act_dim: 2 but action_names has 1 entries"),
    ({}, {"action_names": json.dumps(["a"]), "act_dim": "1", "action_low": "[-1]", "action_high": "[1]"},
     r"graph output action has shape \['B', 4, 2\]; metadata says \['B', horizon=4, act_dim=1\]"),
    ({}, {"obs_dim": "4", "obs_layout": json.dumps([{"name": "joint_pos", "size": 2, "source": "joint_states.position"},
                                                    {"name": "goal", "size": 2, "source": "topic:/goal"}])},
     r"graph input obs has shape \['B', 1, 3\]; metadata says \['B', 1, 4\]"),
    ({}, {"noise_shape": "[4, 2]"}, r"graph has no input 'noise'"),
])
def test_a_graph_that_contradicts_its_metadata_is_refused_at_load(tmp_path, weight, kwargs, overrides, match):
    from stack.runtime import MetadataError, ModelError

    path = linear_chunk_model(tmp_path / "m.onnx", weight if "horizon" not in kwargs else weight[:kwargs["horizon"]],
                              **kwargs, **overrides)
    with pytest.raises((ModelError, MetadataError), match=match):
        OnnxPolicy.load(path, None)
