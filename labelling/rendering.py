"""How items and figures are drawn on the server-rendered pages."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IMAGE_URL = re.compile(
    r"^(data:image/(png|jpeg|gif|webp);base64,|https?://\S+\.(png|jpe?g|gif|webp)(\?\S*)?$)", re.I
)


@dataclass(frozen=True)
class PayloadField:
    """One payload field and how to show it: as an image or as text."""

    name: str
    kind: str
    value: str


def payload_fields(payload: dict[str, Any]) -> list[PayloadField]:
    """The payload's fields in order, images recognised by their URL."""
    fields = []
    for name, value in payload.items():
        text = value if isinstance(value, str) else str(value)
        kind = "image" if isinstance(value, str) and IMAGE_URL.match(value) else "text"
        fields.append(PayloadField(name=name, kind=kind, value=text))
    return fields


@dataclass(frozen=True)
class Bar:
    """One bar of a histogram, in SVG user units."""

    x: float
    y: float
    width: float
    height: float
    count: int
    low: float
    high: float


def histogram_bars(counts: list[int], width: float = 600, height: float = 160) -> list[Bar]:
    """Bars for counts over equal bins of [0, 1], scaled to the tallest."""
    if not counts:
        return []
    tallest = max(max(counts), 1)
    step = width / len(counts)
    return [
        Bar(
            x=i * step,
            y=height - height * c / tallest,
            width=step - 2,
            height=height * c / tallest,
            count=c,
            low=i / len(counts),
            high=(i + 1) / len(counts),
        )
        for i, c in enumerate(counts)
    ]


def curve_points(points: list[tuple[float, float]], size: float = 240) -> str:
    """SVG polyline points for a curve on the unit square (y grows upwards)."""
    return " ".join(f"{x * size:.1f},{(1 - y) * size:.1f}" for x, y in points)
