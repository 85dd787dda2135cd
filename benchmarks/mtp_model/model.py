"""A compact Qwen3.5 text model with one MTP layer, in plain PyTorch, for training.

Parameter names, shapes and arithmetic are those of transformers' ``Qwen3_5ForCausalLM``
(``modeling_qwen3_5.py``: zero-centred RMSNorm ``x * (1 + w)``, gated full attention with
partial rotary, gated delta net linear attention with a causal depthwise conv and a gated
RMSNorm), so ``state_dict()`` is a checkpoint that transformers loads and that
``convert_hf_to_gguf.py`` converts (``check.py`` compares the logits with transformers').
Only torch is needed, so the GPU machine runs it whatever transformers it has.

The MTP layer follows llama.cpp's ``graph_mtp`` (``src/models/qwen35.cpp``) and the converter's
names (``conversion/qwen.py``: ``mtp.fc`` -> ``nextn.eh_proj``, ``mtp.pre_fc_norm_embedding``
-> ``enorm``, ``mtp.pre_fc_norm_hidden`` -> ``hnorm``, ``mtp.norm`` -> ``shared_head.norm``,
``mtp.layers.0.*`` a full-attention decoder layer): for the pair (trunk hidden state h_t after
the final norm, token x_{t+1}) at position t+1 it computes
``fc([enorm(embed(x_{t+1})), hnorm(h_t)])``, one decoder layer that attends causally over
earlier pairs, ``mtp.norm`` and the tied LM head, and predicts x_{t+2}.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Config:
    vocab_size: int = 151936
    hidden_size: int = 256
    num_hidden_layers: int = 8
    intermediate_size: int = 1024
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    head_dim: int = 64
    linear_num_key_heads: int = 2
    linear_num_value_heads: int = 4
    linear_key_head_dim: int = 64
    linear_value_head_dim: int = 64
    linear_conv_kernel_dim: int = 4
    full_attention_interval: int = 4
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10_000_000.0
    partial_rotary_factor: float = 0.25
    mrope_section: list[int] = field(default_factory=lambda: [3, 3, 2])
    mtp_num_hidden_layers: int = 1

    @property
    def layer_types(self) -> list[str]:
        k = self.full_attention_interval
        return [
            "full_attention" if (i + 1) % k == 0 else "linear_attention"
            for i in range(self.num_hidden_layers)
        ]

    def to_json(self) -> dict[str, object]:
        return asdict(self)


class RMSNorm(nn.Module):
    """Zero-centred: ``x / rms(x) * (1 + w)``, computed in float32."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).type_as(x)


