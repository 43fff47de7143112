"""Make the handwritten-digits demo data in labelling/demo/digits/ (what `make run` loads).

The data are scikit-learn's bundled copy of the UCI "Optical Recognition of Handwritten Digits"
test set (1,797 8x8 images, 10 classes, BSD licence; no download needed). The model is a plain
LogisticRegression with a modest C (12.8 on pixels scaled to [0, 1]), so that it is good (~97%
accurate) but not perfect: its 5-fold out-of-fold probabilities leave about 200 digits with a top
probability under 0.9 (3 vs 8, 1 vs 7, 9 vs 5 ...) and a handful of confident mistakes.

scikit-learn is NOT a Quorum dependency. To run this again, in any throwaway venv:

    python3.11 -m venv /tmp/demo-venv
    /tmp/demo-venv/bin/pip install scikit-learn
    /tmp/demo-venv/bin/python scripts/make_demo.py          # from the repository root

(i.e. `pip install scikit-learn` in any venv, then `python scripts/make_demo.py`). It needs no
network after that install and is deterministic for a given scikit-learn/numpy version (fixed
SEED; lbfgs is deterministic). It takes about half a minute (30 small fits) and writes:

    project.json          the project spec
    predictions.jsonl     one prediction row per digit (image as a PNG data URL, out-of-fold
                          probabilities, a seeded 80/20 train/test split tag; `samples` from
                          5 bootstrap refits on ~200 rows)
    gold.jsonl            true labels for a seeded 5% of items (9 per digit)
    crowd_labels.jsonl    a simulated crowd's labels for the 150 least confident items

The PNGs are written with the standard library only (zlib + struct).
"""

from __future__ import annotations

import base64
import json
import math
import struct
import sys
import warnings
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict, train_test_split

SEED = 3
# Inverse regularisation strength for pixels scaled to [0, 1]. It is the same model as C=0.05 on
# the raw 0-16 ink counts (the weights just scale by 16), but lbfgs converges ~6x faster.
# Chosen from a small sweep so that ~200 items have top p < 0.9 and a few mistakes are confident.
C = 12.8
FOLDS = 5
MODEL_VERSION = "logreg-v1"
SOURCE = "sklearn-digits"
LABELS = [str(d) for d in range(10)]
DECIMALS = 6
SAMPLE_MODELS = 5  # bootstrap refits per fold, for `samples`
SAMPLE_LEAST_CONFIDENT = 150  # rows with samples: the least confident ...
SAMPLE_RANDOM = 50  # ... plus this many random others
GOLD_PER_CLASS = 9  # 90 items = 5% of 1,797
CROWD_ITEMS = 150
SCALE = 4  # 8x8 -> 32x32 by pixel repetition
OUT = Path(__file__).resolve().parents[1] / "labelling" / "demo" / "digits"

INSTRUCTIONS = """\
**What you see:** one handwritten digit, scanned very coarsely (8×8 pixels, enlarged): black ink
on white, with grey where a pixel was only partly inked. Different people wrote the digits, so
styles vary.

**What to do:** pick the digit it shows, **0–9**: press the matching key **0**–**9** on your
keyboard, or click the label.

**How to decide:**

- Go by the overall shape, not single pixels: the scans are coarse.
- Common confusions: **1 vs 8** (a thin 8 can look like a 1: look for two loops), **3, 8 and 9**
  (is the left side closed, at the top, the bottom or both?), **5 vs 9** (is the top loop
  closed?) and **1 vs 2** (is there a flat base?).
- If you honestly cannot tell, choose the digit you think is most likely: several people label
  each item, and disagreements go to an expert.
"""

PROJECT = {
    "slug": "digits",
    "name": "Handwritten digits",
    "labels": LABELS,
    "positive_label": "8",
    "threshold": 0.5,
    "instructions": INSTRUCTIONS,
    "overlap": {"min": 3, "max": 5, "target_confidence": 0.95},
    "gold_rate": 0.1,
    "escalation": {"below_confidence": 0.8},
}


