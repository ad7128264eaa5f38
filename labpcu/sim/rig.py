"""The whole simulated bench: one :class:`SimBench` and the three instrument emulators
that share it, plus the ways to reach them (in-process adapters, TCP server).

This is what ``labpcu sim serve``, ``labpcu demo`` and the tests build; drivers only
ever see the adapters or the VISA resource strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labpcu.sim.adapter import SimAdapter
from labpcu.sim.bench import DEFAULT_SEED, SimBench
from labpcu.sim.emulator import Emulator
from labpcu.sim.physics import Physics
from labpcu.sim.server import SimServer

#: instrument name → model, as in the default bench file
DEFAULT_INSTRUMENTS: dict[str, str] = {"k2612a": "2612A", "k3706a": "3706A", "b1500a": "B1500A"}


def make_emulator(model: str, bench: SimBench, name: str) -> Emulator:
    """An emulator of ``model`` attached to ``bench`` (imported lazily: each pulls in
    its own machinery, e.g. the Lua runtime for TSP instruments)."""
    key = model.upper()
    if key.startswith("26"):
        from labpcu.sim.tsp.k2600 import MODELS as K2600_MODELS
        from labpcu.sim.tsp.k2600 import K2612AEmulator

        if key in K2600_MODELS:
            return K2612AEmulator(bench, name=name, model=key)
    if key == "3706A":
        from labpcu.sim.tsp.k3706 import K3706AEmulator

        return K3706AEmulator(bench, name=name)
    if key == "B1500A":
        from labpcu.sim.b1500 import B1500AEmulator

        return B1500AEmulator(bench, name=name)
    raise ValueError(f"no emulator for instrument model {model!r}; known: 2600A/B SourceMeters, 3706A, B1500A")


@dataclass
class SimRig:
    """A simulated bench with its emulators, by instrument name."""

    bench: SimBench
    emulators: dict[str, Emulator] = field(default_factory=dict)

    @classmethod
    def default(cls, seed: int = DEFAULT_SEED, site: str | None = None, physics: Physics | None = None) -> SimRig:
        bench = SimBench(seed=seed, site=site, physics=physics)
        rig = cls(bench)
        for name, model in DEFAULT_INSTRUMENTS.items():
            rig.emulators[name] = make_emulator(model, bench, name)
        return rig

    def __getitem__(self, name: str) -> Emulator:
        try:
            return self.emulators[name]
        except KeyError:
            raise KeyError(f"no simulated instrument {name!r}; have {', '.join(self.emulators)}") from None

    def adapter(self, name: str, timeout: float = 2.0) -> SimAdapter:
        """An in-process pymeasure adapter to one instrument (one per instrument)."""
        return SimAdapter(self[name], timeout=timeout)

    def server(self, ports: dict[str, int] | None = None, host: str = "127.0.0.1") -> SimServer:
        """A TCP server exposing every instrument on its own loopback port."""
        return SimServer(dict(self.emulators), host=host, ports=ports)
