"""The store's person records, loaded for matching: every source's `patient` rows and their identifiers.

Personal identifiers are decrypted in memory only (never written, never logged), and each distinct
ciphertext is decrypted once: ingestion reuses the ciphertext of a repeated look-up value (a phone, an
ID number, a name), so a family phone on twenty records costs one AES call. Identifiers
(`patient_identifier`: unionid, insurance number, openid …) are joined on their blind index and never
decrypted.

Records are ordered by (source, patient_key): `unique_id` numbers them 0..n-1 in that order, so a run
over the same records sees the same numbering.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from careloop.config import Settings, get_settings
from careloop.privacy.fields import FieldCipher
from careloop.privacy.keys import load_keyring
from careloop.storage.workspace import WorkspaceStore

#: encrypted patient columns matching needs, with their PII kind
ENCRYPTED: dict[str, str] = {"name": "name", "phone": "phone", "id_number": "id_number", "address": "address"}
#: plain patient columns matching and constraints need
PLAIN: tuple[str, ...] = (
    "sex",
    "birth_date",
    "postal_code",
    "household_key",
    "relationship",
    "guardian_key",
    "phone_bidx",
    "id_number_bidx",
)
#: the mapping `careloop.identity.standardise.standardise` gets for a loaded record table
STD_FIELDS: dict[str, str] = {
    "name": "name",
    "birth_date": "birth_date",
    "sex": "sex",
    "phone": "phone",
    "id_number": "id_number",
    "address": "address",
    "postcode": "postal_code",
}


def record_ref(source: str, patient_key: str) -> str:
    """The display reference of one record: ``source:patient_key``."""
    return f"{source}:{patient_key}"


def parse_record_ref(ref: str) -> tuple[str, str]:
    """``source:patient_key`` -> (source, patient_key); the key may itself contain colons."""
    source, sep, key = ref.partition(":")
    if not sep or not source or not key:
        raise ValueError(
            f"{ref!r} is not a record reference: write SOURCE:PATIENT_KEY, e.g. his_h001:8518563519"
        )
    return source, key


def cipher_for(settings: Settings | None = None) -> FieldCipher:
    """The field cipher of the configured key ring (the same one ingestion uses)."""
    s = settings or get_settings()
    return FieldCipher(load_keyring(s.key_file, environment=s.environment))


def decrypt_column(cipher: FieldCipher, column: pa.ChunkedArray | pa.Array, kind: str) -> pa.Array:
    """Decrypt a column of ciphertexts, each distinct ciphertext once."""
    combined = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = pc.dictionary_encode(combined)
    plain = [cipher.decrypt(t, kind) for t in encoded.dictionary.to_pylist()]
    dictionary = pa.array(plain, pa.string())
    return pc.take(dictionary, encoded.indices)


def load_records(store: WorkspaceStore, cipher: FieldCipher) -> pa.Table:
    """Every patient record of the workspace with decrypted matching fields, ordered by (source, key).

    Columns: unique_id (0..n-1), source, patient_key, the ENCRYPTED fields in plain text and PLAIN.
    """
    cols = ", ".join(["source", "key AS patient_key", *ENCRYPTED, *PLAIN])
    table = store.sql(f"SELECT {cols} FROM patient ORDER BY source, key")  # noqa: S608 - fixed names
    for name, kind in ENCRYPTED.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, decrypt_column(cipher, table.column(name), kind))
    if table.schema.field("birth_date").type != pa.date32():
        table = table.set_column(
            table.schema.get_field_index("birth_date"),
            "birth_date",
            table.column("birth_date").cast(pa.date32()),
        )
    return table.add_column(0, "unique_id", pa.array(range(table.num_rows), pa.int64()))


def load_identifiers(store: WorkspaceStore) -> pa.Table:
    """(source, patient_key, kind, system, value_bidx) of every identifier with a blind index."""
    return store.sql(
        "SELECT source, patient_key, kind, system, value_bidx FROM patient_identifier "
        "WHERE value_bidx IS NOT NULL ORDER BY source, patient_key, kind"
    )
