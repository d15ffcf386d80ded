"""Labels are never lost: the label store (an SQLite file, or PostgreSQL for a team).

See :class:`LabelStore`, :mod:`.io` (import/export), :mod:`.agreement` (annotators'
agreement) and ``docs/labels.md`` (where labels live, leases, backups, teams).
"""
from .agreement import agreement, annotators, cohen_kappa
from .errors import (
    LeaseConflictError,
    StoreConnectionError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from .io import ImportReport, export_labels, import_labels
from .labelstore import (
    LABEL_COLUMNS,
    SOURCES,
    AttachReport,
    LabelStore,
    check_classes,
    pool_fingerprint,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "LabelStore", "AttachReport", "ImportReport", "LABEL_COLUMNS", "SOURCES", "SCHEMA_VERSION",
    "StoreError", "StoreMismatchError", "StoreLockedError", "StoreReadOnlyError", "StoreFullError",
    "StoreCorruptError", "StoreConnectionError", "LeaseConflictError", "check_classes", "pool_fingerprint",
    "import_labels", "export_labels", "agreement", "annotators", "cohen_kappa",
]
