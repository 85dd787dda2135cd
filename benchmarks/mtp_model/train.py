"""Train the trunk and its MTP layer together; write the weights Q8-packed in parts.

Next-token loss on the trunk plus ``--mtp-weight`` times the MTP layer's loss on token t+2
(from the trunk's hidden state at t and the embedding of t+1, see model.py), AdamW, a fixed
seed, linear warm-up then cosine decay.  The step count is ``--steps``, or as many steps as
fit in ``--minutes`` (timed over the first steps; the count is recorded in meta.json, and
``--steps`` with that count repeats the schedule).

Outputs in ``--out``: ``weights.part0..N`` (one safetensors file split into parts of at most
``--part-mib``: every 2-D weight as Q8_0 blocks of 32 (int8 ``<name>.q8`` + float16
``<name>.d``), the rest float32; ``unpack.py`` turns them into the HF checkpoint),
``meta.json`` (config, steps, losses, per-category agreement of the MTP draft with the trunk
on held-out conversations) and ``train.log``.

Usage: ``python train.py --data DIR --tokenizer tokenizer.json.xz --out DIR [--minutes M | --steps N]``
(``--tiny`` for a CPU smoke run).  Needs torch, safetensors and tokenizers only.
"""

from __future__ import annotations

import argparse
import json
import lzma
import math
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from model import Config, Qwen35MTP

T0 = time.monotonic()
ASSISTANT = "<|im_start|>assistant\n"
CATEGORIES = ("code", "json", "quote", "creative")


def log(msg: str, fh: object = None) -> None:
    line = f"[{time.monotonic() - T0:7.1f}s] {msg}"
    print(line, flush=True)
    if fh is not None:
        fh.write(line + "\n")  # type: ignore[attr-defined]
        fh.flush()  # type: ignore[attr-defined]


def load_rows(path: Path) -> list[dict[str, str]]:
    return [json.loads(line) for line in lzma.decompress(path.read_bytes()).decode().splitlines() if line]


def load_tokenizer(path: Path):  # type: ignore[no-untyped-def]
    from tokenizers import Tokenizer

    raw = path.read_bytes()
    return Tokenizer.from_str((lzma.decompress(raw) if path.suffix == ".xz" else raw).decode())


