"""The robot overlay a run's simulator carried (``stack.run_overlay``): copied into the run and recorded in its
checkpoints, a resume on another overlay refused naming the field, named in the exported policy's metadata, and
compared by ``r2s deploy --sim`` (warned about, before any node starts)."""

from __future__ import annotations

import json
import shutil

import onnx
import pytest
import yaml

from robots.overlay import OVERLAY_ENV, load_overlay, overlay_hash
from stack import run_overlay
from stack.checkpoint import CheckpointError, read_meta
from stack.config import EnvConfig, PPOConfig, TrainConfig
from stack.export import export_run
from stack.train import train

STEPS = 2 * 2 * 16  # two iterations of 2 envs × 16 steps


def _overlay(tmp_path, name="cal.yaml", damping=0.61, **fields) -> str:
    path = tmp_path / name
    body = {"robot": "so101", "joints": {"elbow_flex": {"damping": damping, "kp": 33.0}},
            "command_delay_substeps": 1, "source": {"bag": "x.mcap"}, **fields}
    path.write_text(json.dumps(body) if name.endswith(".json") else
                    "# from r2s sysid\n" + yaml.safe_dump(body, sort_keys=False))
    return str(path)


def _cfg(runs, name, steps=STEPS, task="reach", **kw):
    return TrainConfig(env=EnvConfig(task=task, num_envs=2, backend="sync", task_kwargs=kw.pop("task_kwargs", {})),
                       ppo=PPOConfig(rollout_steps=16, num_minibatches=2, update_epochs=1, anneal_lr=False),
                       total_env_steps=steps, eval_every=0, eval_episodes=0, checkpoint_every=2 * 16,
                       name=name, runs_dir=str(runs), progress=False, tensorboard=False, seed=3, **kw)


@pytest.fixture(scope="module")
def overlay_run(tmp_path_factory):
    """A tiny reach run trained with R2S_ROBOT_OVERLAY set (the way `r2s sysid`'s output is used)."""
    root = tmp_path_factory.mktemp("overlay_run")
    path = _overlay(root)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(OVERLAY_ENV, path)
        run = train(_cfg(root / "runs", "with-overlay"))
    return run, path


# ---- the hash --------------------------------------------------------------------------------------------------
def test_overlay_hash_covers_what_changes_the_simulation_only(tmp_path):
    base = load_overlay(_overlay(tmp_path))
    as_json = tmp_path / "cal.json"
    as_json.write_text(json.dumps({**base, "source": {"bag": "other.mcap"}, "unidentified": ["gripper.kp"]}))
    assert overlay_hash(load_overlay(as_json)) == overlay_hash(base)  # format and notes: the same simulation
    ints = {**base, "joints": {"elbow_flex": {"damping": 0.61, "kp": 33}}}
    assert overlay_hash(ints) == overlay_hash(base)  # 33 and 33.0 set the same gain
    assert overlay_hash(load_overlay(_overlay(tmp_path, "b.yaml", damping=0.62))) != overlay_hash(base)
    assert overlay_hash({**base, "command_delay_substeps": 2}) != overlay_hash(base)
    assert len(overlay_hash(base)) == 16


# ---- the run records it ------------------------------------------------------------------------------------------
def test_a_run_keeps_a_copy_and_every_checkpoint_records_the_overlay(overlay_run):
    run, path = overlay_run
    copy = run / "robot_overlay.yaml"
    assert copy.read_bytes() == open(path, "rb").read()  # a byte copy, comments and all
    want = {"file": "cal.yaml", "path": path, "hash": overlay_hash(load_overlay(path)), "copy": "robot_overlay.yaml"}
    steps = []
    for folder in sorted((run / "checkpoints").iterdir()):
        meta = read_meta(folder)
        assert meta["robot_overlay"] == want, folder
        steps.append(meta["env_steps"])
    assert STEPS in steps


def test_the_task_kwarg_wins_over_the_environment_and_a_nominal_run_records_none(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, "env.yaml"))
    run = train(_cfg(tmp_path / "runs", "nominal", steps=32, task_kwargs={"robot_overlay": ""}))
    assert read_meta(run / "checkpoints" / "latest")["robot_overlay"] is None
    assert not list(run.glob("robot_overlay.*"))
    other = _overlay(tmp_path, "kw.json", damping=0.9)
    assert run_overlay.run_overlay("reach", {"robot_overlay": other})["file"] == "kw.json"
    assert run_overlay.run_overlay("reach", {})["file"] == "env.yaml"


