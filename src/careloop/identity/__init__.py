"""Person identity: standardise person records, match them (Splink, Fellegi–Sunter), evaluate clusters.

- `standardise`: names (surname, given name, pinyin), ID numbers, phones, dates, sex, addresses in SQL
- `matching`: the Splink settings (one place) and training / prediction / clustering on DuckDB
- `cluster`: constrained clustering of the scored pairs
- `dedupe`: `careloop identity dedupe` on any CSV / Parquet person file with a YAML mapping
- `evaluate`: pairwise precision / recall / F1 against true labels
"""
