"""FLOPs estimates of one attention / cross-attention / MLP call from its module's linear layers.

Counted: multiply-adds x2 of every `nn.Linear` on the tokens it sees, plus the
attention products (4·Nq·Nk·inner for softmax attention, 4·N·inner·head_dim for
Sana's linear attention). Norms, activations and the adaLN path are left out: they
are per-token elementwise work or per-sample, small next to these.
"""

from __future__ import annotations

import torch

_QUERY = ("to_q", "to_out")  # on each query token
_KEY = ("to_k", "to_v")  # on each key/value token
_TEXT = ("add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")  # on each text token (joint attention)


def is_linear_attention(attn: torch.nn.Module) -> bool:
    """True for linear attention (Sana's `SanaLinearAttnProcessor*`: relu(q)·relu(k), no softmax)."""
    return "Linear" in type(getattr(attn, "processor", None)).__name__


def _linear_macs(module: torch.nn.Module, prefixes: tuple[str, ...] | None = None) -> int:
    total = 0
    for name, sub in module.named_modules():
        if isinstance(sub, torch.nn.Linear) and (prefixes is None or name.split(".")[0] in prefixes):
            total += sub.in_features * sub.out_features
    return total


class SublayerCost:
    """FLOPs of one sub-layer as a function of its token counts."""

    def __init__(self, module: torch.nn.Module, kind: str):
        self.kind = kind
        if kind == "mlp":
            self.per_token = 2 * _linear_macs(module)
            return
        self.per_query = 2 * _linear_macs(module, _QUERY)
        self.per_key = 2 * _linear_macs(module, _KEY)
        self.per_text = 2 * _linear_macs(module, _TEXT)
        to_q = getattr(module, "to_q", None)
        self.inner = to_q.out_features if isinstance(to_q, torch.nn.Linear) else 0
        heads = int(getattr(module, "heads", 1) or 1)
        self.head_dim = self.inner // heads
        self.linear_attention = is_linear_attention(module)

    def __call__(self, n: int, text: int = 0, keys: int | None = None) -> int:
        """FLOPs for `n` image tokens, `text` text tokens joined in (joint attention / prefix) and,
        for cross-attention, `keys` encoder tokens."""
        if self.kind == "mlp":
            return self.per_token * (n + text)
        if keys is not None:  # cross-attention over `keys` text tokens
            return n * self.per_query + keys * self.per_key + 4 * n * keys * self.inner
        s = n + text
        if self.per_text:  # joint attention: text tokens have their own projections
            linear = n * (self.per_query + self.per_key) + text * self.per_text
        else:  # text (if any) is a prefix of the same sequence
            linear = s * (self.per_query + self.per_key)
        if self.linear_attention:
            return linear + 4 * s * self.inner * self.head_dim
        return linear + 4 * s * s * self.inner
