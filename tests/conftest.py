import os
import sys
from pathlib import Path

# Tests use tiny tensors: one intra-op thread is fastest, and it avoids OpenMP spin-waits when
# the cores are shared (seen: 20-60x slower tiny matmuls with 2 threads on a busy 2-core box).
# Set before torch is imported so subprocesses (CLI, lm-eval, killed-and-resumed runs) inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

sys.path.insert(0, str(Path(__file__).parent))  # tests/variants.py and other test helpers
