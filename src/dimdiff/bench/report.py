"""Writing benchmark results: JSON files, markdown tables, and the quality-against-time plot."""

from __future__ import annotations

import enum
import json
import os
from pathlib import Path
from typing import Any

from dimdiff.bench.environment import machine_summary

__all__ = ["write_json", "write_text", "sampling_table", "training_table", "quality_table", "quality_plot",
           "oracle_table"]  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON: {value!r}")


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """``result`` as indented JSON, written to a temporary file first and renamed (atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result, indent=2, default=_plain) + "\n")
    tmp.replace(path)
    return path


def write_text(text: str, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")
    return path


def _num(value: float | None, fmt: str) -> str:
    return "n/a" if value is None else format(value, fmt)


def _markdown(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """A markdown table: the first ``text_columns`` left-aligned, the others right-aligned."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * text_columns + "---:|" * (len(header) - text_columns)]
    return lines + ["| " + " | ".join(r) + " |" for r in rows]


def _table(head: str, header: list[str], rows: list[list[str]], notes: list[str]) -> str:
    """A caption, a markdown table and its notes."""
    return "\n".join([head, "", *_markdown(header, rows)] + [f"\nnote: {n}" for n in notes])


def sampling_table(result: dict[str, Any]) -> str:
    s, d = result["settings"], result["data"]
    head = (f"Sampling, N = {s['steps']} steps, batch {s['batch']}, {d['channels']}x{d['resolution']}x"
            f"{d['resolution']}, untrained nets; {machine_summary(result['environment'])}; ratios are per-pair "
            f"medians of interleaved runs against DDIM (< 1: cheaper).")  # fmt: skip
    header = ["method", "params", "NFE / image", "time / image (ms)", "time ratio", "GFLOP / image",
              "FLOP ratio", "dim. bound", "peak MiB"]  # fmt: skip
    rows = [[r["name"], f"{r['parameters']:,}", _num(r["nfe"], "g"), _num(1e3 * r["time_per_image_s"], ".2f"),
             _num(r["time_ratio_to_ddim"], ".3f"), _num(r["flops_per_image"] / 1e9, ".4g"),
             _num(r["flops_ratio_to_ddim"], ".3f"), _num(r["dimension_ratio"], ".3f"),
             _num(r["peak_memory_mb"], ".1f")] for r in result["rows"]]  # fmt: skip
    return _table(head, header, rows, result["notes"])


def training_table(result: dict[str, Any]) -> str:
    s, d = result["settings"], result["data"]
    head = (f"Training step (forward, loss, backward, AdamW), batch {s['batch']}, {d['channels']}x{d['resolution']}x"
            f"{d['resolution']}; each resolution level timed on its own ({s['repeats']} steps, FLOPs over "
            f"{s['flop_batches']} draws of t) and weighted by its probability: expected examples/s and FLOPs, "
            f"peak memory the largest level's; {machine_summary(result['environment'])}.")  # fmt: skip
    header = ["set-up", "params", "examples / s", "GFLOP / example", "train / forward FLOPs", "time ratio",
              "FLOP ratio", "dim. ratio", "peak MiB"]  # fmt: skip
    rows = [[r["name"], f"{r['parameters']:,}", _num(r["examples_per_s"], ".1f"),
             _num(r["flops_per_example"] / 1e9, ".4g"), _num(r["training_over_forward_flops"], ".2f"),
             _num(r["time_ratio_to_ddim"], ".3f"), _num(r["flops_ratio_to_ddim"], ".3f"),
             _num(r["dimension_ratio"], ".3f"), _num(r["peak_memory_mb"], ".1f")] for r in result["rows"]]  # fmt: skip
    return _table(head, header, rows, result["notes"])


def oracle_table(result: dict[str, Any]) -> str:
    s, d = result["settings"], result["data"]
    c, h, w = d["shape"]
    head = (f"Samplers with the exact denoiser of Gaussian {c}x{h}x{w} images (1/f^2 spectrum, per-pixel variance "
            f"{d['variance']:g}, total {d['trace']:.4g}), {s['samples']} samples per row, Frechet distance to the "
            f"data on pixels; floor (as many real draws) {result['floor']:.4f}; excess = distance - floor; "
            f"{machine_summary(result['environment'])}.")  # fmt: skip
    header = ["method", "N", "Frechet distance", "excess", "excess / DDIM's"]
    rows = [[r["name"], str(r["steps"]), f"{r['frechet']:.4f}", f"{r['excess']:.4f}",
             _num(r["excess_ratio_to_ddim"], ".2f")] for r in result["rows"]]  # fmt: skip
    return _table(head, header, rows, [])


def _score_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Score keys shown in the table: all but KID's spread; SWD per scale (finest first) after its mean."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row["scores"] if k not in keys and k != "kid_std"]
    return sorted(keys, key=lambda k: k.startswith("swd_") and k != "swd_mean")  # stable: per-scale SWD last


def quality_table(result: dict[str, Any]) -> str:
    t = result["train"]
    head = (f"Quality at equal budget ({t['steps']} steps x batch {t['batch_size']}, {result['resolution']} px), "
            f"{result['settings']['samples']} samples per row; {machine_summary(result['environment'])}.")  # fmt: skip
    columns = _score_columns(result["rows"])
    header = ["data", "method", "N", "time / image (ms)", *columns]
    rows = [[r["dataset"], r["name"], str(r["steps"]), _num(1e3 * r["time_per_image_s"], ".2f"),
             *[_num(r["scores"].get(k), ".4g") for k in columns]] for r in result["rows"]]  # fmt: skip
    lines = [head, "", *_markdown(header, rows, text_columns=2)]
    train = [f"trained {', '.join(r['methods'])} on {r['dataset']}: {r['seconds']:.0f} s, "
             f"{r['examples_per_s']:.0f} examples/s, final loss {_num(r['final_loss'], '.4f')}"
             for r in result["training"]]  # fmt: skip
    return "\n".join(lines + [""] + train)


def quality_plot(result: dict[str, Any], path: str | Path, metric: str | None = None) -> Path:
    """One panel per dataset: the headline score (or ``metric``) against time per image, one
    line per method through its step counts N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    from dimdiff.evaluate import Direction, score_direction

    datasets = list(dict.fromkeys(r["dataset"] for r in result["rows"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(8 * len(datasets), 4), dpi=110, squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        rows = [r for r in result["rows"] if r["dataset"] == dataset]
        key = metric or rows[0]["headline"]
        for name in dict.fromkeys(r["name"] for r in rows):
            mine = sorted((r for r in rows if r["name"] == name and key in r["scores"]), key=lambda r: r["steps"])
            xs, ys = [1e3 * r["time_per_image_s"] for r in mine], [r["scores"][key] for r in mine]
            ax.plot(xs, ys, marker="o", label=name)
            for r, x, y in zip(mine, xs, ys, strict=True):
                ax.annotate(f"N={r['steps']}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        direction = score_direction(key)
        better = "" if direction is Direction.NEITHER else f" ({direction.value} is better)"
        budget = f"{result['train']['steps']} steps x {result['train']['batch_size']}"
        ax.set(xlabel="sampling time per image (ms)", ylabel=f"{key}{better}",
               title=f"{dataset}, {result['resolution']} px, trained {budget}")  # fmt: skip
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="both", labelsize=8)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)  # beside the data
    fig.suptitle(machine_summary(result["environment"]), fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
