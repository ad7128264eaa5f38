"""One perovskite computing unit (PCU): two diodes and two memristors.

*Model* topology (pcu.md): ``WL —D1▶— n1 —M1— n2 —[ M2 ∥ D2◀ ]— BL`` with configure
line 1 (CL1) on n1 and configure line 2 (CL2) on n2. D1 conducts from WL to n1, D2
from BL to n2; M2 in its low-resistance state shorts D2.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from labpcu.sim.diode import DiodeParams, defective_diode
from labpcu.sim.memristor import BinaryMemristor, MultiStateMemristor

#: the pads of a PCU and the internal node each one reaches
PAD_NODES: dict[str, str] = {"WL": "WL", "BL": "BL", "CL1": "n1", "CL2": "n2"}

ElementKind = Literal["diode", "m1", "m2"]


@dataclass(frozen=True, slots=True)
class ElementSpec:
    """A two-terminal element between two PCU-local nodes (anode/plus first)."""

    name: str
    kind: ElementKind
    a: str
    b: str


#: The four elements of a PCU, named by their role.
ELEMENTS: tuple[ElementSpec, ...] = (
    ElementSpec("D1", "diode", "WL", "n1"),
    ElementSpec("M1", "m1", "n1", "n2"),
    ElementSpec("M2", "m2", "n2", "BL"),
    ElementSpec("D2", "diode", "BL", "n2"),
)


@dataclass(slots=True)
class PCU:
    """A PCU on the wafer, with its position and its components' state."""

    id: str
    site: str
    x_mm: float
    y_mm: float
    d1: DiodeParams
    d2: DiodeParams
    m1: MultiStateMemristor
    m2: BinaryMemristor
    array: str | None = None  # array id for cells of a 3×3 array
    row: int | None = None  # 1-based, for array cells
    col: int | None = None
    #: fabrication defect (:data:`labpcu.sim.defects.DEFECTS`), None for a working PCU
    defect: str | None = None

    def diode(self, name: str) -> DiodeParams:
        """The diode as the circuit sees it: D1 of an open or shorted PCU is the defect
        (the drawn parameters stay in ``d1`` and ``d2``)."""
        if name == "D1":
            return defective_diode(self.d1, self.defect)
        return self.d2
