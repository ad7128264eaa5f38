"""The full characterization of a wafer: every protocol that feeds a band of pcu.md,
run by one :class:`~labpcu.runner.Runner` on one bench into one store.

``labpcu demo`` runs it on the simulated wafer; a lab runs it on its own bench file.
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

#: the ten operator units: columns of arrays A1–A4 (A1 C1, A1 C2, ... A4 C1)
OPERATOR_UNITS = column_units(["A1", "A2", "A3", "A4"], 10)
VMM_COLUMN = ["A5-R1C1", "A5-R2C1", "A5-R3C1"]
#: single PCUs: the back-to-back sigmoid's sub-nA plateau needs a PCU without array neighbours
ACTIVATION_UNITS = ["S13", "S14", "S15", "S17", "S18", "S19"]
WEIGHT_CELLS = [f"{a}-R{r}C{c}" for a in ("A7", "A8") for r in (1, 2, 3) for c in (1, 2, 3)]


@dataclass(frozen=True)
class Step:
    """One run of the campaign."""

    label: str
    protocol: str
    devices: list[str]
    params: dict[str, Any] = field(default_factory=dict)
    role: str | None = None  # the report role this run fills


STEPS: tuple[Step, ...] = (
    Step("diode D1 I–V sweeps", "iv_sweep", ["S01", "S02", "S03", "S04"], {"component": "d1"}, "diode"),
    Step("M2 hysteresis", "hysteresis", ["S05", "S06"], {}, "hysteresis"),
    Step("M2 set", "binary_switch", ["S07", "S08"], {"action": "set"}),
    Step("M2 retention, 1,000 s at +0.1 V", "retention", ["S07", "S08"], {"component": "m2"}, "m2_retention"),
    Step("M1 ISPP to three levels", "ispp", ["S09", "S10", "S11", "S12"], {}, "ispp"),
    Step("M1 retention, 600 s at +0.01 V", "retention", ["S09", "S10", "S11", "S12"], {"component": "m1"},
         "m1_retention"),
    Step("weight statistics, 18 array cells", "weight_statistics", WEIGHT_CELLS, {"levels": 4}, "weight_statistics"),
    Step("VMM, 1×3 crossbar", "vmm", VMM_COLUMN, {}, "vmm"),
    Step("multiplier, 10 units", "multiplier", OPERATOR_UNITS, {}, "multiplier"),
    Step("divider, 10 units", "divider", OPERATOR_UNITS, {"configure": False}, "divider"),
    Step("softmax, 10 units", "softmax", OPERATOR_UNITS, {"configure": False}, "softmax"),
    Step("activation functions", "activation", ACTIVATION_UNITS, {}, "activation"),
)


@dataclass
class Campaign:
    """What a characterization produced: each step's outcome and the report roles."""

    outcomes: list[tuple[Step, RunOutcome]] = field(default_factory=list)

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
                 together=True, on_fail="continue")
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
    return Campaign([(by_label[task.step], run) for task, run in outcome.results])
