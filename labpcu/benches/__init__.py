"""Bench files shipped with labpcu (sim.toml: the simulated bench)."""
