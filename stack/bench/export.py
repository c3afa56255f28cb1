"""``r2s bench export``: on-robot inference latency, onnxruntime vs torch eager, per policy variant, batch 1.

Both are timed in the same run, one thread each. Beside each row: the model's FLOPs and the compute floor they imply at
a matmul rate measured in this run (so the gap to the limit is visible), the parity error of the export, and the peak
RSS of a fresh process that loads the policy through ``stack.runtime`` (no torch in it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch

from policies import DiffusionPolicy, FlowPolicy, GaussianPolicy
from stack.export import ExportSpec, export_policy, torch_reference

OBS_DIM, ACT_DIM, HORIZON = 17, 6, 4  # Walker-sized observation, a 6-joint arm's action, DPPO's chunk of 4

# (label, constructor, export options, torch options)
VARIANTS = [
    ("gaussian", lambda: GaussianPolicy(OBS_DIM, ACT_DIM), {}, 0),
    ("diffusion-ddim", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON),
     {"sampler": "ddim", "ddim_steps": 5, "eta": 0.0}, 5),
    ("diffusion-ddim", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON),
     {"sampler": "ddim", "ddim_steps": 10, "eta": 0.0}, 10),
    ("diffusion-ddpm", lambda: DiffusionPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON), {"sampler": "ddpm"}, 20),
    ("flow", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON), {"steps": 1}, 1),
    ("flow", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON), {"steps": 5}, 5),
    ("flow", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON), {"steps": 10}, 10),
    # The latency target: a 10-step flow whose velocity net is three linear layers of width 256.
    ("flow", lambda: FlowPolicy(OBS_DIM, ACT_DIM, horizon=HORIZON, hidden=(256, 256)), {"steps": 10}, 10),
]

META = {"robot": "bench", "joint_names": json.dumps([f"j{i}" for i in range(ACT_DIM)]), "control_mode": "position",
        "control_rate_hz": "50.0", "obs_layout": json.dumps([{"name": "state", "size": OBS_DIM, "source": "topic:/s"}]),
        "action_names": json.dumps([f"j{i}" for i in range(ACT_DIM)]), "run_id": "bench"}

RSS_PROBE = """
import json, sys
import numpy as np
from stack.runtime import OnnxPolicy
p = OnnxPolicy.load(sys.argv[1], None)
for _ in range(100):
    p.step(np.zeros(p.meta.obs_dim))
assert "torch" not in sys.modules
# VmHWM, not ru_maxrss: the latter keeps the forking parent's peak across exec
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0]
print(json.dumps({"rss_mb": int(hwm.split()[1]) / 1024}))
"""


def _percentiles(fn, iters: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    return float(np.percentile(times, 50) * 1e6), float(np.percentile(times, 99) * 1e6)


def graph_flops(path: Path) -> int:
    """2·in·out per Gemm at batch 1 (elementwise nodes are negligible beside them)."""
    model = onnx.load(path)
    shapes = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return sum(2 * int(np.prod(shapes[n.input[1]])) for n in model.graph.node if n.op_type == "Gemm")


def matmul_rate_flops(size: int = 256, seconds: float = 0.3) -> float:
    """Single-thread float32 matmul rate (FLOP/s) of this machine now: the compute roof for the floor estimate."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    for _ in range(5):
        a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return 2 * size**3 * n / (time.perf_counter() - t0)


def runtime_rss_mb(path: Path) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", RSS_PROBE, str(path)], capture_output=True, text=True, env=env,
                         timeout=120, check=True)
    return round(json.loads(out.stdout.strip().splitlines()[-1])["rss_mb"], 1)


def bench_variant(policy, opts: dict, spec: ExportSpec, path: Path, iters: int, warmup: int, torch_iters: int,
                  seed: int) -> dict:
    """Export one policy and time it through the runtime and in torch eager, same inputs."""
    from stack.runtime import OnnxPolicy

    result = export_policy(policy, spec, path, META, **opts)
    runtime = OnnxPolicy.load(path, None, warmup=0)
    obs = np.random.default_rng(seed).standard_normal((1, 1, OBS_DIM)).astype(np.float32)
    noise = runtime.noise_for(1) if result["noise_shape"] else None
    ort_p50, ort_p99 = _percentiles(lambda: runtime.infer(obs, noise), iters, warmup)
    t_obs = torch.from_numpy(obs)
    t_noise = None if noise is None else torch.from_numpy(noise)
    ref_opts = {"steps": opts.get("steps"), "sampler": opts.get("sampler"), "ddim_steps": opts.get("ddim_steps"),
                "eta": opts.get("eta"), "stochastic": len(result["noise_shape"]) == 3}
    torch_p50, _ = _percentiles(lambda: torch_reference(policy, spec, t_obs, t_noise, ref_opts), torch_iters, 10)
    hidden = policy.config["hidden"]
    return {
        "hidden": int(hidden[0]) if hidden else 0, "layers": len(hidden) + 1,
        "ort_p50_us": round(ort_p50, 1), "ort_p99_us": round(ort_p99, 1), "torch_p50_us": round(torch_p50, 1),
        "ratio": round(ort_p50 / torch_p50, 3), "parity_max_abs_err": result["parity_max_abs_err"],
        "flops": graph_flops(path), "nodes": result["nodes"], "runtime_rss_mb": runtime_rss_mb(path),
    }


def run(quick: bool = False) -> list[dict]:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    iters, warmup = (300, 50) if quick else (3000, 300)
    torch_iters = 50 if quick else 300
    rate = matmul_rate_flops()
    spec = ExportSpec(np.zeros(OBS_DIM), np.ones(OBS_DIM), 10.0, -np.ones(ACT_DIM), np.ones(ACT_DIM), "minmax")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (label, make, opts, steps) in enumerate(VARIANTS):
            row = bench_variant(make().eval(), opts, spec, Path(tmp) / f"p{i}.onnx", iters, warmup, torch_iters, i)
            rows.append({"policy": label, "steps": steps, **row,
                         "compute_floor_us": round(row["flops"] / rate * 1e6, 2)})
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    for r in rows:
        r["matmul_gflops"] = round(rate / 1e9, 1)
        r["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return rows
