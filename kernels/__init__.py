"""Attention ops: plain-torch references and fast paths (DESIGN.md "kernels")."""
