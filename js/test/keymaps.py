"""Writes keymaps.json: the key maps Python sends for the class lists the JS tests use (grid and painter).

The JS has no key map of its own; its tests use these real ones. tests/test_js.py
checks that the file matches alwidgets.widgets.keymap.build_keymap (rerun this
script after changing the key rules: python js/test/keymaps.py).
"""
import json
import sys
from pathlib import Path

CASES = {
    "pets": {"classes": ["cat", "dog", "<b>bird</b>"], "changes": None},
    "digits": {"classes": [str(d) for d in range(10)], "changes": None},
    "letters": {"classes": ["a", "b", "x"], "changes": None},
    "many": {"classes": [f"class {chr(65 + i)}" for i in range(14)], "changes": None},
    "edited": {"classes": ["cat", "dog", "<b>bird</b>"],
               "changes": {"q": "class:1", "w": "class:2", "s": "submit", "1": None, "e": "accept", "a": None}},
}


PAINTER_CASES = {
    "painter": {"classes": ["sky", "road", "<b>car</b>"], "changes": None},
    "painter_many": {"classes": [f"class {chr(65 + i)}" for i in range(14)], "changes": {"q": "class:12"}},
}


def build() -> dict:
    from alwidgets.widgets.keymap import build_keymap, build_painter_keymap

    out = {name: {"classes": c["classes"], "keymap": build_keymap(c["classes"], c["changes"])}
           for name, c in CASES.items()}
    out.update({name: {"classes": c["classes"], "keymap": build_painter_keymap(c["classes"], c["changes"])}
                for name, c in PAINTER_CASES.items()})
    return out


def text() -> str:
    return json.dumps(build(), indent=1, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    (Path(__file__).parent / "keymaps.json").write_text(text(), encoding="utf-8")
