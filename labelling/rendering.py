"""How items and figures are drawn on the server-rendered pages."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

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


def histogram_bars(
    counts: list[int], width: float = 600, height: float = 160, *, tallest: int | None = None
) -> list[Bar]:
    """Bars for counts over equal bins of [0, 1] on a square-root scale (a confident model puts
    most items in the last bin, which would flatten the rest), scaled to the tallest or to
    `tallest`, so that a subset drawn over the whole keeps the same scale."""
    if not counts:
        return []
    top = math.sqrt(max(tallest or max(counts), 1))
    step = width / len(counts)
    return [
        Bar(
            x=i * step,
            y=height - height * math.sqrt(c) / top,
            width=step - 2,
            height=height * math.sqrt(c) / top,
            count=c,
            low=i / len(counts),
            high=(i + 1) / len(counts),
        )
        for i, c in enumerate(counts)
    ]


def curve_points(points: list[tuple[float, float]], size: float = 240) -> str:
    """SVG polyline points for a curve on the unit square (y grows upwards)."""
    return " ".join(f"{x * size:.1f},{(1 - y) * size:.1f}" for x, y in points)


@dataclass(frozen=True)
class Dot:
    """A point of a scatter plot, in SVG user units, with what it stands for."""

    x: float
    y: float
    title: str
    warn: bool


def volume_reliability_dots(
    labellers: list[Any], width: float = 480, height: float = 240
) -> list[Dot]:
    """Labellers as dots: label volume across (log scale), accuracy up; flagged ones marked."""
    rated = [one for one in labellers if one.accuracy is not None and one.n_labels]
    top = max((math.log10(one.n_labels + 1) for one in rated), default=1.0) or 1.0
    return [
        Dot(
            x=width * math.log10(one.n_labels + 1) / top,
            y=height * (1 - one.accuracy),
            title=f"{one.display_name}: {one.n_labels} labels, accuracy {one.accuracy:.2f}",
            warn=bool(one.flags),
        )
        for one in rated
    ]


def series_points(values: list[float], width: float = 480, height: float = 160) -> str:
    """SVG polyline points for values in [0, 1] spread evenly across the width."""
    if not values:
        return ""
    step = width / max(len(values) - 1, 1)
    return " ".join(f"{i * step:.1f},{(1 - v) * height:.1f}" for i, v in enumerate(values))


# The labelling page's own keys; a label that is one of them cannot be its own shortcut.
CONTROL_KEYS = frozenset({"s", "u", "?"})
# The review page's: remove, send back, gold, note, instructions.
REVIEW_KEYS = frozenset({"r", "b", "g", "n", "?"})
_BULLET = re.compile(r"^\s*[-*+]\s+(.*)$")
_INLINE = (
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"`([^`]+)`"), r"<code>\1</code>"),
)


@dataclass(frozen=True)
class LabelButton:
    """One answer button and its keyboard shortcut ("" when it has none)."""

    label: str
    key: str


def label_buttons(
    labels: list[str], control_keys: frozenset[str] = CONTROL_KEYS
) -> list[LabelButton]:
    """Shortcuts: the label itself when every label is one character (and none is one of the
    page's own `control_keys`), else 1…9 then 0."""
    single = all(len(label) == 1 for label in labels)
    if single and not control_keys & {label.lower() for label in labels}:
        return [LabelButton(label, label) for label in labels]
    keys = [*"123456789", "0"]
    return [LabelButton(label, keys[i] if i < 10 else "") for i, label in enumerate(labels)]


def _inline(text: str) -> str:
    html = str(escape(text))
    for pattern, replacement in _INLINE:
        html = pattern.sub(replacement, html)
    return html


def _blocks(text: str) -> list[tuple[str, list[list[str]]]]:
    """Markdown-ish blocks: ("p", [lines]) and ("ul", [item lines, …]); blank lines split them."""
    blocks: list[tuple[str, list[list[str]]]] = []
    for line in text.splitlines():
        bullet = _BULLET.match(line)
        if not line.strip():
            blocks.append(("", []))
        elif bullet:
            if not blocks or blocks[-1][0] != "ul":
                blocks.append(("ul", []))
            blocks[-1][1].append([bullet[1]])
        elif blocks and blocks[-1][0] in ("ul", "p"):
            blocks[-1][1][-1].append(line.strip())  # continues the paragraph or list item
        else:
            blocks.append(("p", [[line.strip()]]))
    return blocks


def instructions_html(text: str) -> SafeString:
    """Instructions in a safe Markdown subset: paragraphs, lists, **bold**, `code`; no raw HTML."""
    html = []
    for kind, parts in _blocks(text):
        texts = [_inline(" ".join(part)) for part in parts]
        if kind == "p":
            html.append(f"<p>{texts[0]}</p>")
        elif kind == "ul":
            html.append("<ul>" + "".join(f"<li>{t}</li>" for t in texts) + "</ul>")
    # Safe: _inline escapes every character of the text before it adds its few tags.
    return mark_safe("\n".join(html))


# Colours of the lines of a multi-line chart, cycled; the legend repeats them.
LINE_COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f")


@dataclass(frozen=True)
class Line:
    """One line of a chart: its points (SVG polyline), its dots with their titles, its colour."""

    name: str
    colour: str
    points: str
    dots: list[Dot]


def error_lines(
    versions: list[str], problems: list[dict[str, Any]], width: float = 480, height: float = 200
) -> list[Line]:
    """A line per problem: its error rate under each model version, versions across in time
    order, error rate up (0 to 1); a version not evaluated on the problem leaves a gap."""
    step = width / max(len(versions) - 1, 1)
    lines = []
    for k, problem in enumerate(problems):
        dots = []
        for i, version in enumerate(versions):
            figures = problem["figures"].get(version)
            if figures and figures["error_rate"] is not None:
                rate = figures["error_rate"]
                title = (
                    f"{problem['name']} · {version}: error rate {rate:.3f} "
                    f"({figures['errors']} of {figures['n']})"
                )
                dots.append(Dot(x=i * step, y=(1 - rate) * height, title=title, warn=False))
        points = " ".join(f"{d.x:.1f},{d.y:.1f}" for d in dots)
        lines.append(Line(problem["name"], LINE_COLOURS[k % len(LINE_COLOURS)], points, dots))
    return lines


def band_points(
    lows: list[float], highs: list[float], width: float = 480, height: float = 160
) -> str:
    """SVG polygon points of a band between two series of values in [0, 1]."""
    if not lows:
        return ""
    step = width / max(len(lows) - 1, 1)
    top = [f"{i * step:.1f},{(1 - min(v, 1.0)) * height:.1f}" for i, v in enumerate(highs)]
    bottom = [f"{i * step:.1f},{(1 - max(v, 0.0)) * height:.1f}" for i, v in enumerate(lows)]
    return " ".join(top + bottom[::-1])
