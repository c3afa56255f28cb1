"""Benchmarks (``r2s bench <name>``): each prints one JSON object on its last line.

``over_seeds`` runs a learning benchmark once per seed and reports every numeric figure as the mean across seeds with
its standard error (``<figure>_se``), the per-seed results beside them: every learning claim of r2s is a mean over
≥ 3 seeds, and the full mode of each learning benchmark runs seeds 1, 2, 3.
"""

from __future__ import annotations

from collections.abc import Callable

FULL_SEEDS = (1, 2, 3)


def over_seeds(run: Callable[..., dict], seeds, **kwargs) -> dict:
    """``run(seed=s, **kwargs)`` for each seed; one seed: its result (with ``seeds``); several: means ± SE."""
    from stack.seeds import mean_se

    seeds = [int(s) for s in seeds]
    results = [run(seed=s, **kwargs) for s in seeds]
    if len(results) == 1:
        return {**results[0], "seeds": seeds}
    out: dict = {"seeds": seeds, "n_seeds": len(seeds)}
    for key, value in results[0].items():
        values = [r.get(key) for r in results]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            mean, se = mean_se(values)
            out[key], out[f"{key}_se"] = mean, se
        elif all(v == value for v in values):
            out[key] = value
    out["per_seed"] = results
    return out


__all__ = ["FULL_SEEDS", "over_seeds"]