# --- images -------------------------------------------------------------------------------------


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_gray(rows: list[bytes]) -> bytes:
    """An 8-bit grayscale PNG from rows of pixel bytes (filter type 0 on every scanline)."""
    height, width = len(rows), len(rows[0])
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = b"".join(b"\x00" + row for row in rows)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(raw, 9))
        + _chunk(b"IEND", b"")
    )


def digit_data_url(image: np.ndarray) -> str:
    """The 8x8 image (ink 0-16) as a black-on-white, SCALE-times enlarged PNG data URL."""
    rows = []
    for r in range(image.shape[0]):
        gray = bytes(255 - round(float(v) * 255 / 16) for v in image[r] for _ in range(SCALE))
        rows.extend([gray] * SCALE)
    return "data:image/png;base64," + base64.b64encode(png_gray(rows)).decode("ascii")


# --- probabilities ------------------------------------------------------------------------------


def rounded(probs: np.ndarray) -> list[float]:
    """Round to DECIMALS and put the rounding residue on the largest class: sums to 1 exactly."""
    values = [round(float(p), DECIMALS) for p in probs]
    top = max(range(len(values)), key=values.__getitem__)
    values[top] = round(1.0 - math.fsum(v for i, v in enumerate(values) if i != top), DECIMALS)
    assert abs(math.fsum(values) - 1.0) <= 1e-9 and min(values) >= 0.0, values
    return values


def model() -> LogisticRegression:
    return LogisticRegression(C=C, max_iter=10_000)


def bootstrap_samples(
    X: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], wanted: set[int]
) -> dict[int, list[list[float]]]:
    """For each wanted item, SAMPLE_MODELS out-of-fold probability rows from bootstrap refits.

    Each fold's training part is resampled with replacement SAMPLE_MODELS times; every refit
    predicts the wanted items of that fold's held-out part, so no sample saw its own item.
    """
    rng = np.random.default_rng(SEED + 1)
    out: dict[int, list[list[float]]] = {i: [] for i in wanted}
    for train, test in folds:
        held = [i for i in test if i in wanted]
        for _ in range(SAMPLE_MODELS):
            boot = rng.choice(train, size=len(train), replace=True)
            fitted = model().fit(X[boot], y[boot])
            probs = np.zeros((len(held), len(LABELS)))
            probs[:, fitted.classes_] = fitted.predict_proba(X[held])
            for i, p in zip(held, probs, strict=True):
                out[i].append(rounded(p))
    return out


# --- crowd --------------------------------------------------------------------------------------


def simulate_crowd(
    items: list[int], y: np.ndarray, P: np.ndarray
) -> tuple[list[dict[str, object]], dict[str, str]]:
    """Labels from 12 simulated workers: 10 mostly good, one random clicker, one always-"1"."""
    rng = np.random.default_rng(SEED + 2)
    workers = [f"w{n:02d}" for n in range(1, 13)]
    accuracy = {w: round(float(rng.uniform(0.85, 0.97)), 2) for w in workers[:10]}
    kind = {w: f"good ({accuracy[w]:.0%} accurate)" for w in workers[:10]}
    kind["w11"], kind["w12"] = "random clicker", 'always answers "1"'
    # Typical time on task: careful workers take a couple of seconds, spammers click at once.
    speed = {w: float(rng.uniform(1800, 3200)) for w in workers[:10]}
    speed["w11"], speed["w12"] = 650.0, 450.0

    clock = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
    labels: list[dict[str, object]] = []
    for item in rng.permutation(items):
        truth = int(y[item])
        k = int(rng.integers(3, 6))  # 3-5 labels per item
        for w in sorted(rng.choice(workers, size=k, replace=False)):
            if w == "w12":
                answer = 1
            elif w == "w11":
                answer = int(rng.integers(0, 10))
            elif rng.random() < accuracy[w]:
                answer = truth
            else:
                # Honest mistakes follow what is genuinely confusable (the model's runner-ups),
                # with a little uniform noise so that every wrong digit is possible.
                wrong = P[item].copy()
                wrong[truth] = 0.0
                wrong = 0.7 * wrong / wrong.sum() + 0.3 / 9
                wrong[truth] = 0.0
                answer = int(rng.choice(10, p=wrong / wrong.sum()))
            clock += timedelta(seconds=int(rng.integers(2, 40)))
            duration = int(rng.lognormal(math.log(speed[w]), 0.35))
            labels.append(
                {
                    "external_id": external_id(int(item)),
                    "labeller": w,
                    "label": str(answer),
                    "created_at": clock.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "duration_ms": max(duration, 200),
                }
            )
    return labels, kind


