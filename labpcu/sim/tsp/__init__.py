"""Emulation of Keithley TSP instruments: a sandboxed Lua runtime (:mod:`.runtime`)
and the instrument models built on it (:mod:`.k2600` for the 2600A/B SourceMeters).

The Lua runtime is real (Lua 5.4 through lupa), so TSP scripts, functions and loops
sent by a driver run as they would on the instrument, inside a sandbox with an
instruction budget and a memory limit.
"""

from labpcu.sim.tsp.runtime import (
    TspEmulator,
    TspError,
    TspObject,
    TspParameterError,
    TspTable,
)

__all__ = ["TspEmulator", "TspError", "TspObject", "TspParameterError", "TspTable"]
