"""Benchmark outputs: JSON results, a markdown table and a J&F-per-round plot."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

__all__ = ["markdown_table", "write_json", "plot_jf", "write_report", "COLUMNS"]

#: (header, summary key or None, format) of the markdown table
COLUMNS: list[tuple[str, str, str]] = [
    ("sequence", "name", "s"),
    ("frames", "frames", "d"),
    ("objects", "objects", "d"),
    ("J&F r1", "JF_r1", ".3f"),
    ("J&F rR", "JF_rR", ".3f"),
    ("AUC", "AUC", ".3f"),
    ("J rR", "J_rR", ".3f"),
    ("F rR", "F_rR", ".3f"),
    ("scribbled-frame J r1", "scribbled_frame_J_r1", ".3f"),
    ("SEG (cells)", "SEG_rR", ".3f"),
    ("unnamed share", "unnamed_share_rR", ".3f"),
    ("s prepare (while drawing)", "seconds_per_round_prepare", ".2f"),
    ("CPSM s r1", "cpsm_latency_round1", ".2f"),
    ("CPSM s corrections", "cpsm_latency_corrections", ".2f"),
    ("s/round propagation", "seconds_per_round_propagation", ".2f"),
    ("propagation fps", "propagation_fps", ".1f"),
    ("peak RSS MB", "peak_rss_mb", ".0f"),
]


def _row_values(result: dict) -> dict:
    values = dict(result["summary"])
    values.update(name=result["name"], frames=result["frames"], objects=result["objects"])
    if not result.get("instance"):
        values["SEG_rR"] = None
    return values


def _fmt(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if fmt == "s":
        return str(value)
    if fmt == "d":
        return str(int(round(value)))
    return format(value, fmt)


def _mean_row(rows: list[dict]) -> dict:
    """Means over the sequences of every numeric column (None where no sequence has a value)."""
    mean: dict = {"name": "mean"}
    for _, key, _ in COLUMNS[1:]:
        vals = [r[key] for r in rows if r.get(key) is not None]
        mean[key] = float(np.mean(vals)) if vals else None
    return mean


def markdown_table(results: list[dict], rounds: int) -> str:
    """The per-sequence table with a mean row (``rR`` is round ``rounds``)."""
    headers = [h.replace("rR", f"r{rounds}") for h, _, _ in COLUMNS]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(COLUMNS)) + "|"]
    rows = [_row_values(r) for r in results]
    for values in rows:
        lines.append("| " + " | ".join(_fmt(values.get(k), f) for _, k, f in COLUMNS) + " |")
    if rows:
        mean = _mean_row(rows)
        cells = ["**mean**"] + [
            _fmt(mean[k], ".1f" if f == "d" else f) for _, k, f in COLUMNS[1:]
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _json_default(obj):
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def write_json(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` as indented JSON (numpy scalars/arrays converted)."""
    path = Path(path)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")
    return path


def plot_jf(results: list[dict], path: str | Path) -> Path:
    """PNG of J&F against the round: one line per sequence and the mean (thick, dashed, black)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    curves = []
    for res in results:
        jf = res["summary"]["JF_per_round"]
        rounds = np.arange(1, len(jf) + 1)
        ax.plot(rounds, jf, marker="o", markersize=3, linewidth=1.2, alpha=0.8, label=res["name"])
        curves.append(jf)
    if curves:
        n = min(len(c) for c in curves)
        mean = np.mean([c[:n] for c in curves], axis=0)
        ax.plot(np.arange(1, n + 1), mean, color="black", linewidth=2.5, linestyle="--",
                zorder=1, label=f"mean ({len(curves)} sequences)")
        ax.set_xticks(np.arange(1, n + 1))
    ax.set_xlabel("round")
    ax.set_ylabel("J&F")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title("napari-ivoma interactive benchmark: J&F per round")
    ax.legend(fontsize="small", loc="lower right", ncol=2)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(
    results: list[dict], out_dir: str | Path, rounds: int, config: dict | None = None,
    skipped: dict[str, str] | None = None,
) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``jf_rounds.png`` into ``out_dir``.

    Returns the written paths by kind (``json``, ``markdown``, ``plot``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(results, rounds)
    rows = [_row_values(r) for r in results]
    payload = {
        "config": config or {},
        "rounds": rounds,
        "sequences": results,
        "skipped": skipped or {},
        "mean": _mean_row(rows) if rows else None,
    }
    md = table
    if (config or {}).get("annotator", "largest") != "largest":
        md = f"Annotator: {config['annotator']} (not the benchmark's default)\n\n" + md
    if skipped:
        md += "\nSkipped:\n" + "".join(f"- {why}\n" for why in skipped.values())
    paths = {
        "json": write_json(payload, out / "results.json"),
        "markdown": out / "results.md",
        "plot": plot_jf(results, out / "jf_rounds.png"),
    }
    paths["markdown"].write_text(md)
    return paths
