"""The packaged YAML files: model presets, training runs, sweeps, kernel workloads and the default
study (README "Commands" says which command reads which)."""
