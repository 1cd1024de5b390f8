"""Privacy: field encryption, blind indexes and masking (consent, roles and audit arrive later)."""
