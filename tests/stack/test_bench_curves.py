"""bench curves: variants laid over a preset, and their paired differences taken seed by seed."""

from __future__ import annotations

import pytest

from stack.bench import curves


def test_overrides_are_merged_into_the_preset_section_by_section():
    cfg = curves.preset_config("reach_ppo_delta", 4096, 3, "/tmp/r", "x", {"ppo": {"auto_entropy": True,
                                                                                  "ent_coef": 0.02}})
    assert cfg.ppo.auto_entropy and cfg.ppo.ent_coef == 0.02
    assert cfg.ppo.gamma == 0.95 and cfg.ppo.log_std_init == -1.0  # the preset's other fields kept
    assert cfg.env.task_kwargs == {"action_mode": "delta"} and cfg.seed == 3 and cfg.total_env_steps == 4096
    assert cfg.eval_every == 4096 // curves.CURVE_EVALS


def test_differences_are_paired_by_seed(monkeypatch):
    final = {("a", 1): 1.0, ("a", 2): 5.0, ("b", 1): 2.0, ("b", 2): 7.0}  # b − a: +1, +2 → 1.5 ± 0.5

    def fake(cfg):
        variant = "b" if cfg.ppo.auto_entropy else "a"
        return {"eval_return": [0.0, final[(variant, cfg.seed)]], "env_steps": [1, 2], "run_dir": ""}

    monkeypatch.setattr(curves, "run_curve", fake)
    out = curves.compare_variants("reach_ppo_delta", "reach", 4096, [1, 2],
                                  {"a": {}, "b": {"ppo": {"auto_entropy": True, "ent_coef": 0.01}}}, "t", "/tmp/r")
    assert out["eval_return_b_minus_a"] == pytest.approx(1.5)
    assert out["eval_return_b_minus_a_se"] == pytest.approx(0.5)
    assert out["a"]["final_eval_return"] == pytest.approx(3.0) and out["b"]["final_eval_return"] == pytest.approx(4.5)


def test_bench_entropy_and_wpo_run_their_variants_on_the_tasks_asked(monkeypatch):
    from stack.bench import entropy, wpo

    seen = []

    def fake(cfg):
        seen.append((cfg.algo, cfg.env.task, cfg.seed, cfg.total_env_steps, cfg.ppo.auto_entropy,
                     cfg.sac.actor_update))
        return {"eval_return": [float(cfg.seed)], "env_steps": [cfg.total_env_steps], "run_dir": ""}

    monkeypatch.setattr(curves, "run_curve", fake)
    out = entropy.run(seeds=[1, 2], runs_dir="/tmp/r", steps={"reach": 2048})
    assert out["seeds"] == [1, 2] and out["ent_start"] == entropy.ENT_START and not out["quick"]
    assert [s[2:5] for s in seen] == [(1, 2048, False), (2, 2048, False), (1, 2048, True), (2, 2048, True)]
    assert out["per_task"]["reach"]["eval_return_ppo_soft_minus_ppo"] == 0.0
    seen.clear()
    out = wpo.run(quick=True, seeds=[3], runs_dir="/tmp/r")
    assert list(out["per_task"]) == ["reach"] and out["quick"]
    assert [(s[0], s[3], s[5]) for s in seen] == [("sac", wpo.QUICK_STEPS["reach"], "sac"),
                                                  ("sac", wpo.QUICK_STEPS["reach"], "wpo")]


def test_r2s_bench_entropy_task_runs_that_task_alone(monkeypatch, capsys):
    from stack.cli import main

    seen = []
    monkeypatch.setattr(curves, "run_curve", lambda cfg: seen.append((cfg.env.task, cfg.total_env_steps)) or
                        {"eval_return": [0.0], "env_steps": [1], "run_dir": ""})
    assert main(["bench", "entropy", "--task", "hopper", "--steps", "1024", "--seeds", "1"]) == 0
    assert seen == [("hopper", 1024)] * 2
    capsys.readouterr()
    assert main(["bench", "wpo", "--task", "push"]) == 2
    assert "expected one of ['hopper', 'reach']" in capsys.readouterr().err
