"""The temperature of the wafer stage (thermal chuck) over bench time.

A chuck regulates around its set point, but the wafer wanders by a few hundredths of a
kelvin over minutes (regulation, room air, the lamp). The diodes feel it: at constant
current a forward voltage moves by about −2 mV/K, i.e. about 4 % per kelvin in the
current of a calibrated log/antilog stage. The wander is a fixed, seeded sum of slow
sinusoids, so it is a pure function of bench time: reproducible, and free to evaluate.
"""

from __future__ import annotations

import math

import numpy as np

from labpcu.sim.physics import Physics

#: periods of the wander's components, s (regulation loop to room air)
WANDER_PERIODS_S = (95.0, 263.0, 717.0, 1931.0)


class StageTemperature:
    """T(t) = set point + rms-normalized sum of slow sinusoids (if ``temperature`` is on)."""

    def __init__(self, physics: Physics, seed: int) -> None:
        self.set_point = physics.temperature_K
        rng = np.random.default_rng(np.random.SeedSequence([seed, 0x7E4D]))
        self._phases = rng.uniform(0.0, 2 * math.pi, len(WANDER_PERIODS_S))
        # each component has rms amplitude/√2; the sum of n has rms = wander
        n = len(WANDER_PERIODS_S)
        self._amplitude = physics.temperature_wander_K * math.sqrt(2.0 / n) if physics.on("temperature") else 0.0

    def at(self, t: float) -> float:
        """Stage temperature in K at bench time ``t`` (s)."""
        if self._amplitude == 0.0:
            return self.set_point
        wander = sum(math.sin(2 * math.pi * t / p + ph) for p, ph in zip(WANDER_PERIODS_S, self._phases))
        return self.set_point + self._amplitude * wander
