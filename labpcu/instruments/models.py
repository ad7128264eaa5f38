"""What labpcu knows of each supported instrument model: its role, its channels and
the largest levels it can source. The bench-file loader checks against these before
any instrument is contacted; drivers keep their finer range tables themselves.

Figures are from the manufacturers' datasheets (maximum DC source levels).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["smu", "switch", "analyzer"]


@dataclass(frozen=True, slots=True)
class ModelInfo:
    model: str
    role: Role
    channels: tuple[str, ...]  # source channel names as written in bench files
    max_voltage: float = 0.0  # V, largest DC source level
    max_current: float = 0.0  # A, largest DC source level


def _k2600(model: str, channels: tuple[str, ...], v: float, i: float) -> ModelInfo:
    return ModelInfo(model, "smu", channels, v, i)


MODELS: dict[str, ModelInfo] = {
    m.model: m
    for m in (
        _k2600("2601A", ("smua",), 40.0, 3.0),
        _k2600("2602A", ("smua", "smub"), 40.0, 3.0),
        _k2600("2611A", ("smua",), 200.0, 1.5),
        _k2600("2612A", ("smua", "smub"), 200.0, 1.5),
        _k2600("2635A", ("smua",), 200.0, 1.5),
        _k2600("2636A", ("smua", "smub"), 200.0, 1.5),
        _k2600("2601B", ("smua",), 40.0, 3.0),
        _k2600("2602B", ("smua", "smub"), 40.0, 3.0),
        _k2600("2611B", ("smua",), 200.0, 1.5),
        _k2600("2612B", ("smua", "smub"), 200.0, 1.5),
        _k2600("2636B", ("smua", "smub"), 200.0, 1.5),
        ModelInfo("3706A", "switch", ()),
        # B1500A with B1517A HR-SMUs in slots 1-10 (a slot without a module is refused
        # when the instrument is connected, not here: the bench file cannot know)
        ModelInfo("B1500A", "analyzer", tuple(str(s) for s in range(1, 11)), 100.0, 0.1),
    )
}


def model_info(model: str) -> ModelInfo:
    try:
        return MODELS[model.upper()]
    except KeyError:
        raise KeyError(f"unknown instrument model {model!r}; known: {', '.join(MODELS)}") from None
