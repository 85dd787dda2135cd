"""Checks before anything is downloaded or converted, so a run fails in seconds, not hours.

- the build has the tools the steps need (llama-quantize, llama-imatrix, the converter);
- the recipe's local ``draft:`` file exists (its step runs last);
- a ``model.safetensors.index.json`` names only shards the checkpoint holds;
- the checkpoint's architecture (``config.json``) is one this tree's converter registers;
- quant types, ``mtp_type`` and ``tensor_types`` are valid, and a type that needs an
  importance matrix is not combined with MTP layers left without ``mtp_type``;
- the disk has room for what the run will write: the download, the converted file(s),
  the importance matrix and each quant, estimated from the checkpoint's parameter count
  (the safetensors headers: read locally with ``safetensors``, asked of the Hub with
  ``get_safetensors_metadata``) and each type's bits per weight, as the build's
  ``llama-quantize --help`` states it.  Outputs already in place are not counted.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness import console
from harness.errors import InputError
from harness.pipeline import cache, checkpoint, qtypes, rules, source, tools
from harness.pipeline.plan import Context

MARGIN = 1.05  # estimates are estimates
HEADROOM = 256 * 1024 * 1024  # leave the filesystem some air
FreeSpace = Callable[[Path], int]


def free_space(path: Path) -> int:
    """Free bytes on the filesystem that holds ``path`` (or would, once created)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free


@dataclass
class Estimate:
    items: list[tuple[str, int]] = field(default_factory=list)

    def add(self, what: str, nbytes: float) -> None:
        if nbytes > 0:
            self.items.append((what, int(nbytes)))

    @property
    def total(self) -> int:
        return sum(n for _, n in self.items)

    def to_json(self) -> dict[str, Any]:
        return {"total": self.total, "items": dict(self.items)}


def check_tools(ctx: Context) -> None:
    gone = tools.missing(ctx.build, convert=not ctx.source.gguf, imatrix=ctx.use_imatrix)
    if gone:
        raise InputError(
            f"the build at {ctx.build.root} lacks what the pipeline needs: " + ", ".join(gone),
            hint=f"add llama-quantize and llama-imatrix to build.targets and run: harness build {ctx.recipe.path}",
        )


def check_architecture(ctx: Context, config: dict[str, Any]) -> str:
    arch = checkpoint.architecture(config)
    if arch is None:
        raise InputError(f"{ctx.section.source}: config.json names no architecture (architectures: [...])")
    known = tools.supported_architectures(ctx.build)
    if known and arch not in known:
        import difflib

        close = difflib.get_close_matches(arch, sorted(known), n=2)
        raise InputError(
            f"{ctx.section.source}: architecture {arch} is not supported by the converter of {ctx.build.root}",
            hint=("close: " + ", ".join(close) + "; " if close else "")
            + "a newer llama.cpp (or a PR adding it) in the recipe's stack may support it",
        )
    return arch


def check_options(ctx: Context, mtp_layers: int) -> None:
    q = ctx.section.quantize
    if q.mtp_type is not None:
        rules.tensor_type(q.mtp_type, what="model.quantize.mtp_type")
        if qtypes.needs_imatrix(q.mtp_type):
            raise InputError(
                f"model.quantize.mtp_type {q.mtp_type} needs an importance matrix, which MTP layers never get"
            )
    rules.user_rules(q.tensor_types)
    if mtp_layers and ctx.section.convert.mtp == "keep" and q.mtp_type is None:
        low = [t for t in ctx.types if qtypes.needs_imatrix(t)]
        if low:
            raise InputError(
                f"{', '.join(low)} with model.quantize.mtp_type: null: the {mtp_layers} MTP layer(s) would be "
                "quantized to that type without importance data (llama-imatrix never runs them), and "
                "llama-quantize aborts with 'Missing importance matrix'",
                hint="set model.quantize.mtp_type (Q8_0 by default)",
            )


def estimate(ctx: Context, *, params: int, mtp_layers: int, download: int, vocab: int = 0) -> Estimate:
    """Bytes the run will write (outputs that exist with a sidecar are taken as kept)."""
    est = Estimate()
    est.add("download", download)
    layers = ctx.trunk_layers
    converted = params * qtypes.OUTTYPE_BYTES[ctx.section.convert.outtype]
    separate = ctx.section.convert.mtp == "separate" and mtp_layers > 0

    def pending(path: Path) -> bool:
        return ctx.force or cache.read_sidecar(path) is None or not path.exists()

    if pending(ctx.converted_path()) and not ctx.source.gguf:
        est.add(ctx.converted_path().name, converted)
    head_share = min(1.0, 1.5 * mtp_layers / max(layers, 1))
    if separate and pending(ctx.mtp_head_path()):
        est.add(ctx.mtp_head_path().name, converted * head_share)
    if ctx.use_imatrix and pending(ctx.imatrix_path()):
        est.add(ctx.imatrix_path().name, converted * 0.002)
    if ctx.options.until == "quantize":
        for t in ctx.types:
            if pending(ctx.quant_path(t)):
                est.add(ctx.quant_path(t).name, params * qtypes.bpw(t, ctx.type_bpw) / 8 * 1.02)
        mtp_type = ctx.section.quantize.mtp_type
        if separate and mtp_type and pending(ctx.mtp_quant_path(mtp_type.upper())):
            est.add(ctx.mtp_quant_path(mtp_type.upper()).name, params * head_share * qtypes.bpw(mtp_type, ctx.type_bpw) / 8)
    if ctx.wants("quality") and vocab and pending(ctx.kld_base_path()):
        from harness.quality import measure as quality

        q = ctx.section.quality  # the reference's logits: exact for this many chunks (harness.quality.measure.base_bytes)
        est.add(ctx.kld_base_path().name, quality.base_bytes(ctx=q.ctx, chunks=q.chunks, vocab=vocab))
    return est


