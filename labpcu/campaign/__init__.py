"""Scripted, resumable measurement campaigns: plans as data
(:mod:`~labpcu.campaign.plan`), files (:mod:`~labpcu.campaign.loader`), checks before
any I/O (:mod:`~labpcu.campaign.validate`) and the engine that runs and resumes them
(:mod:`~labpcu.campaign.engine`)."""

from labpcu.campaign.engine import CampaignControl, CampaignEngine, CampaignOutcome, CampaignRefused
from labpcu.campaign.loader import CampaignError, load_campaign, parse_campaign
from labpcu.campaign.plan import Campaign, Selection, Step, Task
from labpcu.campaign.validate import check_campaign, validate

__all__ = [
    "Campaign", "CampaignControl", "CampaignEngine", "CampaignError", "CampaignOutcome", "CampaignRefused",
    "Selection", "Step", "Task", "check_campaign", "load_campaign", "parse_campaign", "validate",
]
