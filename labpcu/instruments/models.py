"""What a bench file may name: each supported instrument model, its role, its source
channels and the largest levels it can source.

Derived from the drivers' own model tables, so a model a driver accepts is a model the
bench file accepts, with the same ranges; nothing here is written twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labpcu.instruments import keithley2600, keysight_b1500a

Role = Literal["smu", "switch", "analyzer"]
#: the B1500A's default complement (bench files name slots 1-10; the modules present
#: are discovered with UNT? when the instrument is opened)
B1500A_DEFAULT_MODULE = "B1517A"


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model: str
    role: Role
    channels: tuple[str, ...]  # source channel names as written in bench files
    max_voltage: float = 0.0  # V, largest DC source level
    max_current: float = 0.0  # A, largest DC source level


def _models() -> dict[str, ModelInfo]:
    out = {
        name: ModelInfo(name, "smu", tuple(f"smu{c}" for c in spec.channels), spec.v_max, spec.i_max)
        for name, spec in keithley2600.MODELS.items()
    }
    out["3706A"] = ModelInfo("3706A", "switch", ())
    module = keysight_b1500a.SMU_MODELS[B1500A_DEFAULT_MODULE]
    out["B1500A"] = ModelInfo("B1500A", "analyzer", tuple(str(s) for s in range(1, 11)), module.v_max, module.i_max)
    return out


MODELS: dict[str, ModelInfo] = _models()


def model_info(model: str) -> ModelInfo:
    try:
        return MODELS[model.upper()]
    except KeyError:
        raise KeyError(f"unknown instrument model {model!r}; known: {', '.join(MODELS)}") from None
