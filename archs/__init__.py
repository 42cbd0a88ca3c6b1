"""Model definitions: mixer families, FFNs, the HF model and its cache."""
