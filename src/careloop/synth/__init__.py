"""A realistic, seeded, reproducible synthetic Chinese regional healthcare network.

`generate_network(out_dir, patients, seed, as_of)` writes one folder per source system (HIS of each
hospital and of the community clinics, pharmacies, internet hospital, WeChat official account and
mini-program, app, call centre, engagement platform, master-data registry), the ground truth the data
was generated from (``truth/``: identities, households, churn, no-show, adherence, campaigns) and
``careloop-mapping.yaml`` to ingest it. What is planted and how: docs/synthetic-data.md.
"""

from careloop.synth.network import DEFAULT_AS_OF, FORMATS, MAPPING_FILE, generate_network

__all__ = ["DEFAULT_AS_OF", "FORMATS", "MAPPING_FILE", "generate_network"]
