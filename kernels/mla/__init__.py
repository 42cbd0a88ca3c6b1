"""DeepSeek MLA attention in the absorbed form: op `mla_decode`.

ops.py (definition + `torch` reference) · torch_chunk.py · sdpa.py.
"""
