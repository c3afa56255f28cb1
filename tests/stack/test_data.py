"""The episode dataset: round trip, stats, training windows by hand, refusal of malformed data, recorded demos."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stack.data import AUTHORITY, DatasetError, EpisodeDataset, EpisodeWriter, window_indices

OBS_DIM, ACT_DIM = 3, 2


def _steps(rng: np.random.Generator, n: int, terminal: bool, succeed_from: int | None) -> list[dict]:
    steps = []
    for t in range(n):
        action = rng.normal(size=ACT_DIM)
        human = t % 3 == 1
        steps.append(dict(
            obs=rng.normal(size=OBS_DIM), action=action, reward=float(rng.normal()),
            terminated=terminal and t == n - 1, truncated=not terminal and t == n - 1,
            success=succeed_from is not None and t >= succeed_from,
            proposal=action + (0.5 if human else 0.0), authority="human" if human else "policy",
            intervention_mask=np.array([human, False]),
        ))
    return steps


def _write(root: Path, episodes: list[list[dict]]) -> Path:
    w = EpisodeWriter(root, robot="toy", task="toy", fps=20.0, obs_dim=OBS_DIM, act_dim=ACT_DIM,
                      action_names=["j0", "j1"])
    for i, steps in enumerate(episodes):
        for s in steps:
            w.add_step(s["obs"], s["action"], s["reward"], terminated=s["terminated"], truncated=s["truncated"],
                       success=s["success"], proposal=s["proposal"], authority=s["authority"],
                       intervention_mask=s["intervention_mask"])
        w.end_episode(policy_version=f"v{i}", seed=i)
    return w.close()


@pytest.fixture
def toy(tmp_path):
    rng = np.random.default_rng(0)
    # episode 0: times out without success; 1: succeeds from frame 2 on; 2: falls (terminal) after 4 frames
    episodes = [_steps(rng, 5, False, None), _steps(rng, 6, False, 2), _steps(rng, 4, True, None)]
    return _write(tmp_path / "ds", episodes), episodes


def test_round_trip_preserves_every_column(toy):
    root, episodes = toy
    ds = EpisodeDataset(root)
    assert (len(ds), ds.num_episodes, ds.obs_dim, ds.act_dim) == (15, 3, OBS_DIM, ACT_DIM)
    flat = [s for steps in episodes for s in steps]
    f = ds.frames()
    np.testing.assert_array_equal(f["observation.state"], np.array([s["obs"] for s in flat], np.float32))
    np.testing.assert_array_equal(f["action"], np.array([s["action"] for s in flat], np.float32))
    np.testing.assert_array_equal(f["action.proposal"], np.array([s["proposal"] for s in flat], np.float32))
    np.testing.assert_array_equal(f["authority"], [AUTHORITY[s["authority"]] for s in flat])
    np.testing.assert_array_equal(f["intervention_mask"], [s["intervention_mask"] for s in flat])
    np.testing.assert_array_equal(f["next.reward"], np.array([s["reward"] for s in flat], np.float32))
    np.testing.assert_array_equal(f["next.success"], [s["success"] for s in flat])
    np.testing.assert_array_equal(f["episode_index"], [0] * 5 + [1] * 6 + [2] * 4)
    np.testing.assert_array_equal(f["frame_index"], [*range(5), *range(6), *range(4)])
    np.testing.assert_array_equal(f["index"], np.arange(15))
    np.testing.assert_allclose(f["timestamp"], np.array([*range(5), *range(6), *range(4)]) / 20.0, rtol=1e-6)
    done = np.zeros(15, bool)
    done[[4, 10, 14]] = True
    np.testing.assert_array_equal(f["next.done"], done)
    trunc = np.zeros(15, bool)
    trunc[[4, 10]] = True  # episode 2 ended in a terminal state
    np.testing.assert_array_equal(f["next.truncated"], trunc)

    outcomes = [(m["outcome"], m["success_step"], m["length"], m["policy_version"], m["seed"]) for m in ds.episodes]
    assert outcomes == [("timeout", None, 5, "v0", 0), ("success", 2, 6, "v1", 1), ("failure", None, 4, "v2", 2)]
    for m, steps in zip(ds.episodes, episodes):
        assert m["return"] == pytest.approx(sum(s["reward"] for s in steps), abs=1e-12)
        assert (m["robot"], m["task"]) == ("toy", "toy")
    info = ds.info
    assert (info["total_episodes"], info["total_frames"], info["fps"]) == (3, 15, 20.0)
    assert info["features"]["action"] == {"dtype": "float32", "shape": [2], "names": ["j0", "j1"]}
    assert ds.episode(1)["frame_index"].tolist() == list(range(6))
    with pytest.raises(ValueError):  # the loaded columns are read-only views
        ds.frames(["action"])["action"][0, 0] = 1.0


def test_stats_are_mean_std_min_max_of_the_stored_values(toy):
    root, _ = toy
    ds = EpisodeDataset(root)
    for key in ("observation.state", "action", "action.proposal"):
        x = ds.frames([key])[key].astype(np.float64)
        np.testing.assert_allclose(ds.stats[key]["mean"], x.mean(0), rtol=1e-12)
        np.testing.assert_allclose(ds.stats[key]["std"], x.std(0), rtol=1e-12)
        np.testing.assert_array_equal(ds.stats[key]["min"], x.min(0))
        np.testing.assert_array_equal(ds.stats[key]["max"], x.max(0))
    r = ds.frames(["next.reward"])["next.reward"].astype(np.float64)
    assert ds.stats["next.reward"]["mean"][0] == pytest.approx(r.mean())


def test_windows_by_hand(tmp_path):
    """Three episodes of 3, 1 and 2 frames; every stored value is its global row number, so the windows can be read
    off directly: observations repeat the episode's first frame before it, actions its last frame after it."""
    lengths = [3, 1, 2]
    w = EpisodeWriter(tmp_path / "w", robot="toy", task="toy", fps=10.0, obs_dim=1, act_dim=1)
    row = 0
    for n in lengths:
        for _ in range(n):
            w.add_step([row], [100 + row], 0.0)
            row += 1
        w.end_episode()
    ds = EpisodeDataset(w.close())
    obs, act = ds.windows(obs_steps=2, horizon=3)
    assert obs.shape == (6, 2, 1) and act.shape == (6, 3, 1)
    assert obs[..., 0].tolist() == [[0, 0], [0, 1], [1, 2], [3, 3], [4, 4], [4, 5]]
    assert (act[..., 0] - 100).tolist() == [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 3, 3], [4, 5, 5], [5, 5, 5]]
    # obs_steps = horizon = 1 is the plain frame
    o1, a1 = window_indices(lengths, 1, 1)
    assert o1[:, 0].tolist() == a1[:, 0].tolist() == list(range(6))


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _edit_npz(root: Path, episode: int, edit) -> None:
    path = root / f"data/chunk-000/episode_{episode:06d}.npz"
    with np.load(path) as z:
        cols = {k: z[k] for k in z.files}
    edit(cols)
    with open(path, "wb") as f:
        np.savez(f, **cols)