def check_disk(est: Estimate, where: Path, free: FreeSpace = free_space) -> int:
    """Refuse (InputError) when ``where`` lacks the room ``est`` needs; returns the free bytes."""
    available = free(where)
    needed = int(est.total * MARGIN) + (HEADROOM if est.total else 0)
    if needed > available:
        parts = ", ".join(f"{what} {_gib(n)}" for what, n in est.items)
        raise InputError(
            f"not enough disk space in {where}: this run needs about {_gib(needed)} ({parts}), "
            f"only {_gib(available)} is free",
            hint="free some space, or write elsewhere with --out DIR",
        )
    return available


def check_draft(ctx: Context) -> None:
    """The recipe's local draft file exists (the draft step runs last, after hours of quantizing)."""
    local = ctx.recipe.draft_path() if ctx.wants("draft") else None
    made_here = local is not None and local.resolve().parent == ctx.out.resolve()  # an MTP head this run writes
    if local is not None and not made_here and not local.is_file():
        assert ctx.recipe.spec.draft is not None
        raise InputError(f"{ctx.recipe.path}: draft.source {ctx.recipe.spec.draft.source}: no such file ({local})",
                         hint="fix draft.source, or remove draft: from the recipe")


def run(ctx: Context, free: FreeSpace = free_space) -> Estimate:
    """All checks; for a Hub source it fetches config.json and sizes the download first."""
    check_tools(ctx)
    check_draft(ctx)
    download = 0
    if ctx.source.gguf:
        assert ctx.source.path is not None
        params, mtp_layers, ctx.trunk_layers = _gguf_source(ctx.source.path)
        check_options(ctx, mtp_layers)
        vocab = _gguf_vocab(ctx.source.path) if ctx.wants("quality") else 0
        est = estimate(ctx, params=params, mtp_layers=mtp_layers, download=0, vocab=vocab)
        check_disk(est, ctx.out, free)
        return est
    if ctx.source.path is not None:
        ckpt = ctx.checkpoint or checkpoint.read(ctx.source.path)
        ctx.checkpoint = ckpt
        config, params, mtp_layers = ckpt.config, ckpt.params, ckpt.mtp_layers
    else:
        config, params, mtp_layers, download = _remote(ctx)
    ctx.trunk_layers = _layers(config)
    if config:  # (empty: offline with nothing downloaded yet; the download step explains)
        check_architecture(ctx, config)
    check_options(ctx, mtp_layers)
    est = estimate(ctx, params=params, mtp_layers=mtp_layers, download=download, vocab=_vocab(config))
    check_disk(est, ctx.out, free)
    return est


def _gguf_source(path: Path) -> tuple[int, int, int]:
    """Parameters, MTP layers and trunk layers of a GGUF source (the whole set when it is split)."""
    from harness.gguf_files import mtp
    from harness.gguf_files.split import open_model

    with open_model(path) as gf:
        lay = mtp.layout(gf)
        return sum(t.n_elements for t in gf.tensors), lay.nextn, max(lay.trunk_layers, 1)


def _remote(ctx: Context) -> tuple[dict[str, Any], int, int, int]:
    dest = ctx.hf_download_dir
    side = cache.read_sidecar(dest)
    same = side is not None and side.get("revision") == ctx.revision and not ctx.force
    if (ctx.revision is None or same) and (dest / "config.json").exists() and list(dest.glob("*.safetensors")):
        ckpt = checkpoint.read(dest)  # downloaded before: nothing to fetch
        return ckpt.config, ckpt.params, ckpt.mtp_layers, 0
    if ctx.revision is None:
        return {}, 0, 0, 0  # offline, nothing downloaded: the download step says so
    config = checkpoint.read_config(source.fetch_config(ctx.source.spec, ctx.revision, dest).parent)
    need, files = source.plan_download(ctx.source.spec, ctx.revision, dest)
    ctx.remote_files = files
    params = source.remote_parameters(ctx.source.spec, ctx.revision)
    mtp = next((int(config.get(k) or 0) for k in checkpoint.MTP_KEYS if config.get(k)), 0)
    console.info(f"{ctx.source.spec}@{ctx.revision[:12]}: {len(files)} files, {_gib(need)} to download")
    return config, params, mtp, need


def _gguf_vocab(path: Path) -> int:
    from harness.quality import measure as quality

    try:
        return quality.n_vocab(path)
    except InputError:
        return 0  # no tokenizer: the quality step says so


def _vocab(config: dict[str, Any]) -> int:
    for cfg in (config, config.get("text_config") or {}):
        n = cfg.get("vocab_size")
        if isinstance(n, int) and 0 < n < 1 << 24:
            return n
    return 0


def _layers(config: dict[str, Any]) -> int:
    for cfg in (config, config.get("text_config") or {}):
        n = cfg.get("num_hidden_layers") or cfg.get("n_layer") or cfg.get("num_layers")
        if isinstance(n, int) and n > 0:
            return n
    return 1


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**28 else f"{n / 2**20:.1f} MiB"
