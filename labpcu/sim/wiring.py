"""Physical wiring of the simulated bench: SMU channels to matrix rows, matrix columns
to probe-card pins, and probe-card pins to the pads of the site under the probes.

The default mirrors the bench file that ships with labpcu: two 3730 cards (slots 1 and
2) whose six rows are wired in parallel to the 2612A's two channels and four B1500A
SMUs, and 32 columns reaching probe pins 1–32 (slot 1 column c → pin c, slot 2 column
c → pin 16 + c).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from labpcu.sim.wafer import Site, Wafer

Crosspoint = tuple[int, int, int]  # (slot, row, column), 1-based
MATRIX_ROWS = 6
MATRIX_COLUMNS = 16

DEFAULT_ROW_TERMINALS = (
    "k2612a.smua",
    "k2612a.smub",
    "b1500a.1",
    "b1500a.2",
    "b1500a.3",
    "b1500a.4",
)


#: probe pins of an array site: word lines 1-3, bit lines 1-3, CL1 and CL2 of R1C1..R3C3
DEFAULT_ARRAY_PINS: dict[str, tuple[int, ...]] = {
    "WL": (1, 2, 3),
    "BL": (4, 5, 6),
    "CL1": tuple(range(7, 16)),
    "CL2": tuple(range(16, 25)),
}
#: probe pins of a quad site: WL, BL, CL1, CL2 of each of the four single PCUs
DEFAULT_QUAD_PINS: tuple[int, ...] = tuple(range(1, 17))
PAD_KINDS = ("WL", "BL", "CL1", "CL2")


def _default_rows() -> dict[tuple[int, int], str]:
    return {(s, r + 1): t for s in (1, 2) for r, t in enumerate(DEFAULT_ROW_TERMINALS)}


def _default_columns() -> dict[tuple[int, int], int]:
    return {(s, c): (s - 1) * MATRIX_COLUMNS + c for s in (1, 2) for c in range(1, MATRIX_COLUMNS + 1)}


@dataclass(frozen=True)
class SimWiring:
    """Which terminal each matrix row reaches, which probe pin each column reaches, and
    which pad each probe pin touches at an array site and at a quad site."""

    rows: dict[tuple[int, int], str] = field(default_factory=_default_rows)
    columns: dict[tuple[int, int], int] = field(default_factory=_default_columns)
    slots: tuple[int, ...] = (1, 2)
    array_pins: dict[str, tuple[int, ...]] = field(default_factory=lambda: dict(DEFAULT_ARRAY_PINS))
    quad_pins: tuple[int, ...] = DEFAULT_QUAD_PINS

    def row_of(self, terminal: str) -> list[tuple[int, int]]:
        return [k for k, t in self.rows.items() if t == terminal]

    def columns_of_pin(self, pin: int) -> list[tuple[int, int]]:
        return [k for k, p in self.columns.items() if p == pin]


def net_label(wafer: Wafer, device_id: str, node: str) -> str:
    """The circuit net a PCU-local node belongs to: array cells share word lines
    along a row and bit lines along a column."""
    dev = wafer.device(device_id)
    if dev.array is not None and node == "WL":
        return f"{dev.array}.WL{dev.row}"
    if dev.array is not None and node == "BL":
        return f"{dev.array}.BL{dev.col}"
    return f"{device_id}.{node}"


def site_pins(
    wafer: Wafer,
    site: Site,
    array_pins: dict[str, tuple[int, ...]] | None = None,
    quad_pins: tuple[int, ...] | None = None,
) -> dict[int, tuple[str, str, str]]:
    """Probe pin → (pad name, pad kind, circuit net) for the site under the probes.

    Array site: ``array_pins`` gives the pins of WL1–3, BL1–3, and CL1 / CL2 of the
    cells R1C1 … R3C3 in row-major order. Quad site: ``quad_pins`` gives four pins per
    PCU in the order WL, BL, CL1, CL2. Defaults: the shipped simulated bench's fixture.
    """
    array_pins = array_pins or DEFAULT_ARRAY_PINS
    quad_pins = quad_pins or DEFAULT_QUAD_PINS
    pins: dict[int, tuple[str, str, str]] = {}
    if site.kind == "array":
        for k in range(3):
            for kind in ("WL", "BL"):
                name = f"{site.id}.{kind}{k + 1}"
                pins[array_pins[kind][k]] = (name, kind, name)
        for j, did in enumerate(site.devices):
            pins[array_pins["CL1"][j]] = (f"{did}.CL1", "CL1", f"{did}.n1")
            pins[array_pins["CL2"][j]] = (f"{did}.CL2", "CL2", f"{did}.n2")
    else:
        for j, did in enumerate(site.devices):
            for k, kind in enumerate(PAD_KINDS):
                node = {"CL1": "n1", "CL2": "n2"}.get(kind, kind)
                pins[quad_pins[4 * j + k]] = (f"{did}.{kind}", kind, net_label(wafer, did, node))
    return pins
