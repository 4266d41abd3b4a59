"""The report's figures as inline SVG (matplotlib, text kept as text, no metadata, no external reference)."""

from __future__ import annotations

import io
import re
from typing import Any

_COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c",
           "#ccb974", "#64b5cd"]  # fmt: skip


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "svg.hashsalt": "selfinstruct"})
    return plt


def _svg(fig) -> str:
    """The figure as an <svg> element to put inline: no XML prolog, DOCTYPE or metadata block."""
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    fig.clf()
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    return re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)


def histogram(hist: dict[str, Any], title: str, xlabel: str, color: str = _COLORS[0]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.6, 2.8))
    edges, counts = hist["edges"], hist["counts"]
    if counts:
        widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
        ax.bar(edges[:-1], counts, width=widths, align="edge", color=color, edgecolor="white", linewidth=0.4)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.spines[["top", "right"]].set_visible(False)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def yield_curve(points: list[list[float]], window: int) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    if points:
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2.5, color=_COLORS[2])
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("candidates decided")
    ax.set_ylabel(f"accepted ÷ candidates\n(per {window})")
    ax.set_title("Novelty yield over the run")
    ax.grid(alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def sunburst(verbs: list[list[Any]], top: list[list[Any]]) -> str:
    """The paper's Fig. 3: root verbs in the inner ring, their top direct-object nouns outside."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 8))
    by_verb: dict[str, list[tuple[str, int]]] = {}
    for verb, noun, count in top:
        by_verb.setdefault(verb, []).append((noun, count))
    names = [v for v, _ in verbs if v in by_verb]
    inner = [sum(c for _, c in by_verb[v]) for v in names]
    outer_labels = [noun for v in names for noun, _ in by_verb[v]]
    outer = [count for v in names for _, count in by_verb[v]]
    colors = [_COLORS[i % len(_COLORS)] for i in range(len(names))]
    outer_colors = [colors[i] for i, v in enumerate(names) for _ in by_verb[v]]
    total = sum(outer) or 1
    edge = {"edgecolor": "white", "linewidth": 0.6}
    wedges, _ = ax.pie(inner, radius=0.62, colors=colors, startangle=90, counterclock=False,
                       wedgeprops={**edge, "width": 0.42})  # fmt: skip
    _label(ax, wedges, names, [c / total for c in inner], 0.41, 0.02, 8, "white")
    wedges, _ = ax.pie(outer, radius=1.0, colors=outer_colors, startangle=90, counterclock=False,
                       wedgeprops={**edge, "width": 0.38, "alpha": 0.75})  # fmt: skip
    _label(ax, wedges, outer_labels, [c / total for c in outer], 0.81, 0.008, 6.5, "#222")
    ax.set(aspect="equal")
    svg = _svg(fig)
    plt.close(fig)
    return svg


def _label(ax, wedges, labels, shares, radius, least, size, color) -> None:
    """Each wedge's label along its radius, for wedges of at least `least` of the circle."""
    import math

    for wedge, label, share in zip(wedges, labels, shares, strict=True):
        if share < least:
            continue
        angle = (wedge.theta1 + wedge.theta2) / 2
        x, y = radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle))
        rotation = angle if -90 <= (angle + 180) % 360 - 180 <= 90 else angle + 180
        ax.text(x, y, label, ha="center", va="center", rotation=rotation, rotation_mode="anchor",
                fontsize=size, color=color)  # fmt: skip
