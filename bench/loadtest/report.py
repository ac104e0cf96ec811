"""Figures out of outcomes: the table, the JSON file, the latency chart, a progress bar."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

COLUMNS = (
    ("joins", "joins", "{:d}"),
    ("p50_ms", "p50 ms", "{:.3f}"),
    ("p95_ms", "p95 ms", "{:.3f}"),
    ("p99_ms", "p99 ms", "{:.3f}"),
    ("max_ms", "max ms", "{:.1f}"),
    ("dispatch_p50_ms", "disp p50", "{:.1f}"),
    ("db_reads", "db reads", "{:d}"),
    ("reads_per_1000_joins", "reads/1k", "{:.0f}"),
    ("gets_per_1000_joins", "gets/1k", "{:.0f}"),
    ("polls", "polls", "{:d}"),
    ("edits", "edits", "{:d}"),
    ("hit_rate", "hit rate", "{:.1%}"),
    ("builds", "builds", "{:d}"),
    ("stale_served", "stale", "{:d}"),
    ("errors", "errors", "{:d}"),
    ("wrong_prompts", "wrong", "{:d}"),
    ("cache_bytes", "cache bytes", "{:d}"),
)


def percentile(samples: list[float], q: float) -> float:
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def table(results: dict[str, dict[str, Any]]) -> str:
    names = list(results)
    width = max(len("strategy"), *(len(n) for n in names))
    header = f"{'strategy':<{width}} " + " ".join(f"{title:>11}" for _, title, _ in COLUMNS)
    lines = [header, "-" * len(header)]
    for name in names:
        cells = [fmt.format(results[name][key]).rjust(11) for key, _, fmt in COLUMNS]
        lines.append(f"{name:<{width}} " + " ".join(cells))
    return "\n".join(lines)


def write_json(
    path: Path, workload: dict[str, Any], results: dict[str, dict[str, Any]], audio: list[dict[str, Any]] | None = None
) -> None:
    """The run's figures; ``audio`` (``--audio``): one entry per row, executor and concurrency."""
    body: dict[str, Any] = {"workload": workload, "strategies": results}
    if audio is not None:
        body["audio"] = audio
    path.write_text(json.dumps(body, indent=2) + "\n")


PLOT_EXTRA_MISSING = "loadtest: --plot needs matplotlib, the plot extra: pip install '.[plot]'"


def plot_available() -> bool:
    """Whether ``plot`` can run: checked before the run, so a missing extra costs one line
    and exit status 2, not a traceback after minutes of joins."""
    return importlib.util.find_spec("matplotlib") is not None


def plot(path: Path, latencies: dict[str, list[float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5))
    for name, samples in latencies.items():
        if not samples:
            continue
        ordered = sorted(max(s, 1e-3) for s in samples)
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axis.step(ordered, fractions, where="post", label=name)
    axis.set_xscale("log")
    axis.set_xlabel("join -> prompt resolved (ms, log scale)")
    axis.set_ylabel("fraction of joins")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


class Progress:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, label: str, stream: TextIO = sys.stderr) -> None:
        self.total, self.label, self.done = total, label, 0
        self._stream = stream
        self._drawn = 0.0

    def advance(self, count: int) -> None:
        if count <= 0 or self.done >= self.total:
            return
        self.done = min(self.total, self.done + count)
        now = time.monotonic()
        if now - self._drawn >= 0.1 or self.done >= self.total:
            self._drawn = now
            filled = int(30 * self.done / max(self.total, 1))
            bar = "#" * filled + "." * (30 - filled)
            self._stream.write(f"\r{self.label:<22} [{bar}] {self.done}/{self.total}")
            if self.done >= self.total:
                self._stream.write("\n")
            self._stream.flush()