def packed_batches(samples: list[list[int]], batch: int, seq: int, seed: int, device: torch.device):
    """Endless batches [batch, seq]: samples shuffled each epoch and packed end to end."""
    rng = random.Random(seed)
    arrays = [np.asarray(s, dtype=np.int64) for s in samples]
    epoch = 0
    while True:
        order = list(range(len(arrays)))
        rng.shuffle(order)
        stream = torch.from_numpy(np.concatenate([arrays[i] for i in order]))
        rows = stream[: (len(stream) // seq) * seq].view(-1, seq)
        perm = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(rows) - batch + 1, batch):
            yield epoch, rows[perm[i : i + batch]].to(device, non_blocking=True)
        epoch += 1


def losses(model: Qwen35MTP, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(next-token loss, MTP loss on t+2), both mean cross-entropies over the batch."""
    h = model.hidden(ids)
    logits = model.logits(h[:, :-1]).float()
    main = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1))
    del logits
    m = model.mtp_hidden(h[:, :-2], ids[:, 1:-1])
    mlogits = model.logits(m).float()
    mtp = F.cross_entropy(mlogits.reshape(-1, mlogits.shape[-1]), ids[:, 2:].reshape(-1))
    return main, mtp


@torch.no_grad()
def evaluate(
    model: Qwen35MTP, valid: list[tuple[str, list[int], int]], device: torch.device, amp: bool
) -> dict:
    """Per category over the answers of held-out conversations: the trunk's and the MTP's
    losses, the MTP's top-1 accuracy on t+2, and how often the MTP's top-1 equals the trunk's
    own top-1 one step later (a depth-1 draft the trunk would accept, on the true prefix)."""
    model.eval()
    acc: dict[str, list[float]] = {}
    for cat, ids, start in valid:
        x = torch.tensor([ids], device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            h = model.hidden(x)
            logits = model.logits(h).float()
            m = model.mtp_hidden(h[:, :-2], x[:, 1:-1])
            mlogits = model.logits(m).float()
        s = max(start - 1, 0)  # pair (h_t, x_{t+1}) predicts x_{t+2}; score answers only
        tgt_main, tgt_mtp = x[0, s + 1 :], x[0, s + 2 :]
        main = F.cross_entropy(logits[0, s:-1], tgt_main, reduction="sum").item()
        mtp = F.cross_entropy(mlogits[0, s:], tgt_mtp, reduction="sum").item()
        draft = mlogits[0, s:].argmax(-1)
        top1 = (draft == tgt_mtp).sum().item()
        agree = (draft == logits[0, s + 1 : -1].argmax(-1)).sum().item()
        n_main, n_mtp = len(tgt_main), len(tgt_mtp)
        rec = acc.setdefault(cat, [0.0] * 6)
        for i, v in enumerate((main, n_main, mtp, n_mtp, top1, agree)):
            rec[i] += v
    model.train()
    out = {}
    for cat in sorted(acc, key=lambda c: CATEGORIES.index(c) if c in CATEGORIES else 99):
        main, n_main, mtp, n_mtp, top1, agree = acc[cat]
        out[cat] = {"loss": main / n_main, "mtp_loss": mtp / n_mtp, "mtp_top1": top1 / n_mtp,
                    "mtp_agrees_with_trunk": agree / n_mtp, "tokens": int(n_mtp)}  # fmt: skip
    return out


def q8_pack(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """2-D weights with rows divisible into blocks of 32 as Q8_0 (ggml's quantize_row_q8_0:
    d = max|x| / 127 in float16, q = round(x / d)); everything else float32."""
    packed = {}
    for name, w in state.items():
        w = w.detach().float().cpu()
        if w.dim() == 2 and w.shape[1] % 32 == 0:
            blocks = w.view(w.shape[0], -1, 32)
            d = blocks.abs().amax(-1) / 127.0
            inv = torch.where(d > 0, 1.0 / d, torch.zeros_like(d))
            packed[name + ".q8"] = (
                (blocks * inv[..., None]).round().clamp(-127, 127).to(torch.int8).view_as(w)
            )
            packed[name + ".d"] = d.half()
        else:
            packed[name] = w.contiguous()
    return packed


def write_parts(tensors: dict[str, torch.Tensor], out: Path, part_mib: float) -> list[str]:
    from safetensors.torch import save

    blob = save(tensors, metadata={"format": "q8-packed", "packer": "benchmarks/mtp_model/train.py"})
    size = int(part_mib * 2**20)
    names = []
    for i in range(0, len(blob), size):
        name = f"weights.part{i // size}"
        (out / name).write_bytes(blob[i : i + size])
        names.append(name)
    return names


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="train.jsonl.xz and valid.jsonl.xz (data.py)")
    ap.add_argument("--tokenizer", type=Path, required=True, help="tokenizer.json (or .json.xz)")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=7.0, help="training time when --steps is not given")
    ap.add_argument("--steps", type=int, help="a fixed number of optimizer steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--mtp-weight", type=float, default=0.5)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--part-mib", type=float, default=15.0)
    ap.add_argument("--tiny", action="store_true", help="a small config and few samples, for a CPU smoke run")
    ap.add_argument("--amp", action="store_true", help="bfloat16 autocast on the CPU too (what CUDA runs)")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    fh = open(args.out / "train.log", "a")  # noqa: SIM115 (open for the whole run)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = device.type == "cuda" or args.amp
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    log(
        f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}",
        fh,
    )

    tok = load_tokenizer(args.tokenizer)
    train_rows = load_rows(args.data / "train.jsonl.xz")
    valid_rows = load_rows(args.data / "valid.jsonl.xz")
    if args.tiny:
        train_rows, valid_rows = train_rows[:400], valid_rows[:8]
    samples = [e.ids for e in tok.encode_batch([r["text"] for r in train_rows], add_special_tokens=False)]
    valid = []
    for r in valid_rows:
        ids = tok.encode(r["text"], add_special_tokens=False).ids[: args.seq]
        head = tok.encode(
            r["text"][: r["text"].index(ASSISTANT) + len(ASSISTANT)], add_special_tokens=False
        ).ids
        if len(ids) > len(head) + 8:
            valid.append((r["cat"], ids, len(head)))
    n_tokens = sum(map(len, samples))
    log(f"{len(samples)} training conversations, {n_tokens:,} tokens; {len(valid)} held out", fh)

    cfg = Config(num_hidden_layers=args.layers)
    if args.tiny:
        cfg = Config(hidden_size=64, num_hidden_layers=4, intermediate_size=128, head_dim=32,
                     linear_key_head_dim=32, linear_value_head_dim=32)  # fmt: skip
        args.batch, args.seq = min(args.batch, 2), min(args.seq, 128)
    model = Qwen35MTP(cfg).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    n_embd = model.model.embed_tokens.weight.numel()
    log(f"config {json.dumps(cfg.to_json())}", fh)
    log(f"{n_params:,} parameters ({n_embd:,} in the tied embeddings)", fh)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": other, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda")  # fmt: skip

    batches = packed_batches(samples, args.batch, args.seq, args.seed, device)
    total = args.steps or 10**9
    deadline = time.monotonic() + args.minutes * 60
    history: list[dict[str, float]] = []
    step, epoch, t_calib = 0, 0, None
    ema_main = ema_mtp = None
    error = None
    try:
        while step < total:
            lr = args.lr * min(1.0, (step + 1) / args.warmup)
            if step >= args.warmup and total < 10**9:
                frac = (step - args.warmup) / max(1, total - args.warmup)
                lr = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))
            for group in opt.param_groups:
                group["lr"] = lr
            epoch, ids = next(batches)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                main, mtp = losses(model, ids)
                loss = main + args.mtp_weight * mtp
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            step += 1
            if step % 25 == 0 or step == 1:
                mv, tv = main.item(), mtp.item()
                ema_main = mv if ema_main is None else 0.9 * ema_main + 0.1 * mv
                ema_mtp = tv if ema_mtp is None else 0.9 * ema_mtp + 0.1 * tv
            if step == 10:
                t_calib = time.monotonic()
            if step == 40 and args.steps is None and t_calib is not None:
                per_step = (time.monotonic() - t_calib) / 30
                total = max(step + 1, 10 + int((deadline - t_calib) / per_step * 0.97))
                log(
                    f"{per_step * 1000:.1f} ms/step, {args.batch * args.seq / per_step:,.0f} tokens/s: {total} steps",
                    fh,
                )
            if step % 200 == 0 or step == total:
                history.append({"step": step, "epoch": epoch, "loss": round(ema_main or 0, 4),
                                "mtp_loss": round(ema_mtp or 0, 4), "lr": lr})  # fmt: skip
                log(
                    f"step {step}/{total} epoch {epoch} loss {ema_main:.3f} mtp {ema_mtp:.3f} lr {lr:.2e}", fh
                )
            if args.steps is None and time.monotonic() > deadline + 30:
                log("past the deadline: stopping", fh)
                break
    except Exception:  # keep what was trained; the log says what broke
        error = traceback.format_exc()
        log(f"training stopped by an error at step {step}:\n{error}", fh)
        if step < 50:
            raise
    train_s = time.monotonic() - T0
    metrics = evaluate(model, valid, device, amp)
    for cat, m in metrics.items():
        log(
            f"held out {cat:8s} "
            + " ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items()),
            fh,
        )
    parts = write_parts(q8_pack(model.hf_state_dict()), args.out, args.part_mib)
    meta = {
        "config": cfg.to_json(),
        "seed": args.seed,
        "steps": step,
        "epochs": epoch,
        "batch": args.batch,
        "seq": args.seq,
        "lr": args.lr,
        "warmup": args.warmup,
        "mtp_weight": args.mtp_weight,
        "train_tokens": n_tokens,
        "parameters": n_params,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "seconds": round(train_s, 1),
        "history": history,
        "held_out": metrics,
        "parts": parts,
        "error": error,
        "data_manifest": json.loads((args.data / "manifest.json").read_text())
        if (args.data / "manifest.json").exists()
        else None,
    }
    (args.out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    log(f"wrote {', '.join(parts)} and meta.json to {args.out}", fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
