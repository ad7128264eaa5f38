"""The simulated bench: PCU device physics, a circuit solver, a virtual clock, and
message-level emulators of the Keithley 2612A, Keithley 3706A and Keysight B1500A.

Layer rules (DESIGN.md): nothing here imports a driver; drivers reach the simulator
only through bytes (:class:`~labpcu.sim.adapter.SimAdapter` in process, or
:class:`~labpcu.sim.server.SimServer` over TCP).
"""

from labpcu.sim.bench import DEFAULT_SEED, Reading, SimBench

__all__ = ["DEFAULT_SEED", "Reading", "SimBench"]
