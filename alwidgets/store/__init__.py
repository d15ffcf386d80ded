"""Labels are never lost: the SQLite label store.

See :class:`LabelStore` and ``docs/labels.md`` (where labels live, backups, resuming).
"""
from .errors import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreMismatchError,
    StoreReadOnlyError,
)
from .labelstore import (
    LABEL_COLUMNS,
    SOURCES,
    AttachReport,
    ImportReport,
    LabelStore,
    check_classes,
    pool_fingerprint,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "LabelStore", "AttachReport", "ImportReport", "LABEL_COLUMNS", "SOURCES", "SCHEMA_VERSION",
    "StoreError", "StoreMismatchError", "StoreLockedError", "StoreReadOnlyError", "StoreFullError",
    "StoreCorruptError", "check_classes", "pool_fingerprint",
]
