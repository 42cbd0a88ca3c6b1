"""How a masked head is silenced (probes/target.py): `uniform` zeroes its query so it attends
uniformly (Wu et al.), `zero` zeroes its output. A light module, so the CLI lists them fast."""

MODES = ("uniform", "zero")
