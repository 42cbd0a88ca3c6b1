"""Recurrent-state storage formats: ops `state_store`, `state_load` (fp32, bf16, fp16, int8).

ops.py (definitions + `torch` references, sizes and groups) · c.py + state_codec.c ·
triton.py + triton_kernels.py.
"""
