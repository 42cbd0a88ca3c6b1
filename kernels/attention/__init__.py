"""Causal softmax attention over dense keys: op `swa_prefill` (GQA, sliding window, sinks).

ops.py (definition + `torch` reference) · reference.py (the masked-softmax pieces the mixers'
attention maps share) · torch_chunk.py · sdpa.py · triton.py + triton_kernels.py.
"""
