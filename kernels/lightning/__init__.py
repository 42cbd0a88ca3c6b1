"""Lightning attention (MiniMax-01): ops `lightning_prefill`, `lightning_decode`.

ops.py (definitions + `torch` reference) · reference.py (the plain-torch recurrence and block
form) · torch_chunk.py · triton.py + triton_kernels.py · fla.py (`fla`, and the `fla_naive` peer) ·
checkpoints.py (`state_checkpoints` for any backend, by chaining its kernel over segments).
"""
