"""attnlab: a research framework for attention architectures.

from attnlab import AttnLabConfig, AttnLabForCausalLM
"""

from attnlab.archs.config import AttnLabConfig
from attnlab.archs.model import AttnLabForCausalLM, AttnLabModel

__all__ = ["AttnLabConfig", "AttnLabForCausalLM", "AttnLabModel"]
__version__ = "0.1.0"
