"""Pure stage: the sites of one interval -> a verdict per site, keyed by site.

judge() is the only place the session's growth history moves: it records the
interval's sites in the GrowthTracker (observe), takes each site's growth
verdict, lets the snapshot's losses demote a leak they could explain and
says how many of its bytes they could explain (missed_frees.Doubts), and with --reachability folds the scan's classes into
the verdict (reach.rows.combine). It sees every site that passed the filters,
before the top-N cut, so a site's history has no gaps when it falls below
the cut. Judged.ranked() orders sites by verdict (leak, growing, unknown,
stable; equal verdicts keep their byte order); the report builder looks
verdicts up by site key, never by row position.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, Mapping, Optional, Sequence, Tuple

from leaktrace.aggregate import AggregateResult, aggregate
from leaktrace.base.config import ReportConfig
from leaktrace.judge.growth import VERDICT_ORDER, Growth, GrowthTracker
from leaktrace.judge.missed_frees import Doubts
from leaktrace.base.model import ReachSummary, RowReach, Site, Snapshot
from leaktrace.judge.reach.rows import combine, reach_summary, site_reach


@dataclass(frozen=True)
class SiteVerdict:
    verdict: str  # growth's, combined with reachability when scanned
    reason: str
    growth: Growth  # growth's own verdict, after the doubts
    reach: Optional[RowReach] = None
    uncertain_bytes: int = 0  # bytes the losses could explain (missed_frees.Doubts)


@dataclass(frozen=True)
class Judged:
    verdicts: Mapping[Tuple, SiteVerdict] = field(default_factory=dict)  # by Site.key
    reach: Optional[ReachSummary] = None  # the scan's totals, when this interval scanned

    def ranked(self, result: AggregateResult) -> AggregateResult:
        """result's sites by verdict, then growth's verdict; ties keep their order."""
        def order(site: Site) -> Tuple[int, int]:
            judged = self.verdicts[site.key]
            return VERDICT_ORDER[judged.verdict], VERDICT_ORDER[judged.growth.verdict]
        return replace(result, sites=tuple(sorted(result.sites, key=order)))


def judge(snapshot: Snapshot, sites: Sequence[Site], tracker: GrowthTracker, older_than_ms: int,
          doubts: Doubts = Doubts()) -> Judged:
    """Record this interval's sites in tracker, and judge each of them."""
    tracker.observe(sites, snapshot.taken_ns)
    growths = {site.key: tracker.judged(site, doubts) for site in sites}
    reach: Dict[Tuple, RowReach] = {}
    if snapshot.reach is not None:
        # A stack shared by several sites counts for the last in growth's order.
        by_growth = sorted(sites, key=lambda s: VERDICT_ORDER[growths[s.key].verdict])
        reach = site_reach(by_growth, snapshot, older_than_ms)
    verdicts = {}
    for site in sites:
        growth, found = growths[site.key], reach.get(site.key)
        verdict, reason = combine(growth.verdict, growth.reason, found) if found else (growth.verdict, growth.reason)
        verdicts[site.key] = SiteVerdict(verdict, reason, growth, found, doubts.uncertain_bytes(site))
    summary = reach_summary(snapshot, older_than_ms) if snapshot.reach is not None else None
    return Judged(verdicts, summary)


def judge_interval(snapshot: Snapshot, config: ReportConfig, tracker: GrowthTracker,
                   doubts: Doubts = Doubts()) -> Tuple[AggregateResult, Judged]:
    """aggregate -> judge -> rank for one interval: every site that passed the
    filters, by verdict (config.top is not applied: .limited() cuts)."""
    everything = aggregate(snapshot, replace(config, top=0))
    judged = judge(snapshot, everything.sites, tracker, config.older_than_ms, doubts)
    return judged.ranked(everything), judged
