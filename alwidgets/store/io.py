"""Labels in and out of a store: CSV, TSV, Parquet and JSON-lines files (or a DataFrame).

:func:`import_labels` validates every row and writes the good ones in one
transaction (rejected rows come back with a reason); :func:`export_labels`
writes ``labels_df`` atomically (a crash never leaves half a file).

>>> import tempfile, pathlib
>>> from alwidgets.store import LabelStore, export_labels, import_labels
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> with LabelStore(":memory:", annotator="ana") as a, LabelStore(":memory:") as b:
...     _ = a.attach_pool(["x", "y"], ["cat", "dog"]); _ = b.attach_pool(["x", "y"], ["cat", "dog"])
...     _ = a.add_labels([{"item_id": "x", "label": "dog"}])
...     path = export_labels(a, d / "labels.csv")
...     print(import_labels(b, path)); b.current_labels()
imported 1 labels (0 replaced an earlier label), 0 unchanged, 0 rejected
{'x': 'dog'}
"""
from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

from .._files import atomic_write
from .labelstore import SOURCES, _check_name, _seconds, _text_problem

FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": "csv", ".parquet": "parquet", ".jsonl": "jsonl",
           ".ndjson": "jsonl"}


@dataclass
class ImportReport:
    """Outcome of :func:`import_labels`.

    ``accepted`` rows were written (``replaced`` of them changed an existing
    label); ``unchanged`` rows equalled the current label and were skipped, so
    importing the same file twice adds nothing; ``rejected`` is a DataFrame with
    columns ``row, item_id, label, reason`` (``row`` = 0-based data row; CSV line = row + 2).
    """

    accepted: int
    replaced: int
    unchanged: int
    rejected: object
    label_ids: list

    def __str__(self) -> str:
        text = (f"imported {self.accepted} labels ({self.replaced} replaced an earlier label), "
                f"{self.unchanged} unchanged, {len(self.rejected)} rejected")
        if len(self.rejected):
            shown = self.rejected.head(10)
            text += ":\n" + "\n".join(f"  row {r.row}: {r.item_id!r} -> {r.label!r}: {r.reason}"
                                      for r in shown.itertuples())
            if len(self.rejected) > len(shown):
                text += f"\n  ... and {len(self.rejected) - len(shown)} more"
        return text


def _cell(value):
    """A table cell as a string, or None when missing (None, NaN, empty)."""
    if value is None:
        return None
    if isinstance(value, float) or (hasattr(value, "dtype") and getattr(value.dtype, "kind", "") == "f"):
        value = float(value)
        if math.isnan(value):
            return None
        return str(int(value)) if value.is_integer() else str(value)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return str(int(value))
    if _missing(value):
        return None
    text = str(value)
    return text if text.strip() else None


def _missing(v) -> bool:
    import pandas as pd

    try:
        return v is None or (not isinstance(v, str) and bool(pd.isna(v)))
    except (TypeError, ValueError):
        return False


def _number(v):
    """A table cell meant as a number: None when missing, float when numeric text."""
    if _missing(v):
        return None
    if isinstance(v, str):
        if not v.strip():
            return None
        try:
            return float(v)
        except ValueError:
            return v
    return v


def read_table(src):
    """``(DataFrame, name for messages)`` from a DataFrame or a CSV / TSV / Parquet / JSON-lines path."""
    import pandas as pd

    if isinstance(src, pd.DataFrame):
        return src, "the DataFrame"
    if not isinstance(src, (str, os.PathLike)):
        raise TypeError(f"expected a DataFrame or a file path, got {type(src).__name__}")
    path = Path(src)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    fmt = FORMATS.get(path.suffix.lower())
    try:
        if fmt in ("csv", "tsv"):
            df = pd.read_csv(path, dtype=str, keep_default_na=False, sep="\t" if fmt == "tsv" else ",")
        elif fmt == "parquet":
            df = pd.read_parquet(path)
        elif fmt == "jsonl":
            df = pd.read_json(path, lines=True, dtype=False)
        else:
            raise ValueError(f"{path}: unsupported file type {path.suffix!r} (use .csv, .tsv, .parquet or .jsonl)")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as e:
        raise ValueError(f"{path}: cannot read labels: {e}") from e
    except ValueError as e:
        if str(path) in str(e):
            raise
        raise ValueError(f"{path}: cannot read labels: {e}") from e
    return df, str(path)