def _drop_action(cols):
    del cols["action"]


def _wide_action(cols):
    cols["action"] = np.zeros((len(cols["action"]), ACT_DIM + 1), np.float32)


def _nan_action(cols):
    cols["action"][3, 1] = np.nan


def _gap_frame_index(cols):
    cols["frame_index"][4:] += 1


def _float64_obs(cols):
    cols["observation.state"] = cols["observation.state"].astype(np.float64)


def _done_early(cols):
    cols["next.done"][2] = True


def _bad_authority(cols):
    cols["authority"][0] = 7


def _drop_stats(root):
    (root / "meta/stats.json").unlink()


def _lengthen_episode(root):
    lines = (root / "meta/episodes.jsonl").read_text().splitlines()
    meta = json.loads(lines[1])
    meta["length"] += 1
    lines[1] = json.dumps(meta)
    (root / "meta/episodes.jsonl").write_text("\n".join(lines) + "\n")


def _drop_feature(root):
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["next.success"]
    (root / "meta/info.json").write_text(json.dumps(info))


CORRUPTIONS = {
    "missing column": (lambda r: _edit_npz(r, 1, _drop_action), ["'action'", "missing", "episode 1"]),
    "wrong shape": (lambda r: _edit_npz(r, 0, _wide_action), ["'action'", "shape", "(5, 3)", "episode 0"]),
    "NaN in actions": (lambda r: _edit_npz(r, 1, _nan_action), ["'action'", "NaN", "episode 1", "frame 3", "[1]"]),
    "non-contiguous frame_index": (lambda r: _edit_npz(r, 1, _gap_frame_index),
                                   ["'frame_index'", "episode 1", "frame 4"]),
    "wrong dtype": (lambda r: _edit_npz(r, 2, _float64_obs), ["'observation.state'", "float64", "episode 2"]),
    "done before the end": (lambda r: _edit_npz(r, 0, _done_early), ["'next.done'", "frame 2"]),
    "unknown authority": (lambda r: _edit_npz(r, 2, _bad_authority), ["'authority'", "frame 0", "7"]),
    "missing stats": (_drop_stats, ["stats.json", "missing"]),
    "length disagrees": (_lengthen_episode, ["episode 1", "shape", "(7,"]),
    "feature not declared": (_drop_feature, ["info.json", "'next.success'"]),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_malformed_dataset_is_refused_naming_the_field_and_nothing_changes(toy, name):
    root, _ = toy
    EpisodeDataset(root)  # intact: loads
    corrupt, words = CORRUPTIONS[name]
    corrupt(root)
    before = _digest(root)
    with pytest.raises(DatasetError) as err:
        EpisodeDataset(root)
    for word in words:
        assert word in str(err.value), f"{word!r} not in: {err.value}"
    assert _digest(root) == before


def test_writer_refuses_wrong_shapes_and_an_existing_dataset(toy, tmp_path):
    root, _ = toy
    with pytest.raises(FileExistsError):
        EpisodeWriter(root, robot="toy", task="toy", fps=1, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    w = EpisodeWriter(tmp_path / "new", robot="toy", task="toy", fps=1, obs_dim=OBS_DIM, act_dim=ACT_DIM)
    with pytest.raises(ValueError, match=r"action has shape \(3,\)"):
        w.add_step(np.zeros(OBS_DIM), np.zeros(3), 0.0)
    with pytest.raises(ValueError, match="authority"):
        w.add_step(np.zeros(OBS_DIM), np.zeros(ACT_DIM), 0.0, authority="robot")


# ---- recorded demonstrations ---------------------------------------------------------------------------------------
def test_reach_baseline_demos_match_the_baseline_success_rate(tmp_path):
    from stack.demos import record_demos
    from stack.evaluate import evaluate_baseline

    episodes, seed = 6, 500
    root = record_demos("reach", "baseline", episodes=episodes, seed=seed, out_dir=tmp_path / "demos",
                        progress=False)
    ds = EpisodeDataset(root)
    ref = evaluate_baseline("reach", episodes=episodes, seed=seed)
    assert ds.num_episodes == episodes
    assert ds.success_rate() == pytest.approx(ref["success_rate"])
    assert ds.success_rate() > 0  # the baseline does reach: the comparison is not 0 == 0
    np.testing.assert_allclose([m["return"] for m in ds.episodes], ref["returns"], rtol=1e-9)
    f = ds.frames(["frame_index", "authority", "next.success"])
    for i, m in enumerate(ds.episodes):
        ep = ds.episode(i, ["frame_index", "next.success"])
        assert ep["frame_index"].tolist() == list(range(m["length"]))
        assert bool(ep["next.success"][-1]) == (m["outcome"] == "success")
        assert m["task"] == "reach" and m["robot"] == "so101" and m["seed"] == seed + i
    assert set(f["authority"].tolist()) == {AUTHORITY["baseline"]}
    assert ds.info["features"]["action"]["names"][0] == "shoulder_pan"
    assert ds.info["features"]["observation.state"]["names"][0] == "joint_pos.shoulder_pan"
    assert ds.fps == pytest.approx(20.0)


def test_demos_cli_prints_the_dataset_summary(tmp_path, capsys):
    from stack.demos import cmd_demos

    out = tmp_path / "cli"
    assert cmd_demos(["--task", "reach", "--expert", "baseline", "--episodes", "2", "--seed", "3", "--out", str(out),
                      "--quality", "expert", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["episodes"], summary["frames"]) == (2, 200)
    info = EpisodeDataset(out).info
    assert (info["expert"], info["quality"], info["seed"]) == ("baseline", "expert", 3)


def test_select_checkpoint_picks_the_return_closest_to_the_target(tmp_path):
    """Checkpoints at 3 steps with logged eval returns 300, 900 and 1500 (no evaluation needed): a "medium" target
    of 0.45 × 1500 = 675 picks the 900 one; a tie goes to the earlier checkpoint."""
    from stack.demos import run_checkpoints, select_checkpoint

    run = tmp_path / "run"
    for name, steps in (("step_1000", 1000), ("step_2000", 2000), ("latest", 3000)):
        (run / "checkpoints" / name / "policy").mkdir(parents=True)
        (run / "checkpoints" / name / "meta.json").write_text(json.dumps({"env_steps": steps}))
    (run / "metrics.csv").write_text("env_steps,train_return,eval_return\n1000,1,300\n1500,2,\n2000,3,900\n"
                                     "3000,4,1500\n")
    assert [s for s, _ in run_checkpoints(run)] == [1000, 2000, 3000]
    folder, ret = select_checkpoint(run, target_return=0.45 * 1500, evaluate_missing=False)
    assert (folder.name, ret) == ("step_2000", 900.0)
    folder, ret = select_checkpoint(run, target_return=2000, evaluate_missing=False)
    assert (folder.name, ret) == ("latest", 1500.0)
    folder, _ = select_checkpoint(run, target_return=600, evaluate_missing=False)  # a tie: the earlier checkpoint
    assert folder.name == "step_1000"


def test_noisy_demos_execute_the_noise_and_keep_the_experts_proposal(tmp_path):
    """With action noise, ``action`` is what executed (noisy, within bounds) and ``action.proposal`` the baseline's
    own action for the recorded observation (DART's label)."""
    from sim import make_task
    from stack.demos import record_demos

    root = record_demos("reach", "baseline", episodes=1, seed=4, out_dir=tmp_path / "noisy", noise_std=0.05,
                        progress=False)
    ds = EpisodeDataset(root)
    f = ds.frames(["observation.state", "action", "action.proposal"])
    env = make_task("reach")
    expected = np.stack([np.clip(env.baseline(o), env.action_space.low, env.action_space.high)
                         for o in f["observation.state"].astype(np.float64)])
    # the stored observation is float32: the baseline re-run on it agrees to float32 precision
    np.testing.assert_allclose(f["action.proposal"], expected, atol=1e-4)
    gap = np.abs(f["action"] - f["action.proposal"])
    assert gap.mean() > 0.01
    assert np.all(f["action"] >= env.action_space.low - 1e-6) and np.all(f["action"] <= env.action_space.high + 1e-6)
    assert ds.info["noise_std"] == 0.05
