"""What each GGUF output really is, and the table that ends a run.

Bits per weight are measured, not assumed: total tensor bytes * 8 / total elements of the
file (norms and embeddings included).  Where a K-quant's 256-wide blocks do not divide a
row (SmolLM2's hidden size 576) llama-quantize falls back to other types, and the real
figure shows it.  The figures are recorded in each output's sidecar when it is written,
so the table of a run that skipped everything reads no GGUF.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gguf import LlamaFileType
from rich.console import Console
from rich.table import Table
from rich.text import Text

from harness.console import plain
from harness.gguf_files import mtp
from harness.gguf_files.split import GGUFModel
from harness.pipeline.plan import Outcome


def file_type_name(value: Any) -> str | None:
    if not isinstance(value, int):
        return None
    try:
        name = LlamaFileType(value).name
    except ValueError:
        return f"ftype{value}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def gguf_info(gf: GGUFModel) -> dict[str, Any]:
    """Architecture, MTP layout, file type and real bits per weight of an opened GGUF."""
    lay = mtp.layout(gf)
    nbytes = sum(t.nbytes for t in gf.tensors)
    elements = sum(t.n_elements for t in gf.tensors)
    return {
        "gguf": {
            "architecture": lay.arch,
            "block_count": lay.block_count,
            "nextn_predict_layers": lay.nextn,
            "file_type": file_type_name(gf.value("general.file_type")),
            "tensors": len(gf.tensors),
            "tensor_bytes": nbytes,
            "elements": elements,
            "bits_per_weight": round(nbytes * 8 / elements, 4) if elements else None,
            "file_size": gf.size,
            "shards": [p.name for p in gf.paths],
        }
    }


def rows(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    kld = {str(o.sidecar.get("quant")): o.sidecar["quality"] for o in outcomes
           if o.step == "quality" and "mean_kld" in (o.sidecar.get("quality") or {})}  # fmt: skip
    out = []
    for o in outcomes:
        g = o.sidecar.get("gguf") or {}
        if not g and o.step != "imatrix":
            continue  # the downloaded checkpoint
        out.append({
            "file": str(o.output),
            "step": o.step,
            "type": "imatrix" if o.step == "imatrix" else o.sidecar.get("params", {}).get("type") or g.get("file_type") or "?",
            "size": g.get("file_size") or o.sidecar.get("output", {}).get("size"),
            "bits_per_weight": g.get("bits_per_weight"),
            "seconds": None if o.skipped else round(o.seconds, 2),
            "recorded_seconds": o.sidecar.get("seconds"),
            "skipped": o.skipped,
            "perplexity": o.sidecar.get("ppl"),
            "quality": _quality(kld.get(str(o.output))),
        })  # fmt: skip
    return out


def _quality(q: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the summary keeps of a quant's quality record (harness.quality.measure.Measure)."""
    if q is None:
        return None
    keys = ("mean_kld", "p99_kld", "same_top_p", "ppl_ratio", "mtp", "mtp_flags")
    return {k: q.get(k) for k in keys if k in q}


def render(outcomes: list[Outcome], console: Console) -> None:
    table = Table(title="model pipeline", title_justify="left")
    all_rows = rows(outcomes)
    with_kld = any(r["quality"] for r in all_rows)
    cols = [("file", "left"), ("type", "left"), ("size", "right"), ("bits/weight", "right")]
    with_mtp = any((r["quality"] or {}).get("mtp") for r in all_rows)
    if with_kld:
        cols += [("mean KLD", "right"), ("99% KLD", "right"), ("same top", "right")]
    if with_mtp:
        cols.append(("MTP accept @1/@3", "right"))
    for col, justify in [*cols, ("time", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for row in all_rows:
        bpw = row["bits_per_weight"]
        if row["skipped"]:
            took = "cached" + (f" ({row['recorded_seconds']:.1f}s)" if row["recorded_seconds"] is not None else "")
        else:
            took = f"{row['seconds']:.1f}s"
        q = row["quality"]
        kld = ([f"{q['mean_kld']:.5f}", f"{q['p99_kld']:.4f}", f"{100 * q['same_top_p']:.1f}%"] if q
               else ["-", "-", "-"]) if with_kld else []  # fmt: skip
        if with_mtp:
            kld.append(_mtp_cell(q))
        table.add_row(Text(plain(Path(row["file"]).name)), Text(plain(str(row["type"]))), _size(row["size"]),
                      f"{bpw:.2f}" if bpw else "-", *kld, took)  # fmt: skip
    console.print(table)


def _mtp_cell(q: dict[str, Any] | None) -> str:
    acc = (q or {}).get("mtp") or {}
    cell = "/".join("-" if acc.get(d) is None else f"{100 * acc[d]:.0f}%" for d in ("1", "3")) if acc else "-"
    return cell + (" LOW" if (q or {}).get("mtp_flags") else "")


def _size(n: Any) -> str:
    if not isinstance(n, int):
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)
