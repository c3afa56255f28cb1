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
