"""Move a sequence past ``max()`` of every column it feeds (finding ``sequence-behind``)."""

from __future__ import annotations

from noclash.doctor import fixes
from noclash.doctor.checks.sequence_behind import SequenceBehindEvidence
from noclash.doctor.context import Context
from noclash.doctor.model import Finding
from noclash.doctor.repairs import Action

ID = "reset-sequence"


def plan(ctx: Context, finding: Finding) -> Action | None:
    ev = finding.evidence
    assert isinstance(ev, SequenceBehindEvidence)
    seq = ev.sequence_object
    if seq is None:
        return None
    return Action(
        repair=ID,
        finding=finding,
        summary=f"set sequence {seq.name} to the largest value it fed ({ev.max})",
        steps=fixes.reset_sequence(ctx, seq),
        locks=ctx.dialect.locks("sequence"),
    )
