"""Patient 360: one person's identifiers, golden record, linked records and everything they did.

- `view.PatientView`: builds the 360 (`show`) and phone / ID-number look-ups (`find`);
- `lookup`: resolving a person id or a ``SOURCE:KEY`` record, blind-index look-ups;
- `viewer.Viewer`: what a viewer sees per identifier kind and section (the seam for roles);
- `indexes`: the DuckDB look-up indexes a fast 360 reads through.
"""

from careloop.patients.lookup import RecordRef, normalise_phone, resolve
from careloop.patients.view import PatientView
from careloop.patients.viewer import MASKED_VIEWER, Viewer, Visibility

__all__ = ["MASKED_VIEWER", "PatientView", "RecordRef", "Viewer", "Visibility", "normalise_phone", "resolve"]
