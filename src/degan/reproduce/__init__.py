"""The claims suite: ``degan reproduce``. Named experiments, one per headline claim of the seed papers, run as
arms x seeds with per-run JSON, 95 % intervals, paired differences and verdicts (``docs/reproduce.md``)."""

from .claims import CLAIMS, Claim, Job, get_claims, jobs_for
from .stats import Interval, mean_interval, paired_difference, t_quantile, verdict
from .suite import Suite, claims_table, load_results, summarize_claim, update_readme

__all__ = ["CLAIMS", "Claim", "Interval", "Job", "Suite", "claims_table", "get_claims", "jobs_for", "load_results",
           "mean_interval", "paired_difference", "summarize_claim", "t_quantile", "update_readme", "verdict"]
