"""The grid's key map: the one place where keys are bound to actions.

Python computes the whole map for a list of classes and sends it to the browser
(the ``keymap`` trait); the JavaScript only looks keys up in it and shows the
keys it finds there on the buttons. ``docs/keymap.md`` documents these rules.

Class keys
    When a class name is itself a single key (``"6"``, ``"b"``), that key gives
    the class. If any class name is a single digit, digits are never positional:
    with classes ``0``-``9``, pressing ``6`` gives class ``"6"``. Otherwise keys
    ``1``-``9``, ``0`` give the first ten classes by position (shown on the
    buttons as keycaps, apart from the name).
Action keys
    Arrows and ``h`` ``j`` ``k`` ``l`` move, Space skips, Backspace and ``z``
    undo, ``a`` accepts the suggestion, Enter submits, Esc leaves, ``/`` opens
    the class search. A class named like an action key takes the key (the
    action keeps its other keys and its button).
"""
from __future__ import annotations

import re

ACTIONS = ("left", "right", "up", "down", "skip", "undo", "accept", "submit", "leave", "search")
"""Actions a key can have besides ``class:N`` (the N-th class, 1-based)."""

ACTION_KEYS = {
    "ArrowLeft": "left", "ArrowRight": "right", "ArrowUp": "up", "ArrowDown": "down",
    "h": "left", "l": "right", "k": "up", "j": "down",
    " ": "skip", "Backspace": "undo", "z": "undo", "a": "accept", "Enter": "submit", "Escape": "leave",
    "/": "search",
}
"""The keys of the actions (``KeyboardEvent.key`` values) before class keys and user changes."""

_CLASS_ACTION = re.compile(r"^class:([1-9][0-9]{0,8})$")


def name_is_key(name: str) -> bool:
    """Whether a class name can be typed as one ``KeyboardEvent.key`` (one visible character)."""
    return len(name) == 1 and name.isprintable() and not name.isspace()


def class_keys(classes) -> dict[str, int]:
    """Key -> class number (1-based) for ``classes`` before user changes (see the module docstring)."""
    classes = list(classes)
    named = {c: i + 1 for i, c in enumerate(classes) if name_is_key(c)}
    if any(c.isdigit() for c in named):
        return named  # digit names: a digit key is the class of that name, never a position
    out = {str((i + 1) % 10): i + 1 for i in range(min(10, len(classes)))}
    out.update(named)
    return out


def build_keymap(classes, changes: dict | None = None) -> dict[str, str]:
    """The full key -> action map the grid uses for ``classes``, with the user's ``changes``.

    ``changes`` maps keys to an action (``"skip"``, ``"class:3"``, ...) or to
    ``None`` to unbind the key. Raises ``ValueError`` naming the key for an
    unknown action or a class number beyond ``classes``.

    >>> km = build_keymap([str(d) for d in range(10)])
    >>> km["6"], km["0"], km["Enter"]
    ('class:7', 'class:1', 'submit')
    >>> build_keymap(["cat", "dog"], {"q": "class:1", "z": None})["q"]
    'class:1'
    """
    classes = list(classes)
    out = dict(ACTION_KEYS)
    out.update({key: f"class:{n}" for key, n in class_keys(classes).items()})
    return _apply_changes(out, changes, len(classes), ACTIONS)


def check_action(action, n_classes: int, *, where: str = "action", actions=ACTIONS) -> str:
    """``action`` if it is one of ``actions`` or ``class:N`` with ``1 <= N <= n_classes``."""
    if isinstance(action, str) and action in actions:
        return action
    m = _CLASS_ACTION.match(action) if isinstance(action, str) else None
    if m is None:
        raise ValueError(f"{where} = {action!r} is not an action; use one of {', '.join(actions)} "
                         f"or 'class:N' (the N-th class, N >= 1)")
    if int(m.group(1)) > n_classes:
        raise ValueError(f"{where} = {action!r}: there are only {n_classes} classes")
    return action


# ---------------------------------------------------------------------------------- the mask painter
PAINTER_ACTIONS = ("brush", "eraser", "polygon", "void", "smaller", "bigger", "undo", "redo", "clear", "prefill",
                   "toggle", "opacity", "zoom_in", "zoom_out", "fit", "pan", "submit", "skip", "previous", "next",
                   "cancel", "search")
"""Actions of the mask painter's keys besides ``class:N`` (``docs/keymap.md``, "Mask painter")."""

PAINTER_KEYS = {
    "b": "brush", "e": "eraser", "g": "polygon", "v": "void", "[": "smaller", "]": "bigger",
    "z": "undo", "y": "redo", "Delete": "clear", "p": "prefill", "h": "toggle", "o": "opacity",
    "+": "zoom_in", "=": "zoom_in", "-": "zoom_out", "f": "fit", " ": "pan",
    "Enter": "submit", "s": "skip", "ArrowLeft": "previous", "ArrowRight": "next", "Escape": "cancel", "/": "search",
}
"""The painter's action keys (``KeyboardEvent.key`` values) before class keys and user changes."""


def build_painter_keymap(classes, changes: dict | None = None) -> dict[str, str]:
    """The full key -> action map of the mask painter for ``classes``, with the user's ``changes``.

    Keys ``1``-``9``, ``0`` give the first ten classes by position (class names are never
    keys here: letters are the tools'); classes beyond the tenth are picked in the
    searchable palette (``/``) or given keys in ``changes``. ``None`` unbinds a key.
    Raises ``ValueError`` naming the key for an unknown action or a class beyond ``classes``.

    >>> km = build_painter_keymap(["road", "car"], {"q": "class:2", "Delete": None})
    >>> km["1"], km["q"], km["Enter"], "3" in km, "Delete" in km
    ('class:1', 'class:2', 'submit', False, False)
    """
    classes = list(classes)
    out = dict(PAINTER_KEYS)
    out.update({str((i + 1) % 10): f"class:{i + 1}" for i in range(min(10, len(classes)))})
    return _apply_changes(out, changes, len(classes), PAINTER_ACTIONS)


def _apply_changes(out: dict, changes, n_classes: int, actions) -> dict:
    """``out`` with the user's ``changes`` ({key: action, or None to unbind}) applied and checked."""
    if changes is None:
        return out
    if not isinstance(changes, dict):
        raise TypeError(f"keymap must be a dict {{key: action}}, got {type(changes).__name__}")
    for key, action in changes.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"keymap keys are KeyboardEvent.key strings such as 'q' or 'ArrowLeft', got {key!r}")
        if action is None:
            out.pop(key, None)
            continue
        check_action(action, n_classes, where=f"keymap[{key!r}]", actions=actions)
        out[key] = action
    return out