class GatedRMSNorm(nn.Module):
    """``w * x / rms(x) * silu(z)`` (the gated delta net's output norm; plain weight, ones)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        y = self.weight * y.to(dtype)
        return (y * F.silu(z.float())).to(dtype)


def rope(cfg: Config, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape [B, L, rot_dim] (text positions: every mrope section sees the same one)."""
    rot = int(cfg.head_dim * cfg.partial_rotary_factor)
    inv = 1.0 / (
        cfg.rope_theta ** (torch.arange(0, rot, 2, dtype=torch.float32, device=positions.device) / rot)
    )
    freqs = positions[..., None].float() * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, L, D]; the first rot_dim dims rotate (rotate-half), the rest pass."""
    rot = cos.shape[-1]
    cos, sin = cos[:, None], sin[:, None]
    xr, xp = x[..., :rot], x[..., rot:]
    half = rot // 2
    rotated = torch.cat((-xr[..., half:], xr[..., :half]), dim=-1)
    return torch.cat((xr * cos + rotated * sin, xp), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_attention_heads * d * 2, bias=False)
        self.k_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
        self.v_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * d, h, bias=False)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        d = self.cfg.head_dim
        q, gate = torch.chunk(self.q_proj(x).view(b, n, -1, 2 * d), 2, dim=-1)
        gate = gate.reshape(b, n, -1)
        q = self.q_norm(q).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, -1, d)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, -1, d).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        rep = self.cfg.num_attention_heads // self.cfg.num_key_value_heads
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=d**-0.5)
        out = out.transpose(1, 2).reshape(b, n, -1) * torch.sigmoid(gate)
        return self.o_proj(out)


def chunk_gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, chunk: int = 64
) -> torch.Tensor:
    """The gated delta rule over a whole sequence, chunk by chunk (float32).

    q, k: [B, L, H, Dk] (already repeated to the value heads), v: [B, L, H, Dv], g (log decay,
    <= 0) and beta: [B, L, H].  q and k are L2-normalised here and q scaled by Dk^-0.5.
    Returns [B, L, H, Dv].  Per token: S <- S * exp(g); S <- S + k (beta (v - S^T k))^T;
    o = S^T q.  The UT transform solves each chunk's updates with one triangular solve.
    """
    with torch.autocast(q.device.type, enabled=False):  # the triangular solve needs float32 throughout
        return _chunk_gated_delta_rule(q, k, v, g, beta, chunk)


def _chunk_gated_delta_rule(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, g: torch.Tensor, beta: torch.Tensor, chunk: int
) -> torch.Tensor:
    dtype = q.dtype
    q, k, v, beta, g = (t.transpose(1, 2).float() for t in (q, k, v, beta, g))
    q = q * torch.rsqrt((q * q).sum(-1, keepdim=True) + 1e-6)
    k = k * torch.rsqrt((k * k).sum(-1, keepdim=True) + 1e-6)
    q = q * q.shape[-1] ** -0.5
    b, h, n, dk = k.shape
    dv = v.shape[-1]
    pad = (chunk - n % chunk) % chunk
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    beta, g = F.pad(beta, (0, pad)), F.pad(g, (0, pad))
    m = (n + pad) // chunk
    v_beta = (v * beta[..., None]).view(b, h, m, chunk, dv)
    k_beta = (k * beta[..., None]).view(b, h, m, chunk, dk)
    q, k = q.view(b, h, m, chunk, dk), k.view(b, h, m, chunk, dk)
    cum = g.view(b, h, m, chunk).cumsum(-1)
    idx = torch.arange(chunk, device=q.device)
    upper, strictly_lower = idx[:, None] < idx[None, :], idx[:, None] > idx[None, :]
    decay = (cum[..., :, None] - cum[..., None, :]).masked_fill(upper, float("-inf")).exp()
    ut = (k_beta @ k.transpose(-1, -2)) * decay
    ut = ut.masked_fill(~strictly_lower, 0.0) + torch.eye(chunk, device=q.device)
    new_v = torch.linalg.solve_triangular(ut, v_beta, upper=False, unitriangular=True)
    k_cum = torch.linalg.solve_triangular(ut, k_beta * cum.exp()[..., None], upper=False, unitriangular=True)
    intra = (q @ k.transpose(-1, -2)) * decay
    q = q * cum.exp()[..., None]
    k = k * (cum[..., -1:] - cum).exp()[..., None]
    chunk_decay = cum[..., -1].exp()[..., None, None]
    state = q.new_zeros(b, h, dk, dv)
    outs = []
    for i in range(m):
        v_new = new_v[:, :, i] - k_cum[:, :, i] @ state
        outs.append(q[:, :, i] @ state + intra[:, :, i] @ v_new)
        state = state * chunk_decay[:, :, i] + k[:, :, i].transpose(-1, -2) @ v_new
    out = torch.stack(outs, dim=2).view(b, h, m * chunk, dv)[:, :, :n]
    return out.transpose(1, 2).to(dtype)


class GatedDeltaNet(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.key_dim = cfg.linear_key_head_dim * cfg.linear_num_key_heads
        self.value_dim = cfg.linear_value_head_dim * cfg.linear_num_value_heads
        conv_dim = 2 * self.key_dim + self.value_dim
        kernel = cfg.linear_conv_kernel_dim
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel, groups=conv_dim, bias=False, padding=kernel - 1)
        self.dt_bias = nn.Parameter(torch.ones(cfg.linear_num_value_heads))
        self.A_log = nn.Parameter(torch.empty(cfg.linear_num_value_heads).uniform_(1.0, 16.0).log())
        self.norm = GatedRMSNorm(cfg.linear_value_head_dim, cfg.rms_norm_eps)
        self.out_proj = nn.Linear(self.value_dim, cfg.hidden_size, bias=False)
        self.in_proj_qkv = nn.Linear(cfg.hidden_size, conv_dim, bias=False)
        self.in_proj_z = nn.Linear(cfg.hidden_size, self.value_dim, bias=False)
        self.in_proj_b = nn.Linear(cfg.hidden_size, cfg.linear_num_value_heads, bias=False)
        self.in_proj_a = nn.Linear(cfg.hidden_size, cfg.linear_num_value_heads, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self.cfg
        b, n, _ = x.shape
        mixed = self.conv1d(self.in_proj_qkv(x).transpose(1, 2))[..., :n]
        mixed = F.silu(mixed).transpose(1, 2)
        q, k, v = torch.split(mixed, [self.key_dim, self.key_dim, self.value_dim], dim=-1)
        q = q.reshape(b, n, -1, cfg.linear_key_head_dim)
        k = k.reshape(b, n, -1, cfg.linear_key_head_dim)
        v = v.reshape(b, n, -1, cfg.linear_value_head_dim)
        beta = torch.sigmoid(self.in_proj_b(x))
        g = -self.A_log.float().exp() * F.softplus(self.in_proj_a(x).float() + self.dt_bias)
        rep = cfg.linear_num_value_heads // cfg.linear_num_key_heads
        q, k = q.repeat_interleave(rep, dim=2), k.repeat_interleave(rep, dim=2)
        out = chunk_gated_delta_rule(q, k, v, g, beta)
        z = self.in_proj_z(x).reshape(b, n, -1, cfg.linear_value_head_dim)
        out = self.norm(out, z).reshape(b, n, -1)
        return self.out_proj(out)


class MLP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: Config, kind: str) -> None:
        super().__init__()
        self.kind = kind
        if kind == "linear_attention":
            self.linear_attn = GatedDeltaNet(cfg)
        else:
            self.self_attn = Attention(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        y = self.input_layernorm(x)
        y = self.linear_attn(y) if self.kind == "linear_attention" else self.self_attn(y, cos, sin)
        x = x + y
        return x + self.mlp(self.post_attention_layernorm(x))


class TextModel(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(cfg, kind) for kind in cfg.layer_types)
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class MTP(nn.Module):
    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.fc = nn.Linear(2 * cfg.hidden_size, cfg.hidden_size, bias=False)
        self.pre_fc_norm_embedding = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.pre_fc_norm_hidden = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.layers = nn.ModuleList([DecoderLayer(cfg, "full_attention")])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


class Qwen35MTP(nn.Module):
    """``model.*`` (trunk), ``mtp.*`` (the MTP layer); the LM head is tied to the embeddings."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = TextModel(cfg)
        self.mtp = MTP(cfg)
        self._init()

    def _init(self) -> None:
        std = 0.02
        n = self.cfg.num_hidden_layers + 1
        for name, p in self.named_parameters():
            if name.endswith(("o_proj.weight", "out_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * n))
            elif name.endswith(("proj.weight", "embed_tokens.weight", "fc.weight")):
                nn.init.normal_(p, std=std)

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """The trunk's hidden states after the final norm: [B, L, H] (llama.cpp's h_nextn)."""
        x = self.model.embed_tokens(ids)
        pos = torch.arange(ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        cos, sin = rope(self.cfg, pos, x.dtype)
        for layer in self.model.layers:
            x = layer(x, cos, sin)
        return self.model.norm(x)

    def mtp_hidden(self, h: torch.Tensor, next_ids: torch.Tensor, first_pos: int = 1) -> torch.Tensor:
        """The MTP layer's output after ``mtp.norm`` for pairs (h[:, i], next_ids[:, i]) at
        positions first_pos + i: [B, N, H]."""
        m = self.mtp
        e = m.pre_fc_norm_embedding(self.model.embed_tokens(next_ids))
        x = m.fc(torch.cat([e, m.pre_fc_norm_hidden(h)], dim=-1))
        pos = torch.arange(first_pos, first_pos + x.shape[1], device=x.device).expand(x.shape[0], -1)
        cos, sin = rope(self.cfg, pos, x.dtype)
        return m.norm(m.layers[0](x, cos, sin))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.model.embed_tokens.weight.t().to(h.dtype)

    def hf_state_dict(self) -> dict[str, torch.Tensor]:
        """The checkpoint under Qwen3.5's names (no ``lm_head.weight``: tied)."""
        return {k: v.detach() for k, v in self.state_dict().items()}
