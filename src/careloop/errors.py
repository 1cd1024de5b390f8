"""careloop's one error tree. Every message says what went wrong and what to do about it.

    CareloopError
    ├── ConfigError            settings or a mapping file are wrong
    ├── StorageError           the database refused a statement (carries the SQL)
    │   ├── MigrationError     the schema is newer than the code, or a migration failed
    │   └── WorkspaceError     an operation would cross or miss a workspace
    ├── IngestError            a source cannot be read at all (bad rows are quarantined, not raised)
    │   └── MappingError       a column mapping does not fit the file
    ├── PrivacyError           keys missing or an operation not allowed on personal data
    ├── NotFoundError          a named thing (run, quarantine row, entity) does not exist
    ├── ModelError             a model cannot be fitted, saved, loaded or scored as asked
    │   └── ModelMismatchError a saved model does not match the version, config or data expected
    └── ChannelError           a message channel cannot send, or cannot accept a receipt (`retryable` says
                               whether trying again later may succeed)

The API maps these to problem-details responses; the CLI prints them and exits non-zero.
"""

from __future__ import annotations


class CareloopError(Exception):
    """Base of every error careloop raises on purpose."""

    exit_code = 1
    http_status = 400


class ConfigError(CareloopError):
    """A setting, a mapping or a command-line option is wrong."""

    exit_code = 2


class StorageError(CareloopError):
    """The database refused a statement; `sql` holds the statement that failed."""

    http_status = 500

    def __init__(self, message: str, *, sql: str | None = None) -> None:
        super().__init__(message if sql is None else f"{message}\n  SQL: {sql[:2000]}")
        self.sql = sql


class MigrationError(StorageError):
    """The database schema cannot be brought to this version of careloop."""


class WorkspaceError(StorageError):
    """A statement would read or write outside the current workspace."""

    http_status = 403


class IngestError(CareloopError):
    """A source cannot be read at all (individual bad rows go to quarantine instead)."""

    http_status = 422


class MappingError(IngestError):
    """A column mapping does not fit the file it is applied to."""


class PrivacyError(CareloopError):
    """Encryption keys are missing or an operation on personal data is not allowed."""

    http_status = 403


class NotFoundError(CareloopError):
    """A named object does not exist."""

    http_status = 404


class ModelError(CareloopError):
    """A model cannot be fitted, saved, loaded or scored as asked."""

    exit_code = 2
    http_status = 422


class ModelMismatchError(ModelError):
    """A saved model was fitted with another version, configuration or data than the caller expects."""


class ChannelError(CareloopError):
    """A channel (SMS, WeChat, push, email, outbox) could not do what was asked.

    `retryable` is True when the same request may succeed later (network, 5xx, throttling; `retry_after`
    seconds when the provider said how long), False when it never will (invalid number, template not
    approved, the patient refused). `code` is the provider's own error code when there is one. Through
    the API (a receipt that cannot be read or whose signature does not match) it is a 400.
    """

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        code: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.retry_after = retry_after
