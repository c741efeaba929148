"""Server-rendered bar charts: the geometry of a stacked bar chart (succeeded below, failed
on top), which a template draws as inline SVG (no script, no style attribute: colours come
from the stylesheet through class names)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 600, 160
LEFT, RIGHT, TOP, BOTTOM = 40, 8, 10, 22  # margins: y labels on the left, x labels below


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    ok_y: float
    ok_height: float
    failed_y: float
    failed_height: float
    title: str  # the tooltip: "13:05: 12 succeeded, 1 failed"
    ok: int
    failed: int


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    x_labels: list[tuple[float, str]]
    y_labels: list[tuple[float, str]]  # (y, text): 0, half and the top of the scale
    left: float
    right: float
    baseline: float
    top_line: float
    total_ok: int
    total_failed: int

    @property
    def empty(self) -> bool:
        return self.total_ok == 0 and self.total_failed == 0


def nice_top(value: int) -> int:
    """The least of 1, 2, 5, 10, 20, 50, ... that is >= ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power = int(10 ** math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return int(step * power)
    return int(10 * power)


def bar_chart(ok: Sequence[int], failed: Sequence[int], labels: Sequence[str], *, label_every: int = 1) -> Chart:
    """A stacked bar per bucket (``ok[i]`` succeeded, ``failed[i]`` failed, named
    ``labels[i]``), a label under every ``label_every``-th bar."""
    n = len(ok)
    top = nice_top(max((a + b for a, b in zip(ok, failed)), default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, n)
    baseline = TOP + plot_h
    bars, x_labels = [], []
    for i in range(n):
        x = LEFT + i * slot
        h_ok = plot_h * ok[i] / top
        h_failed = plot_h * failed[i] / top
        bars.append(Bar(
            round(x + slot * 0.1, 2), round(slot * 0.8, 2), round(baseline - h_ok, 2), round(h_ok, 2),
            round(baseline - h_ok - h_failed, 2), round(h_failed, 2),
            f"{labels[i]}: {ok[i]} succeeded, {failed[i]} failed", ok[i], failed[i],
        ))
        if i % max(1, label_every) == 0:
            x_labels.append((round(x + slot / 2, 2), labels[i]))
    y_labels = [(baseline, "0"), (round(TOP + plot_h / 2, 2), f"{top / 2:g}"), (float(TOP), str(top))]
    return Chart(WIDTH, HEIGHT, bars, x_labels, y_labels, LEFT, WIDTH - RIGHT, baseline, TOP,
                 sum(ok), sum(failed))
