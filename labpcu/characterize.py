"""The full characterization of a wafer: every protocol that feeds a band of pcu.md,
run by one :class:`~labpcu.runner.Runner` on one bench into one store.

``labpcu demo`` runs it on the simulated wafer; a lab runs it on its own bench file.
A screening comes first; every later step takes only PCUs it found working, from a
pool with spares, and the PCUs it leaves out are listed (:attr:`Campaign.excluded`).
Each step names the protocol, its parameters and its PCUs; the report role says which
figure of merit the run provides (:mod:`labpcu.report`). One bench session runs all
steps, so state carries over as on a real wafer (the ISPP'd M1 is the one whose
retention is read; the exp-mode units configured by the multiplier serve the divider
and the softmax).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from labpcu.campaign.plan import Campaign as PlanCampaign
from labpcu.campaign.plan import Step as PlanStep
from labpcu.protocols.operator_units import column_units
from labpcu.runner import RunOutcome, Runner

# Every step takes the PCUs it needs from a pool: the devices it has always used,
# then spares. A screening runs first over every pool; each later step takes only the
# first devices (or units of three) screened working (labpcu.campaign step options
# working_only and count), so a defect on the wafer costs a spare, never a figure.

#: the ten operator units: columns of arrays A1–A4 (A1 C1, A1 C2, ... A4 C1), then
#: the columns of A9 as spares
OPERATOR_UNITS = column_units(["A1", "A2", "A3", "A4"], 10)
OPERATOR_POOL = column_units(["A1", "A2", "A3", "A4", "A9"], 15)
VMM_COLUMN = ["A5-R1C1", "A5-R2C1", "A5-R3C1"]
#: the crossbar is one column of A5; its other columns are spares
VMM_POOL = column_units(["A5"], 3)
#: single PCUs: the back-to-back sigmoid's sub-nA plateau needs a PCU without array neighbours
ACTIVATION_UNITS = ["S13", "S14", "S15", "S17", "S18", "S19"]


def _variants(unit: list[str], spare: str) -> list[str]:
    """The unit, then the unit with ``spare`` in place of each PCU in turn (a unit must
    stay under the probes together, so its spare is the fourth PCU of its quad)."""
    out = list(unit)
    for k in range(len(unit)):
        out += unit[:k] + [spare] + unit[k + 1:]
    return out


ACTIVATION_POOL = _variants(["S13", "S14", "S15"], "S16") + _variants(["S17", "S18", "S19"], "S20")
WEIGHT_CELLS = [f"{a}-R{r}C{c}" for a in ("A7", "A8") for r in (1, 2, 3) for c in (1, 2, 3)]
WEIGHT_POOL = WEIGHT_CELLS + [f"A6-R{r}C{c}" for r in (1, 2, 3) for c in (1, 2, 3)]
#: spares of the single-PCU steps: the two singles no step uses, then cells of A9.
#: Steps may share a spare: each reads, or programs afresh, the element it measures.
SINGLE_SPARES = ["S16", "S20", "A9-R1C1", "A9-R2C2", "A9-R3C3"]


def _pool(devices: list[str]) -> list[str]:
    return devices + [d for d in SINGLE_SPARES if d not in devices]


@dataclass(frozen=True)
class Step:
    """One run of the campaign: a protocol on the first ``count`` devices (units, for
    protocols that take units of three PCUs) of ``devices`` that the screening found
    working (all of them without ``count``); ``working_only=False`` takes the list as it is."""

    label: str
    protocol: str
    devices: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    role: str | None = None  # the report role this run fills
    count: int | None = None
    working_only: bool = True


def _all(*pools: list[str]) -> list[str]:
    """Every device of the pools, once, in wafer order (a screen moves the prober once per site)."""
    wanted = {d for pool in pools for d in pool}
    order = [f"A{a}-R{r}C{c}" for a in range(1, 10) for r in (1, 2, 3) for c in (1, 2, 3)]
    order += [f"S{k:02d}" for k in range(1, 21)]
    return [d for d in order if d in wanted]


DIODE_POOL = _pool(["S01", "S02", "S03", "S04"])
HYSTERESIS_POOL = _pool(["S05", "S06"])
M2_POOL = _pool(["S07", "S08"])
ISPP_POOL = _pool(["S09", "S10", "S11", "S12"])
SCREENED = _all(DIODE_POOL, HYSTERESIS_POOL, M2_POOL, ISPP_POOL, WEIGHT_POOL, VMM_POOL, OPERATOR_POOL,
                ACTIVATION_POOL)

STEPS: tuple[Step, ...] = (
    Step("wafer screening", "screen", SCREENED, {}, "screen", working_only=False),
    Step("diode D1 I–V sweeps", "iv_sweep", DIODE_POOL, {"component": "d1"}, "diode", count=4),
    Step("M2 hysteresis", "hysteresis", HYSTERESIS_POOL, {}, "hysteresis", count=2),
    Step("M2 set", "binary_switch", M2_POOL, {"action": "set"}, count=2),
    Step("M2 retention, 1,000 s at +0.1 V", "retention", M2_POOL, {"component": "m2"}, "m2_retention", count=2),
    Step("M1 ISPP to three levels", "ispp", ISPP_POOL, {}, "ispp", count=4),
    Step("M1 retention, 600 s at +0.01 V", "retention", ISPP_POOL, {"component": "m1"}, "m1_retention", count=4),
    Step("weight statistics, 18 array cells", "weight_statistics", WEIGHT_POOL, {"levels": 4}, "weight_statistics",
         count=18),
    Step("VMM, 1×3 crossbar", "vmm", VMM_POOL, {}, "vmm", count=1),
    Step("multiplier, 10 units", "multiplier", OPERATOR_POOL, {}, "multiplier", count=10),
    Step("divider, 10 units", "divider", OPERATOR_POOL, {"configure": False}, "divider", count=10),
    Step("softmax, 10 units", "softmax", OPERATOR_POOL, {"configure": False}, "softmax", count=10),
    Step("activation functions", "activation", ACTIVATION_POOL, {}, "activation", count=2),
)


@dataclass
class Campaign:
    """What a characterization produced: each step's outcome and the report roles."""

    outcomes: list[tuple[Step, RunOutcome]] = field(default_factory=list)
    #: step label -> {device: why it was left out}: screened defective, or a spare not needed
    excluded: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def roles(self) -> dict[str, str]:
        return {s.role: o.run_id for s, o in self.outcomes if s.role}

    @property
    def run_ids(self) -> list[str]:
        return [o.run_id for _, o in self.outcomes]

    @property
    def ok(self) -> bool:
        return all(o.status == "completed" for _, o in self.outcomes)


