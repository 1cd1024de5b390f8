"""Turn a simulated chunk into the source systems' tables (canonical columns) and the truth rows.

Who is in which source follows from the rows each source holds (a HIS knows the people seen at its
hospitals, the pharmacy its customers and loyalty members, the call centre its callers ...); the
digital services know their users. Keys of rows other than patients are a prefix, the chunk number
and the row number, so they are unique across chunks.
"""

from __future__ import annotations

from careloop.synth.emit.clinical import ClinicalRecords
from careloop.synth.emit.engagement import EngagementRecords
from careloop.synth.emit.patients import PatientRecords
from careloop.synth.emit.truth import TruthRecords


class Emitter(PatientRecords, ClinicalRecords, EngagementRecords, TruthRecords):
    """Emits one simulated chunk: `run()` fills `tables` ((source, entity) -> column dicts) and `truth`."""

    def run(self) -> None:
        self.member, first = self.memberships()
        self.patients(self.member, first)
        self.clinical()
        self.engagement()
        self.truths()


__all__ = ["Emitter"]