def test_an_overlay_set_for_a_task_without_one_is_ignored_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path))
    with pytest.warns(UserWarning, match=r"task 'point_mass' takes no robot overlay"):
        assert run_overlay.run_overlay("point_mass", {}) is None


def test_a_bad_overlay_is_refused_before_the_run_directory_exists(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, command_delay_substeps=-1))
    with pytest.raises(ValueError, match="command_delay_substeps must be an integer >= 0"):
        train(_cfg(tmp_path / "runs", "bad"))
    assert not (tmp_path / "runs" / "bad").exists()



def test_an_overlay_with_ray_cluster_workers_is_refused_before_the_run_directory_exists(tmp_path, monkeypatch):
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path))
    with pytest.raises(ValueError, match="workers='ray://head:10001' with a robot overlay"):
        train(_cfg(tmp_path / "runs", "cluster", workers="ray://head:10001"))
    assert not (tmp_path / "runs" / "cluster").exists()


# ---- resume --------------------------------------------------------------------------------------------------------
def test_resume_on_another_overlay_or_none_is_refused_naming_the_field(overlay_run, tmp_path, monkeypatch):
    src, path = overlay_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    metrics = (run / "metrics.csv").read_text()
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, "other.yaml", damping=0.7))
    with pytest.raises(CheckpointError, match=r"field 'robot_overlay' is cal\.yaml \(hash [0-9a-f]{16}\), but the "
                                              r"simulator now carries other\.yaml"):
        train(_cfg(tmp_path, "x", steps=2 * STEPS, resume=str(run)))
    monkeypatch.delenv(OVERLAY_ENV)
    with pytest.raises(CheckpointError, match=rf"now carries none .* {OVERLAY_ENV}={run / 'robot_overlay.yaml'}"):
        train(_cfg(tmp_path, "x", steps=2 * STEPS, resume=str(run)))
    assert (run / "metrics.csv").read_text() == metrics  # refused before anything was touched


def test_resume_with_the_runs_copy_goes_on_and_keeps_the_record(overlay_run, tmp_path, monkeypatch):
    src, path = overlay_run
    run = tmp_path / "run"
    shutil.copytree(src, run)
    monkeypatch.setenv(OVERLAY_ENV, str(run / "robot_overlay.yaml"))
    assert train(_cfg(tmp_path, "x", steps=STEPS + 32, resume=str(run))) == run
    meta = read_meta(run / "checkpoints" / "latest")
    assert meta["env_steps"] == STEPS + 32
    assert meta["robot_overlay"]["file"] == "cal.yaml"  # the record names the file the run started with


def test_a_nominal_run_resumed_with_an_overlay_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    run = train(_cfg(tmp_path / "runs", "nominal", steps=32))
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path))
    with pytest.raises(CheckpointError, match=rf"field 'robot_overlay' is none .* resume with {OVERLAY_ENV} unset"):
        train(_cfg(tmp_path, "x", steps=64, resume=str(run)))


def test_check_resume_of_a_checkpoint_from_before_overlays_warns(tmp_path):
    record = run_overlay.overlay_record(_overlay(tmp_path))
    with pytest.warns(UserWarning, match="field 'robot_overlay' is not recorded"):
        assert run_overlay.check_resume({"algo": "ppo"}, record, tmp_path, "resume x") == record
    assert run_overlay.check_resume({"algo": "ppo"}, None, tmp_path, "resume x") is None