# --- output -------------------------------------------------------------------------------------


def external_id(index: int) -> str:
    """The id of sklearn sample `index` (0-based, as in load_digits)."""
    return f"digit-{index:04d}"


def write_jsonl(path: Path, rows: list[dict[str, object]]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n")


def main() -> None:
    warnings.filterwarnings(
        "error", category=UserWarning, module="sklearn"
    )  # no silent non-convergence
    digits = load_digits()
    X, y, images = digits.data / 16.0, digits.target, digits.images
    n = len(y)

    cv = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=SEED)
    folds = list(cv.split(X, y))
    P = cross_val_predict(model(), X, y, cv=folds, method="predict_proba")
    probs = [rounded(p) for p in P]
    top = np.array([max(p) for p in probs])
    predicted = np.array([int(np.argmax(p)) for p in probs])

    _, test_idx = train_test_split(np.arange(n), test_size=0.2, random_state=SEED, stratify=y)
    test = set(test_idx.tolist())

    order = np.argsort(top, kind="stable")  # least confident first
    least = order[:SAMPLE_LEAST_CONFIDENT].tolist()
    rest = order[SAMPLE_LEAST_CONFIDENT:]
    sampled = set(least) | set(
        np.random.default_rng(SEED).choice(rest, size=SAMPLE_RANDOM, replace=False).tolist()
    )
    samples = bootstrap_samples(X, y, folds, sampled)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "project.json").write_text(
        json.dumps(PROJECT, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )

    rows: list[dict[str, object]] = []
    for i in range(n):
        row: dict[str, object] = {
            "external_id": external_id(i),
            "payload": {"image": digit_data_url(images[i]), "caption": f"sample {i}"},
            "model_version": MODEL_VERSION,
            "probabilities": dict(zip(LABELS, probs[i], strict=True)),
            "source": SOURCE,
            "split": "test" if i in test else "train",
        }
        if i in samples:
            row["samples"] = samples[i]
        rows.append(row)
    write_jsonl(OUT / "predictions.jsonl", rows)

    gold_rng = np.random.default_rng(SEED + 3)
    gold = sorted(
        int(i)
        for digit in range(10)
        for i in gold_rng.choice(np.flatnonzero(y == digit), size=GOLD_PER_CLASS, replace=False)
    )
    write_jsonl(
        OUT / "gold.jsonl", [{"external_id": external_id(i), "label": str(y[i])} for i in gold]
    )

    crowd_items = order[:CROWD_ITEMS].tolist()
    crowd, kinds = simulate_crowd(crowd_items, y, P)
    write_jsonl(OUT / "crowd_labels.jsonl", crowd)

    # --- summary ---
    wrong = predicted != y
    print(f"items {n}  (train {n - len(test)}, test {len(test)})")
    print(f"out-of-fold accuracy {1 - wrong.mean():.4f}  ({wrong.sum()} mistakes)")
    print(f"top probability < 0.9: {(top < 0.9).sum()}   < 0.8: {(top < 0.8).sum()}")
    print(f"confident mistakes (top >= 0.97 and wrong): {(wrong & (top >= 0.97)).sum()}")
    print(f"rows with samples: {len(samples)} x {SAMPLE_MODELS}")
    print(f"gold: {len(gold)}   crowd labels: {len(crowd)} on {len(crowd_items)} items")
    for w, k in sorted(kinds.items()):
        mine = [c for c in crowd if c["labeller"] == w]
        right = sum(c["label"] == str(y[int(str(c["external_id"])[6:])]) for c in mine)
        print(f"  {w}: {k:28s} {len(mine):3d} labels, {right / max(len(mine), 1):.0%} right")
    for path in sorted(OUT.iterdir()):
        print(f"{path.name:22s} {path.stat().st_size:9,d} bytes")


if __name__ == "__main__":
    sys.exit(main())
