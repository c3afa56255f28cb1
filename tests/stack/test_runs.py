"""Run directories: resolved config on disk, metrics CSV that grows columns and survives a resume, plots."""

import csv

import yaml

from stack.config import TrainConfig
from stack.runs import RunDir


def test_run_dir_writes_config_metrics_and_curve(tmp_path):
    cfg = TrainConfig(total_env_steps=1000)
    run = RunDir(tmp_path / "r", cfg, tensorboard=False)
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["total_env_steps"] == 1000
    run.log(100, train_return=1.0)
    run.log(200, train_return=2.0, eval_return=3.0, eval_success=0.5)  # a new column appears
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert [r["env_steps"] for r in rows] == ["100", "200"]
    assert rows[0]["eval_return"] == "" and rows[1]["eval_return"] == "3.0"
    png = run.plot_learning_curve()
    assert png.exists() and png.stat().st_size > 1000


def test_resumed_run_keeps_earlier_metrics(tmp_path):
    RunDir(tmp_path / "r", tensorboard=False).log(100, train_return=1.0)
    resumed = RunDir(tmp_path / "r", tensorboard=False)
    resumed.log(200, train_return=2.0)
    assert [r["env_steps"] for r in resumed.rows] == [100.0, 200]
    rows = list(csv.DictReader(open(tmp_path / "r" / "metrics.csv")))
    assert len(rows) == 2
