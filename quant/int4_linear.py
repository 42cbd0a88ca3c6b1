"""Int4Linear: a Linear layer whose weight is symmetric INT4 in groups (W4A16), held packed.

In memory it holds one packed copy of q (never a float weight): in torch's INT4 matmul layout
when that op takes the weight on this device (int4_matmul.py), with the per-group
`scales_and_zeros` [K/g, N, 2] the op reads; otherwise compressed-tensors' int32 words with the
scales [N, K/g], dequantized at each forward (the fallback: group sizes the op refuses, N not a
multiple of 16 on CPU, float64 scales). Moving the module (`.to(device)`, `.to(dtype)`) re-packs
it for the new place when the layout must change.

Its state dict is compressed-tensors' `pack-quantized` layout, whatever the layout in memory:

    <name>.weight_packed  int32 [N, ceil(K/8)]   (int32_packing.py)
    <name>.weight_scale   [N, K/group_size]      in the model's dtype
    <name>.weight_shape   int64 [2] = [N, K]
    <name>.bias           [N]                    (when the layer has one)

so `save_pretrained`-style writers and `load_state_dict` speak the interchange format directly.
Inference only: the packed weight has no gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .int4 import check_groups, dequantize_int4, quantize_int4
from .int4_matmul import decode, int4_matmul, kernel_for, pack_for_kernel, scales_and_zeros
from .int32_packing import pack_int4_rows, unpack_int4_rows

STATE_KEYS = ("weight_packed", "weight_scale", "weight_shape")


class Int4Linear(nn.Module):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        group_size: int = 32,
        bias: bool = False,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ):
        super().__init__()
        check_groups((out_features, in_features), group_size)
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.kernel: str | None = None  # 'cpu' / 'cuda': torch's packed op; None: dequantize fallback
        device = torch.device(device or "cpu")
        self.register_buffer("packed", torch.empty(0, device=device), persistent=False)
        self.register_buffer("scales", torch.empty(0, dtype=dtype, device=device), persistent=False)
        self.register_parameter(
            "bias", nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        )
        q = torch.zeros(out_features, in_features, dtype=torch.int8, device=device)
        self.set_quantized(q, torch.ones(out_features, in_features // group_size, dtype=dtype, device=device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 32) -> Int4Linear:
        """PTQ of one layer: its weight quantized (quantize_int4), scales kept in the weight's dtype
        (lossless: they were computed in it), the bias copied."""
        w = linear.weight.detach()
        module = cls(
            linear.in_features, linear.out_features, group_size, linear.bias is not None, w.dtype, w.device
        )
        q, scale = quantize_int4(w, group_size)
        module.set_quantized(q, scale.to(w.dtype))
        if linear.bias is not None:
            module.bias.data.copy_(linear.bias.detach())
        return module

    # --- the packed weight ------------------------------------------------------------------
    def set_quantized(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        """Hold q int8 [N, K] and scale [N, K/g] (on scale's device, in its dtype), packed for the
        matmul this device and dtype take."""
        n, k, g = self.out_features, self.in_features, self.group_size
        if tuple(q.shape) != (n, k) or tuple(scale.shape) != (n, k // g):
            raise ValueError(
                f"Int4Linear({k} -> {n}, group {g}) takes q [{n}, {k}] and scale [{n}, {k // g}], "
                f"got {tuple(q.shape)} and {tuple(scale.shape)}"
            )
        q = q.to(scale.device)
        self.kernel = kernel_for(scale.device, n, k, g, scale.dtype)
        if self.kernel is None:
            self.packed, self.scales = pack_int4_rows(q), scale.contiguous()
        else:
            self.packed, self.scales = pack_for_kernel(q, self.kernel), scales_and_zeros(scale)

    def int_weight(self) -> torch.Tensor:
        """q int8 [N, K] in [-8, 7]."""
        if self.kernel is None:
            return unpack_int4_rows(self.packed, self.in_features)
        return decode(self.packed, self.kernel, self.out_features, self.in_features, self.group_size)

    def weight_scale(self) -> torch.Tensor:
        """scale [N, K/g] in the module's dtype."""
        return self.scales if self.kernel is None else self.scales[..., 0].t()

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized weight [N, K] (q * scale), computed on each access: for code that reads
        a projection's matrix (MLA's absorbed decode folds kv_b_proj.weight into the query)."""
        return dequantize_int4(self.int_weight(), self.weight_scale(), self.group_size)

    def packed_bytes(self) -> int:
        """Bytes of this layer in a checkpoint: weight_packed + weight_scale + weight_shape (+ bias).
        In memory the kernel path holds one zero beside each scale as well."""
        n, k = self.out_features, self.in_features
        scale = n * (k // self.group_size) * self.scales.element_size()
        bias = 0 if self.bias is None else self.bias.numel() * self.bias.element_size()
        return n * (-(-k // 8)) * 4 + scale + 2 * 8 + bias

    # --- forward ----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., K] -> [..., N], computed in the scales' dtype and returned in x's."""
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.scales.dtype)  # [M, K]
        if x2.shape[0] == 0:
            y = x2.new_zeros(0, self.out_features)
        elif self.kernel is not None:
            y = int4_matmul(x2.contiguous(), self.packed, self.group_size, self.scales, self.kernel)
        else:
            y = F.linear(x2, self.weight)  # the fallback: dequantize, then an ordinary matmul
        y = y.to(x.dtype).reshape(*lead, self.out_features)  # [..., N]
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"group_size={self.group_size}, bias={self.bias is not None}, kernel={self.kernel or 'dequantize'}"
        )

    # --- moving between devices and dtypes ----------------------------------------------------
    def _apply(self, fn, recurse=True):
        """`.to()`, `.cuda()`, `.bfloat16()`, ...: buffers move as usual; when the new device or dtype
        needs another layout, q is read from the old one (on its old device) and packed anew."""
        old_packed, old_kernel = self.packed, self.kernel
        super()._apply(fn, recurse)
        device, dtype = self.scales.device, self.scales.dtype
        if device.type == "meta":
            return self
        scale = self.scales if old_kernel is None else self.scales[..., 0].t()  # moved and cast by fn
        if old_packed.is_meta:  # to_empty() from meta: nothing to keep
            q = torch.zeros(self.out_features, self.in_features, dtype=torch.int8, device=device)
        elif (
            old_packed.device.type == device.type
            and kernel_for(device, self.out_features, self.in_features, self.group_size, dtype) == old_kernel
        ):
            return self  # the layout is still the right one
        elif old_kernel is None:
            q = unpack_int4_rows(old_packed, self.in_features)
        else:
            q = decode(old_packed, old_kernel, self.out_features, self.in_features, self.group_size)
        self.set_quantized(q.to(device), scale.contiguous())
        return self

    # --- the state dict: compressed-tensors' layout ------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)  # bias (the buffers are not persistent)
        destination[prefix + "weight_packed"] = pack_int4_rows(self.int_weight())
        destination[prefix + "weight_scale"] = self.weight_scale().contiguous()
        destination[prefix + "weight_shape"] = torch.tensor(
            [self.out_features, self.in_features], dtype=torch.int64
        )

    def _load_from_state_dict(
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        keys = {name: prefix + name for name in STATE_KEYS}
        for key in keys.values():
            if key in unexpected_keys:
                unexpected_keys.remove(key)
        absent = [key for key in keys.values() if key not in state_dict]
        if absent:
            missing_keys.extend(absent)
            return
        n, k, g = self.out_features, self.in_features, self.group_size
        packed, scale = state_dict[keys["weight_packed"]], state_dict[keys["weight_scale"]]
        shape = state_dict[keys["weight_shape"]].tolist()
        want = {"weight_shape": [n, k], "weight_packed": [n, -(-k // 8)], "weight_scale": [n, k // g]}
        got = {"weight_shape": shape, "weight_packed": list(packed.shape), "weight_scale": list(scale.shape)}
        errors = [
            f"size mismatch for {keys[name]}: the checkpoint has {got[name]}, "
            f"Int4Linear({k} -> {n}, group {g}) needs {want[name]}"
            for name in STATE_KEYS
            if got[name] != want[name]
        ]
        if packed.dtype != torch.int32:
            errors.append(f"{keys['weight_packed']} is {packed.dtype}; the pack-quantized format is int32")
        if errors:
            error_msgs.extend(errors)
            return
        device, dtype = self.scales.device, self.scales.dtype
        with torch.no_grad():
            q = unpack_int4_rows(packed.to(device), k)
            self.set_quantized(q, scale.to(device=device, dtype=dtype))
