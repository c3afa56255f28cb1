"""``r2s bench arm``: every method builds a valid run on the delta-target arm tasks, and a tiny run of the benchmark
returns the acceptance interface (reach_success, push_success, method, per_method)."""

import pytest

from stack.bench import arm


@pytest.mark.parametrize("method", [m for m in arm.METHODS if m != "baseline"])
def test_every_learning_method_trains_on_delta_targets(method):
    cfg = arm.train_config(method, "reach", 300_000, 1, "runs", "cpu", init_from="bc-run", dataset="demos")
    assert cfg.env.task_kwargs == {"action_mode": "delta"}
    assert cfg.algo == {"ppo": "ppo", "fpo++": "fpo", "bc": "bc", "dppo": "dppo", "bc_gauss": "bc",
                        "ppo_bc": "ppo", "bc_flow": "bc", "fpo++_bc": "fpo"}[method]
    if method in ("fpo++", "fpo++_bc"):
        assert cfg.fpo.variant == "fpo++"
    if method in ("dppo", "ppo_bc", "fpo++_bc"):
        assert cfg.init_from == "bc-run"
    if method == "fpo++_bc":  # a warm critic before the actor moves, at a small actor rate
        assert cfg.fpo.n_critic_warmup_itr > 0 and cfg.fpo.lr < cfg.fpo.critic_lr
    if method in ("bc", "bc_gauss", "bc_flow"):
        assert cfg.dataset == "demos" and cfg.bc.action_key == "action.proposal"


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="method"):
        arm.train_config("trpo", "reach", 1000, 1, "runs", "cpu")


def test_a_tiny_run_reports_the_acceptance_interface(tmp_path, monkeypatch):
    tiny = arm.Budget(rl_steps={"reach": 2048, "push": 2048}, demo_episodes=2, bc_grad_steps=4)
    monkeypatch.setattr(arm, "QUICK", tiny)
    monkeypatch.setattr(arm, "EVAL_EPISODES", 2)
    out = arm.run_seed(1, quick=True, runs_dir=str(tmp_path), methods=("baseline", "ppo"))
    assert out["method"] == "ppo"
    assert set(out["per_method"]) == {"baseline", "ppo"}
    assert out["per_method"]["baseline"]["reach"] == 1.0  # the IK baseline solves reach
    assert 0.0 <= out["reach_success"] <= 1.0 and 0.0 <= out["push_success"] <= 1.0
    assert "push" not in out["per_method"]["baseline"]  # quick: only PUSH_METHOD (absent here) goes on to push


def test_quick_takes_the_push_method_and_its_bc_to_push(tmp_path, monkeypatch):
    tiny = arm.Budget(rl_steps={"reach": 1024, "push": 1024}, demo_episodes=1, bc_grad_steps=2)
    monkeypatch.setattr(arm, "QUICK", tiny)
    monkeypatch.setattr(arm, "EVAL_EPISODES", 1)
    out = arm.run_seed(1, quick=True, runs_dir=str(tmp_path), methods=("ppo", "bc_gauss", "ppo_bc"))
    assert out["method"] == "ppo_bc"
    assert "push" in out["per_method"]["ppo_bc"] and "push" in out["per_method"]["bc_gauss"]
    assert "push" not in out["per_method"]["ppo"]
    assert out["push_success"] == out["per_method"]["ppo_bc"]["push"]


def test_fpo_bc_fine_tunes_the_flow_bc_it_caches(tmp_path, monkeypatch):
    tiny = arm.Budget(rl_steps={"reach": 1024, "push": 1024}, demo_episodes=1, bc_grad_steps=2)
    monkeypatch.setattr(arm, "EVAL_EPISODES", 1)
    cache: dict = {}
    for method in ("bc_flow", "fpo++_bc"):
        rate, _ = arm.run_method(method, "reach", 1, str(tmp_path), "cpu", tiny, cache)
        assert 0.0 <= rate <= 1.0
    assert list(cache) == [("bc_flow", "reach", 1)]  # the fine-tune reused the BC run, not a second one


def test_quick_leaves_out_the_flow_methods(tmp_path, monkeypatch):
    ran: list[tuple[str, str]] = []
    monkeypatch.setattr(arm, "run_method", lambda m, t, *a, **k: (ran.append((m, t)), (0.5, 0.0))[1])
    arm.run_seed(1, quick=True, runs_dir=str(tmp_path))
    assert {m for m, _ in ran} == set(arm.METHODS) - set(arm.QUICK_LEAVES_OUT)
    assert [m for m, t in ran if t == "push"] == ["bc_gauss", "ppo_bc"]
