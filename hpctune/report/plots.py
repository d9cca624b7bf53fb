"""The report's figures, drawn with matplotlib's Agg canvas (no display, no global pyplot state).

Each function takes the run's trials (report.TrialRecord), or for importance_chart the estimate
report.importance computed from them, and returns PNG bytes.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from hpctune.report.importance import SPREAD, SUBSET, Importance

MARKERS = {  # state: (marker, colour, label)
    "completed": ("o", "#2ca02c", "completed"),
    "stopped": ("X", "#d62728", "stopped by ASHA"),
    "running": (">", "#1f77b4", "running"),
    "error": ("s", "#000000", "failed"),
    "interrupted": ("|", "#7f7f7f", "interrupted"),
}
_OTHER = ("d", "#7f7f7f", "other")
DIRECTION_COLOURS = {1: "#2ca02c", -1: "#d62728", 0: "#9e9e9e"}


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


def importance_chart(result: Importance) -> bytes:
    """The importance estimate per hyperparameter: its mean over the resamples, the spread as an error bar,
    and the level the same estimate reaches with the metric shuffled (chance); or why there is none."""
    if not result.keys:
        fig = Figure(figsize=(7, 3), dpi=100)
        _note(fig, f"no importance estimate: {result.note}")
        return _png(fig)
    rows = list(reversed(result.keys))  # the most important at the top
    fig = Figure(figsize=(7.5, 0.5 * len(rows) + 1.9), dpi=100)
    ax = fig.add_subplot()
    ys = range(len(rows))
    colours = [DIRECTION_COLOURS[r.direction] for r in rows]
    errors = [[max(0.0, r.mean - r.low) for r in rows], [max(0.0, r.high - r.mean) for r in rows]]
    ax.barh(ys, [r.mean for r in rows], xerr=errors, color=colours, height=0.6, capsize=4,
            error_kw={"ecolor": "#333333", "lw": 1.2})
    ax.scatter([r.chance for r in rows], ys, marker="|", s=500, color="#000000", linewidths=2, zorder=3)
    ax.set_yticks(ys, [r.key for r in rows])
    ax.set_xlim(0, max(max(r.high, r.chance) for r in rows) * 1.15 or 1)
    legend = [Patch(color=DIRECTION_COLOURS[1], label="higher values did better"),
              Patch(color=DIRECTION_COLOURS[-1], label="lower values did better"),
              Patch(color=DIRECTION_COLOURS[0], label="no clear direction"),
              Line2D([], [], ls="", marker="|", ms=14, mew=2, color="#000000", label="chance (metric shuffled)")]
    ax.legend(handles=legend, loc="lower right", fontsize=8, framealpha=0.85)
    ax.set_xlabel(f"{result.estimator} importance: mean, {SPREAD[0]}th-{SPREAD[1]}th percentile over "
                  f"{result.resamples} subsets of {SUBSET:.0%} of the trials")
    ax.set_title(f"parameter importance estimate ({result.usable} trials)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)