def as_campaign(steps: tuple[Step, ...] = STEPS, name: str = "characterization") -> PlanCampaign:
    """The characterization as a campaign plan: each step one run on all its devices
    (the report reads one run per role), going on when a step fails."""
    return PlanCampaign(name=name, steps=tuple(
        PlanStep(name=s.label, protocol=s.protocol, devices=tuple(s.devices), params=dict(s.params),
                 together=True, on_fail="continue", working_only=s.working_only, count=s.count)
        for s in steps))


def characterize(runner: Runner, steps: tuple[Step, ...] = STEPS,
                 on_step: Callable[[int, Step], None] | None = None) -> Campaign:
    """Run ``steps`` in order, as a built-in campaign on the runner's bench and store
    (:mod:`labpcu.campaign`). A step that does not complete is kept (its status says
    why) and the campaign goes on; an abort (Ctrl-C) stops it."""
    from labpcu.campaign.engine import CampaignEngine, TaskStarted

    by_label = {s.label: s for s in steps}
    engine = CampaignEngine(as_campaign(steps), runner.bench, runner.store, runner=runner)
    if on_step is not None:
        engine.subscribe(lambda e: isinstance(e, TaskStarted) and on_step(e.number - 1, by_label[e.step]))
    outcome = engine.run()
    return Campaign([(by_label[task.step], run) for task, run in outcome.results], dict(outcome.excluded))
