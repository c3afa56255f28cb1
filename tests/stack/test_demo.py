"""`r2s demo --quick` runs the whole loop end to end, so the demo cannot rot."""

import json
import subprocess
import sys


def test_demo_quick_runs_end_to_end(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "stack", "demo", "--quick", "--runs-dir", str(tmp_path), "--name", "demo"],
        capture_output=True, text=True, timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    run = tmp_path / "demo"
    for f in ("config.yaml", "metrics.csv", "learning_curve.png", "demo_summary.json"):
        assert (run / f).exists(), f
    assert 0.0 <= summary["policy_success_rate"] <= 1.0
    # The baseline controller is the reference every later stage improves on: it must actually reach.
    assert summary["baseline_success_rate"] >= 0.6