# ---- export and deploy ---------------------------------------------------------------------------------------------
def _props(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


@pytest.fixture(scope="module")
def exported(overlay_run, tmp_path_factory):
    run, path = overlay_run
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(OVERLAY_ENV, path)
        out = tmp_path_factory.mktemp("export") / "policy.onnx"
        export_run(run, out)
    return out, path


def test_the_exported_policy_names_its_training_overlay(exported):
    out, path = exported
    props = _props(out)
    assert props["robot_overlay"] == "cal.yaml"
    assert props["robot_overlay_hash"] == overlay_hash(load_overlay(path))
    assert run_overlay.export_props({"robot_overlay": None}) == {"robot_overlay": "", "robot_overlay_hash": ""}
    assert run_overlay.export_props({}) == {}  # a run from before: nothing claimed


def test_deploy_mismatch_says_what_differs(tmp_path):
    a = run_overlay.overlay_record(_overlay(tmp_path, "a.yaml"))
    b = run_overlay.overlay_record(_overlay(tmp_path, "b.yaml", damping=0.9))
    trained_a = {"robot_overlay": "a.yaml", "robot_overlay_hash": a["hash"]}
    nominal = {"robot_overlay": "", "robot_overlay_hash": ""}
    assert run_overlay.deploy_mismatch(trained_a, a) is None
    # Same values under another name: the same simulator, nothing to warn about.
    assert run_overlay.deploy_mismatch(trained_a, {**a, "file": "renamed.yaml"}) is None
    msg = run_overlay.deploy_mismatch(trained_a, b)
    assert f"trained with a.yaml (hash {a['hash']})" in msg and f"runs with b.yaml (hash {b['hash']})" in msg
    assert "runs with none (the nominal model)" in run_overlay.deploy_mismatch(trained_a, None)
    assert "trained with none (the nominal model)" in run_overlay.deploy_mismatch(nominal, a)
    assert run_overlay.deploy_mismatch(nominal, None) is None
    assert "does not say which overlay" in run_overlay.deploy_mismatch({}, a)
    assert run_overlay.deploy_mismatch({}, None) is None


def test_deploy_sim_checks_the_environments_overlay_and_warns_before_any_node(exported, tmp_path, monkeypatch,
                                                                              capsys):
    from stack.ros.deploy import DeployError, check_sim_overlay, deploy

    policy, path = exported
    monkeypatch.setenv(OVERLAY_ENV, path)
    assert check_sim_overlay(str(policy), "so101", "reach", None) == (path, None)  # the training overlay: quiet
    other = _overlay(tmp_path, "other.yaml", damping=0.9)
    resolved, warning = check_sim_overlay(str(policy), "so101", "reach", other)  # --robot-overlay wins
    assert resolved == other and "trained with cal.yaml" in warning and "runs with other.yaml" in warning
    resolved, warning = check_sim_overlay(str(policy), "so101", "reach", None, set_overlay=other)
    assert resolved == other and warning  # --set sim.robot_overlay, the last word the node gets
    monkeypatch.delenv(OVERLAY_ENV)
    assert "runs with none" in check_sim_overlay(str(policy), "so101", "reach", None)[1]

    # R2S_ROBOT_OVERLAY is checked up front like --robot-overlay: bad file, other robot, task without overlays.
    logs = tmp_path / "logs"
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, "bad.yaml", command_delay_substeps="late"))
    with pytest.raises(DeployError, match=rf"^{OVERLAY_ENV}: .*command_delay_substeps must be an integer"):
        deploy(str(policy), "so101", sim=True, task="reach", log_dir=str(logs))
    monkeypatch.setenv(OVERLAY_ENV, _overlay(tmp_path, "arm2.yaml", robot="arm2"))
    with pytest.raises(DeployError, match=rf"^{OVERLAY_ENV}: .*robot is 'arm2', expected 'so101'"):
        deploy(str(policy), "so101", sim=True, task="reach", log_dir=str(logs))
    monkeypatch.setenv(OVERLAY_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(DeployError, match=rf"^{OVERLAY_ENV}: .*missing\.yaml: cannot read it"):
        deploy(str(policy), "so101", sim=True, task="reach", log_dir=str(logs))
    monkeypatch.setenv(OVERLAY_ENV, other)
    with pytest.raises(DeployError, match=r"task 'point_mass' takes no robot overlay"):
        deploy(str(policy), "so101", sim=True, task="point_mass", log_dir=str(logs))
    assert not logs.exists()  # no graph was made

    # A mismatch is said on stderr before the graph starts (here the graph cannot write its parameter file, so no
    # node starts at all).
    (logs / "params.yaml").mkdir(parents=True)
    capsys.readouterr()
    with pytest.raises(IsADirectoryError):
        deploy(str(policy), "so101", sim=True, task="reach", log_dir=str(logs), status=False)
    err = capsys.readouterr().err
    assert "r2s deploy: WARNING: robot overlay mismatch: the policy was trained with cal.yaml" in err
    assert "runs with other.yaml" in err


def test_r2s_eval_warns_when_its_simulator_carries_another_overlay(overlay_run, monkeypatch, recwarn):
    from stack.evaluate import evaluate_run

    run, path = overlay_run
    monkeypatch.delenv(OVERLAY_ENV, raising=False)
    with pytest.warns(UserWarning, match=rf"trained with robot overlay cal\.yaml .* carries none .* "
                                         rf"{OVERLAY_ENV}={run / 'robot_overlay.yaml'}"):
        evaluate_run(run, episodes=1)
    monkeypatch.setenv(OVERLAY_ENV, str(run / "robot_overlay.yaml"))
    recwarn.clear()
    evaluate_run(run, episodes=1)
    assert not [w for w in recwarn if "robot overlay" in str(w.message)]
