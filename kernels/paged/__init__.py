"""Softmax attention over a paged KV cache: ops `paged_attn_decode`, `paged_attn_prefill`.

ops.py (definitions + `torch` references) · cache.py (reading pages through the block table) ·
torch_chunk.py · sdpa.py · triton.py + triton_kernels.py · c.py + paged_attention.c.
"""