def import_labels(store, src, *, source: str = "imported", annotator: str | None = None,
                  session: str | None = None) -> ImportReport:
    """Import labels into ``store`` from a DataFrame or a CSV / TSV / Parquet / JSON-lines file.

    Needs columns ``item_id`` and ``label`` (a class name); optional
    ``annotator`` and ``seconds``. Valid rows are written in one transaction;
    bad rows (unknown id or class, missing values, duplicate ids) are returned
    in the report's ``rejected`` table with a reason. Rows equal to the current
    label are skipped, so importing a file twice adds nothing. ``session`` as
    in :meth:`LabelStore.add_labels` (then items leased to another session
    refuse the whole import with :class:`LeaseConflictError`).
    """
    import pandas as pd

    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    default_annotator = store.annotator if annotator is None else _check_name(annotator, "annotator")
    table, name = read_table(src)
    missing = [c for c in ("item_id", "label") if c not in table.columns]
    if missing:
        raise ValueError(f"{name}: needs columns item_id and label; missing {missing} "
                         f"(found {list(table.columns)})")
    ids = [_cell(v) for v in table["item_id"]]
    labels = [_cell(v) for v in table["label"]]
    annotators = [_cell(v) for v in table["annotator"]] if "annotator" in table else [None] * len(table)
    seconds = list(table["seconds"]) if "seconds" in table else [None] * len(table)
    known = set(store.item_ids)
    classes = store.classes
    class_set = set(classes)
    rejected, records, rows, first_row = [], [], [], {}
    for k, (item_id, label) in enumerate(zip(ids, labels)):
        reason, secs = None, None
        if item_id is None:
            reason = "missing item_id"
        elif label is None:
            reason = "missing label"
        elif item_id not in known:
            reason = "item id not in the pool"
        elif label not in class_set:
            reason = f"unknown class (known: {classes})"
        elif item_id in first_row:
            reason = f"duplicate item id (first at row {first_row[item_id]})"
        elif annotators[k] is not None and _text_problem(annotators[k]):
            reason = f"annotator {_text_problem(annotators[k])}"
        else:
            try:
                secs = _seconds(_number(seconds[k]), "seconds")
            except ValueError:
                reason = f"seconds must be a number >= 0, got {seconds[k]!r}"
        if reason is not None:
            rejected.append((table.index[k], item_id, label, reason))
            continue
        first_row[item_id] = table.index[k]
        rows.append(item_id)
        records.append({"item_id": item_id, "label": label, "seconds": secs, "source": source,
                        "annotator": annotators[k] or default_annotator})
    before = store.current_labels() if records else {}
    got = store.add_labels(records, session=session, skip_unchanged=True) if records else []
    written = [(item_id, lid) for item_id, lid in zip(rows, got) if lid is not None]
    rej = pd.DataFrame(rejected, columns=["row", "item_id", "label", "reason"])
    return ImportReport(accepted=len(written), replaced=sum(i in before for i, _ in written),
                        unchanged=len(got) - len(written), rejected=rej, label_ids=[lid for _, lid in written])


def export_labels(store, path, *, format: str | None = None, history: bool = False) -> Path:
    """Write ``store.labels_df(history=history)`` to ``path`` atomically; returns the absolute path.

    ``format`` is ``"csv"``, ``"tsv"``, ``"parquet"`` (needs ``pyarrow``) or
    ``"jsonl"`` (one JSON object per label, the interchange format labelling
    tools read); by default it follows the file's suffix. Payloads stay in the
    store (``history=True`` exports their ``media_type``; read them with
    :meth:`LabelStore.payload`).
    """
    path = Path(path)
    if format is None:
        format = FORMATS.get(path.suffix.lower())
        if format is None:
            raise ValueError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; "
                             f"pass format='csv', 'tsv', 'parquet' or 'jsonl'")
    if format not in ("csv", "tsv", "parquet", "jsonl"):
        raise ValueError(f"format must be 'csv', 'tsv', 'parquet' or 'jsonl', got {format!r}")
    if format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ImportError("exporting Parquet needs pyarrow: pip install pyarrow") from None
    df = store.labels_df(history=history)
    if format in ("csv", "tsv"):
        return atomic_write(path, lambda tmp: df.to_csv(tmp, index=False, sep="\t" if format == "tsv" else ","))
    if format == "parquet":
        return atomic_write(path, lambda tmp: df.to_parquet(tmp, index=False))

    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            for rec in df.to_dict("records"):
                rec = {k: (None if _missing(v) else v) for k, v in rec.items()}
                rec["created_at"] = rec["created_at"].isoformat()
                for k in ("round", "label_id", "superseded_by"):
                    if rec.get(k) is not None:
                        rec[k] = int(rec[k])
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")

    return atomic_write(path, write)
