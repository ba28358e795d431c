"""bfloat16 Linear layers with weights packed once for oneDNN (AMX / AVX512-BF16 CPUs).

Why: on a 2-core CPU the extractor's cost is its Linear layers. In float32 a question's prompt
(50-130 tokens) runs at ~230 GFLOPS; the same matmuls in bfloat16 with the weight reordered once
into oneDNN's blocked layout run 5-8x faster at 50-112 rows, and a one-token decode step reads half
the bytes. Activations stay float32 between layers (only the matmul inputs are rounded), so values
stay closer to the float32 model than a whole-model `.to(torch.bfloat16)`.

Uses `torch.ops.mkldnn._reorder_linear_weight` / `_linear_pointwise`, the ops PyTorch's own
inductor emits for frozen CPU Linear layers (torch is pinned in constraints.txt).
"""

from __future__ import annotations

import functools
from typing import Any


def bf16_matmul_available() -> bool:
    """This torch build can pack Linear weights for oneDNN and the CPU runs bfloat16 matmuls natively."""
    import torch

    ops = getattr(torch.ops, "mkldnn", None)
    if ops is None or not torch.backends.mkldnn.is_available():
        return False
    try:
        ops._reorder_linear_weight, ops._linear_pointwise  # noqa: B018 (resolving them is the check)
    except (AttributeError, RuntimeError):
        return False
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def packed_linear_class() -> type:
    """The module that stands in for an `nn.Linear` (inference only): y = x @ W.T + b, W packed in bfloat16.
    Built on first use so that importing this module does not import torch."""
    import torch

    class PackedBf16Linear(torch.nn.Module):
        def __init__(self, linear: torch.nn.Linear):
            super().__init__()
            self.in_features, self.out_features = linear.in_features, linear.out_features
            weight = linear.weight.detach().to(torch.bfloat16)
            self.register_buffer("packed", torch.ops.mkldnn._reorder_linear_weight(weight), persistent=False)
            bias = None if linear.bias is None else linear.bias.detach().float()
            self.register_buffer("bias", bias, persistent=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), self.packed, None, "none", [], "").to(x.dtype)
            return y if self.bias is None else y + self.bias

        def extra_repr(self) -> str:
            return f"in_features={self.in_features}, out_features={self.out_features}, packed bfloat16"

    return PackedBf16Linear


def pack_linears_bf16(model: Any) -> int:
    """Replace every `nn.Linear` of `model` (in place) by a packed bfloat16 one; returns how many. Raises when
    this torch/CPU cannot (the caller asked for bf16 explicitly: never a silent float32 fallback)."""
    import torch

    if not bf16_matmul_available():
        raise RuntimeError("bfloat16 extraction needs a CPU with AVX512-BF16 or AMX and a torch build with oneDNN; "
                           "this machine has neither: set `models.extractor_bf16` to 'questions' (float32 here) or 'off'")
    packed, replaced = packed_linear_class(), 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, torch.nn.Linear):
                setattr(module, name, packed(child))
                replaced += 1
    return replaced
