"""The report's figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

Each function takes the run's trials (report.TrialRecord) and returns PNG bytes.
Parameter importance is the absolute Spearman rank correlation between a hyperparameter and the
trials' last reported metric: simple, assumption-light, and honest about being only a hint.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

MARKERS = {  # state: (marker, colour, label)
    "completed": ("o", "#2ca02c", "completed"),
    "stopped": ("X", "#d62728", "stopped by ASHA"),
    "running": (">", "#1f77b4", "running"),
    "error": ("s", "#000000", "failed"),
    "interrupted": ("|", "#7f7f7f", "interrupted"),
}
_OTHER = ("d", "#7f7f7f", "other")


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=fig.dpi, bbox_inches="tight")
    return buffer.getvalue()


def _note(fig: Figure, text: str) -> None:
    ax = fig.add_subplot()
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, fontsize=11, color="#555555")


def _state_legend(ax, states: set[str]) -> None:
    handles = [Line2D([], [], ls="", marker=MARKERS[s][0], color=MARKERS[s][1], label=MARKERS[s][2], ms=8)
               for s in MARKERS if s in states]
    if handles:
        ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.8)


def metric_vs_epoch(trials: list, metric: str, epochs: int, milestones: list[int]) -> bytes:
    """Every trial's metric per epoch; the marker at a line's end says how it ended."""
    fig = Figure(figsize=(9, 5), dpi=100)
    histories = [t for t in trials if t.history]
    if not histories:
        _note(fig, "no trial has finished an epoch yet")
        return _png(fig)
    ax = fig.add_subplot()
    ranked = sorted(histories, key=lambda t: (t.metric if t.metric is not None else -math.inf))
    best = ranked[-1].trial_id
    colours = [_colour(i, len(ranked)) for i in range(len(ranked))]
    for trial, colour in zip(ranked, colours, strict=True):
        xs = [e for e, _ in trial.history]
        ys = [v for _, v in trial.history]
        is_best = trial.trial_id == best
        ax.plot(xs, ys, "-", color=colour, lw=2.6 if is_best else 1.2, alpha=1.0 if is_best else 0.75,
                label=f"{trial.trial_id} (best)" if is_best else None, zorder=3 if is_best else 2)
        marker, edge, _ = MARKERS.get(trial.state, _OTHER)
        ax.plot(xs[-1:], ys[-1:], ls="", marker=marker, ms=9, color=edge, zorder=4)
    for milestone in milestones:
        ax.axvline(milestone, ls=":", color="#999999", lw=1, zorder=1)
        ax.annotate(f"rung {milestone}", (milestone, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", fontsize=8, color="#666666")
    ax.set_xlim(0.5, epochs + 0.5)
    ax.set_xticks(range(1, epochs + 1) if epochs <= 30 else np.linspace(1, epochs, 11).round().astype(int))
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per epoch, {len(histories)} trials (dotted: ASHA rungs)")
    ax.grid(alpha=0.3)
    _state_legend(ax, {t.state for t in histories})
    return _png(fig)


def _colour(index: int, count: int) -> Any:
    from matplotlib import colormaps

    return colormaps["viridis"](0.1 + 0.8 * (index / max(1, count - 1)))


def survivors(trials: list, epochs: int, milestones: list[int], reduction_factor: int) -> bytes:
    """How many trials reached each rung (and the last epoch), against ASHA's 1/rf per rung."""
    fig = Figure(figsize=(7, 4), dpi=100)
    trials = [t for t in trials if t.state != "pending" or t.history]
    if not trials:
        _note(fig, "no trial has started yet")
        return _png(fig)
    ax = fig.add_subplot()
    stops = [*milestones, epochs]
    labels = ["started"] + [f"epoch {m}" + (" (last)" if m == epochs else "") for m in stops]
    counts = [len(trials)] + [sum(t.epochs >= m for t in trials) for m in stops]
    expected = [len(trials) / reduction_factor ** k for k in range(len(stops) + 1)]
    bars = ax.bar(range(len(counts)), counts, color="#4c72b0", width=0.6, label="trials that got there")
    ax.plot(range(len(counts)), expected, "k--", marker="o", ms=4, lw=1, label=f"1/{reduction_factor} per rung")
    for bar, count in zip(bars, counts, strict=True):
        ax.annotate(str(count), (bar.get_x() + bar.get_width() / 2, count), ha="center", va="bottom", fontsize=9,
                    xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(range(len(counts)), labels)
    ax.set_ylabel("trials")
    ax.set_ylim(0, max(counts) * 1.18 + 0.5)
    ax.set_title("survivors per rung")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def hyperparameters(trials: list, keys: list[str], space: dict[str, Any], metric: str) -> bytes:
    """One panel per searched hyperparameter: its value against the trial's last metric."""
    scored = [t for t in trials if t.metric is not None]
    if not keys or not scored:
        fig = Figure(figsize=(7, 3), dpi=100)
        _note(fig, "no searched hyperparameters" if not keys else "no trial has a metric yet")
        return _png(fig)
    columns = min(3, len(keys))
    rows = math.ceil(len(keys) / columns)
    fig = Figure(figsize=(4.2 * columns, 3.2 * rows), dpi=90)
    for index, key in enumerate(keys):
        ax = fig.add_subplot(rows, columns, index + 1)
        values = [t.config.get(key) for t in scored]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            xs = [float(v) for v in values]
        else:
            names = sorted({repr(v) for v in values})
            xs = [names.index(repr(v)) for v in values]
            ax.set_xticks(range(len(names)), [n.strip("'") for n in names], rotation=30, fontsize=8)
        for state in {t.state for t in scored}:
            marker, colour, label = MARKERS.get(state, _OTHER)
            points = [(x, t.metric) for x, t in zip(xs, scored, strict=True) if t.state == state]
            ax.scatter([p[0] for p in points], [p[1] for p in points], marker=marker, c=colour, s=40,
                       label=label, alpha=0.85)
        dist = space.get(key)
        if numeric and isinstance(dist, dict) and "loguniform" in dist and min(xs) > 0:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        if index % columns == 0:
            ax.set_ylabel(metric.split("/", 1)[-1])
        ax.grid(alpha=0.3)
        if index == 0:
            ax.legend(fontsize=7)
    fig.suptitle(f"hyperparameters against each trial's last {metric}", fontsize=11)
    fig.tight_layout()
    return _png(fig)


def rankdata(values: list[float]) -> np.ndarray:
    """Ranks 1..n, ties sharing their mean rank (as scipy.stats.rankdata)."""
    array = np.asarray(values, dtype=float)
    order = np.argsort(array, kind="mergesort")
    ranks = np.empty(len(array))
    sorted_values = array[order]
    start = 0
    while start < len(array):
        end = start
        while end + 1 < len(array) and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(xs: list[float], ys: list[float]) -> float | None:
    """Spearman's rank correlation, or None when either side is constant or too short."""
    if len(xs) < 3:
        return None
    rx, ry = rankdata(xs), rankdata(ys)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def importance(trials: list, keys: list[str]) -> dict[str, float | None]:
    """Spearman correlation of each hyperparameter with the last metric (sign kept, None if undefined)."""
    scored = [t for t in trials if t.metric is not None]
    result: dict[str, float | None] = {}
    for key in keys:
        pairs = [(t.config.get(key), t.metric) for t in scored if key in t.config]
        if pairs and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x, _ in pairs):
            xs = [float(x) for x, _ in pairs]
        else:  # a categorical: rank its values by their mean metric
            means: dict[str, list[float]] = {}
            for x, y in pairs:
                means.setdefault(repr(x), []).append(y)
            order = sorted(means, key=lambda k: float(np.mean(means[k])))
            xs = [float(order.index(repr(x))) for x, _ in pairs]
        result[key] = spearman(xs, [y for _, y in pairs])
    return result


def importance_chart(scores: dict[str, float | None], count: int) -> bytes:
    known = {k: v for k, v in scores.items() if v is not None}
    if not known:
        fig = Figure(figsize=(7, 3), dpi=100)
        why = ("fewer than 3 trials with a metric" if count < 3
               else "the metric (or every value) is the same in all trials")
        _note(fig, f"no importance estimate: {why}")
        return _png(fig)
    keys = sorted(known, key=lambda k: abs(known[k]))
    fig = Figure(figsize=(7, 0.45 * len(keys) + 1.6), dpi=100)
    ax = fig.add_subplot()
    colours = ["#2ca02c" if known[k] > 0 else "#d62728" for k in keys]
    ax.barh(range(len(keys)), [abs(known[k]) for k in keys], color=colours, height=0.6)
    ax.set_yticks(range(len(keys)), keys)
    for y, key in enumerate(keys):
        ax.annotate(f"{known[key]:+.2f}", (abs(known[key]), y), va="center", fontsize=8, xytext=(3, 0),
                    textcoords="offset points")
    ax.set_xlim(0, 1.12)
    ax.set_xlabel("|Spearman rank correlation| with the last metric (green: higher is better, red: lower)")
    ax.set_title(f"parameter importance estimate ({count} trials)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
