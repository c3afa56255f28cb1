"""Run directories: ``runs/<name>/`` holds the resolved config, metrics, checkpoints, plots and videos.

Layout::

    runs/<name>/config.yaml          resolved config (what produced this run, readable without running anything)
    runs/<name>/metrics.csv          one row per logged iteration; the first column is the run's step axis
                                     (env_steps, or grad_steps for offline runs); columns grow as metrics appear
    runs/<name>/tb/                  TensorBoard events (when tensorboard is installed)
    runs/<name>/checkpoints/         policy checkpoints (latest/ and step_<N>/)
    runs/<name>/learning_curve.png   return (and success rate, BC loss where logged) against the step axis
    runs/<name>/rollout.mp4          an evaluation episode, when video is on
"""

from __future__ import annotations

import csv
import dataclasses
import math
import time
from pathlib import Path

import yaml


def default_run_name(*parts: str) -> str:
    return "-".join([p for p in parts if p] + [time.strftime("%Y%m%d-%H%M%S")])


class RunDir:
    def __init__(self, path: str | Path, config=None, tensorboard: bool = True, step_key: str = "env_steps"):
        self.path = Path(path)
        self.step_key = step_key
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "checkpoints").mkdir(exist_ok=True)
        if config is not None:
            self.save_config(config)
        self.metrics_path = self.path / "metrics.csv"
        self._columns: list[str] = []
        self._rows: list[dict] = []
        if self.metrics_path.exists():  # resuming: keep what was logged before
            with open(self.metrics_path) as f:
                reader = csv.DictReader(f)
                self._columns = list(reader.fieldnames or [])
                self._rows = [{k: _num(v) for k, v in r.items() if v != ""} for r in reader]
        self._tb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.path / "tb"))
            except Exception:  # tensorboard missing: the CSV is the record
                self._tb = None

    # ---- config ---------------------------------------------------------------------------------------------------
    def save_config(self, config) -> None:
        data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        with open(self.path / "config.yaml", "w") as f:
            yaml.safe_dump(_plain(data), f, sort_keys=False)

    def load_config(self) -> dict:
        with open(self.path / "config.yaml") as f:
            return yaml.safe_load(f)

    # ---- metrics --------------------------------------------------------------------------------------------------
    def log(self, step: int, **metrics: float) -> None:
        row = {self.step_key: int(step), **{k: float(v) for k, v in metrics.items() if v is not None}}
        self._rows.append(row)
        new = [k for k in row if k not in self._columns]
        if new:
            self._columns += new
            self._rewrite_csv()
        else:
            with open(self.metrics_path, "a", newline="") as f:
                csv.DictWriter(f, self._columns).writerow(row)
        if self._tb is not None:
            for k, v in row.items():
                if k != self.step_key and math.isfinite(v):
                    self._tb.add_scalar(k, v, step)

    def _rewrite_csv(self) -> None:
        with open(self.metrics_path, "w", newline="") as f:
            w = csv.DictWriter(f, self._columns)
            w.writeheader()
            w.writerows(self._rows)

    @property
    def rows(self) -> list[dict]:
        return list(self._rows)

    # ---- plots and videos -----------------------------------------------------------------------------------------
    def plot_learning_curve(self, title: str = "") -> Path:
        """learning_curve.png: return (evaluation and training), and where logged the success rate and the BC loss
        (log scale), against the run's step axis."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        panels = [("return", ("eval_return", "train_return"))]
        panels += [(label, (key,)) for label, key in (("eval success rate", "eval_success"), ("bc loss", "bc_loss"))
                   if any(key in r for r in self._rows)]
        fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), squeeze=False)
        for ax, (label, keys) in zip(axes[0], panels):
            for key in keys:
                pts = [(r[self.step_key], r[key]) for r in self._rows if key in r and math.isfinite(r[key])]
                if pts:
                    xs, ys = zip(*pts)
                    ax.plot(xs, ys, marker="o" if key.startswith("eval") else None, ms=3, label=key)
                    if key == "bc_loss" and min(ys) > 0:
                        ax.set_yscale("log")
            if key == "eval_success":
                ax.set_ylim(-0.05, 1.05)
            ax.set_xlabel(self.step_key.replace("_", " "))
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            if len(keys) > 1 and ax.get_legend_handles_labels()[0]:
                ax.legend()
        fig.suptitle(title or self.path.name)
        fig.tight_layout()
        out = self.path / "learning_curve.png"
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out

    def save_video(self, frames, fps: int, name: str = "rollout.mp4") -> Path:
        import imageio.v2 as imageio

        out = self.path / name
        imageio.mimwrite(out, list(frames), fps=fps, macro_block_size=1)
        return out

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def _plain(x):
    """Make a config YAML-safe: tuples become lists, paths strings."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x
