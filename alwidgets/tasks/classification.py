"""Single-label classification: one class name per item, class probabilities from the model."""
from __future__ import annotations

import numbers
import unicodedata

import numpy as np

from .._validation import UNLABELED, check_probs
from .base import Task

_BINS = 10
_INVISIBLE = {"\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad"}


def check_class_names(classes) -> list[str]:
    """Class names as unique, non-empty, printable strings in NFC (integers become their text).

    Names a person could not tell apart are refused: ``Cat`` and ``cat``, a trailing
    space, the NFC and NFD spellings of one word, a zero-width space.

    >>> check_class_names([3, "cat"])
    ['3', 'cat']
    >>> check_class_names(["cat", "Cat "])
    Traceback (most recent call last):
    ...
    ValueError: class names 'cat' and 'Cat ' look the same; rename one
    """
    if isinstance(classes, (str, bytes)):
        raise TypeError(f"classes must be a list of names, not the single string {classes!r}")
    try:
        classes = list(classes)
    except TypeError:
        raise TypeError(f"classes must be a list of names, got {type(classes).__name__}") from None
    out, seen = [], {}
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, (str, numbers.Integral)):
            raise ValueError(f"class names must be strings (or integers); got {c!r}")
        name = c if isinstance(c, str) else str(int(c))
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"class name {name!r} is not valid text (it holds a lone surrogate)") from None
        if len(name) > 200:
            raise ValueError(f"class name {name[:40]!r}... is {len(name)} characters long; the limit is 200")
        if not name.strip() or any(ch in _INVISIBLE for ch in name) or not name.isprintable():
            raise ValueError(f"class name {name!r} is empty or holds invisible or control characters")
        key = unicodedata.normalize("NFKC", name).casefold().strip()
        if key in seen:
            other = seen[key]
            raise ValueError(f"class name {other!r} is given twice" if other == name else
                             f"class names {other!r} and {name!r} look the same; rename one")
        seen[key] = name
        out.append(unicodedata.normalize("NFC", name))
    if not out:
        raise ValueError("give at least one class name")
    return out


class Classification(Task):
    """One class per item. Labels in the loop: class index per item, ``-1`` = unlabelled.

    Parameters
    ----------
    classes : list of str
        Class names, in the order of the model's probability columns.

    Examples
    --------
    >>> import numpy as np
    >>> from alwidgets.tasks import Classification
    >>> task = Classification(["cat", "dog"])
    >>> labels = task.empty_labels(3)
    >>> task.set_label(labels, 1, task.decode(task.encode("dog")["label"]))
    >>> labels.tolist(), task.is_labelled(labels).tolist()
    ([-1, 1, -1], [False, True, False])
    >>> task.score(np.array([0, 1]), np.array([[0.9, 0.1], [0.8, 0.2]]))["score"]
    0.5
    """

    name = "classification"
    score_name = "accuracy"

    def __init__(self, classes, *, calibration: bool = False):
        self.classes = check_class_names(classes)
        self.calibration = bool(calibration)
        self._index = {c: i for i, c in enumerate(self.classes)}

    def __repr__(self) -> str:
        return f"Classification(classes={self.classes!r})"

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    # ---------------------------------------------------------------- labels
    def empty_labels(self, n_items: int) -> np.ndarray:
        return np.full(n_items, UNLABELED, dtype=np.int64)

    def is_labelled(self, labels) -> np.ndarray:
        return np.asarray(labels) != UNLABELED

    def set_label(self, labels, index: int, value) -> None:
        labels[index] = UNLABELED if value is None else value

    def class_index(self, value) -> int:
        """Index of a class given by name (or by index); ``ValueError`` naming the value otherwise."""
        if isinstance(value, str):
            key = unicodedata.normalize("NFC", value)
            if key in self._index:
                return self._index[key]
        elif isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < self.n_classes:
            return int(value)
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise ValueError(f"unknown class {shown}; the classes are {', '.join(self.classes)}")

    def encode(self, value) -> dict:
        return {"label": self.classes[self.class_index(value)], "payload": None, "media_type": None}

    def decode(self, label, payload=None, media_type=None):
        return self._index.get(label)

    def selector_labels(self, labels) -> np.ndarray:
        return labels

    def suggest(self, pred):
        """The most probable class and its probability."""
        c = int(np.argmax(pred))
        return self.classes[c], round(float(pred[c]), 4)

    # ---------------------------------------------------------------- model
    def default_model(self):
        from ..models import default_model

        return default_model(self.n_classes)

    def fit_predict(self, model, X, labels, X_eval=None):
        from ..models import fit_predict_proba

        return fit_predict_proba(model, X, labels, self.n_classes, X_eval=X_eval)

    def check_predictions(self, pred, n_items: int):
        return check_probs(pred, n_items=n_items)

    def check_targets(self, y, name: str = "y") -> np.ndarray:
        """Class indices of ``y`` given as names or indices; ``ValueError`` naming the bad rows."""
        y = np.asarray(y, dtype=object).tolist()
        codes = np.empty(len(y), np.int64)
        bad = []
        for r, v in enumerate(y):
            try:
                codes[r] = self.class_index(v.item() if hasattr(v, "item") else v)
            except ValueError:
                bad.append(r)
        if bad:
            raise ValueError(f"{name} at rows {bad[:10]} are not classes of this task ({', '.join(self.classes)})")
        return codes

    # ---------------------------------------------------------------- metrics
    def score(self, y_true, pred) -> dict:
        """Accuracy, per-class accuracy (None for a class with no item) and, with ``calibration``,
        the reliability table and ECE."""
        y_true = np.asarray(y_true)
        hit = pred.argmax(axis=1) == y_true
        m = {"score": float(hit.mean()), "accuracy": float(hit.mean()),
             "per_class": {c: (float(hit[y_true == k].mean()) if np.any(y_true == k) else None)
                           for k, c in enumerate(self.classes)}}
        if self.calibration:
            from ..calibrate import expected_calibration_error, reliability_data

            table = reliability_data(pred, y_true, n_bins=_BINS)
            table = table[table["count"] > 0]
            m["reliability"] = {k: table[k].tolist() for k in ("confidence", "accuracy", "count")}
            m["ece"] = expected_calibration_error(pred, y_true, n_bins=_BINS)
        return m

    def cross_validate(self, model, X, labels, *, cv: int = 5, random_state=0) -> dict | None:
        """Accuracy of out-of-fold predictions on the labelled items, ± its spread over the folds.

        Folds are stratified when every labelled class has two items (else plain
        K-fold: a class seen once is honestly missed) and seeded, so the same labels
        always give the same figure.
        """
        from sklearn.model_selection import KFold, StratifiedKFold

        lab = np.flatnonzero(self.is_labelled(labels))
        if len(lab) < 2:
            return None
        y = np.asarray(labels)[lab]
        counts = np.bincount(y)
        smallest = counts[counts > 0].min()
        if smallest >= 2 and len(np.unique(y)) > 1:
            folds = StratifiedKFold(n_splits=min(cv, int(smallest)), shuffle=True, random_state=random_state)
        else:
            folds = KFold(n_splits=min(cv, len(lab)), shuffle=True, random_state=random_state)
        Xl = X[lab]
        out = np.zeros((len(lab), self.n_classes))
        fold_scores = []
        for tr, te in folds.split(Xl, y):
            _, out[te] = self.fit_predict(model, Xl[tr], y[tr], X_eval=Xl[te])
            fold_scores.append(float(np.mean(out[te].argmax(1) == y[te])))
        m = self.score(y, out)
        m["score_std"] = float(np.std(fold_scores))
        m["n_folds"] = len(fold_scores)
        return m
