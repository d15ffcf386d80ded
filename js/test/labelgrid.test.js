// Unit tests of the LabelGrid front end (node --test, DOM from jsdom).
// The key maps come from Python (keymaps.json, written by keymaps.py): the widget has none of its own.
import { afterEach, beforeEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
for (const k of ["window", "document", "KeyboardEvent", "MouseEvent", "Event", "FocusEvent", "HTMLElement"]) {
  globalThis[k] = k === "window" ? dom.window : dom.window[k];
}

const widget = (await import("../../alwidgets/widgets/static/labelgrid.js")).default;
const { applyAction, classHint, clickTile, createState, errorText, filterClasses, keyLabel, keysFor,
        mayTakeFocus, progressText } = await import("../../alwidgets/widgets/static/labelgrid.js");

const MAPS = JSON.parse(readFileSync(new URL("./keymaps.json", import.meta.url), "utf-8"));
const PETS = MAPS.pets.classes;

/** A stand-in for anywidget's model: get/set/on/off/save_changes/send. */
function fakeModel(state) {
  const handlers = {};
  const sent = [];
  return {
    state,
    sent,
    saves: 0,
    get(k) { return this.state[k]; },
    set(k, v) { this.state[k] = v; },
    save_changes() { this.saves += 1; },
    send(msg) { sent.push(msg); },
    on(ev, f) { (handlers[ev] ||= []).push(f); },
    off(ev, f) { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
    emit(ev, ...args) { (handlers[ev] || []).forEach((f) => f(...args)); },
    update(k, v) { this.state[k] = v; this.emit(`change:${k}`); },
  };
}

function items(n, classes = PETS) {
  return Array.from({ length: n }, (_, i) => ({
    id: `img-${i}`, caption: `file ${i}.jpg`, suggestion: classes[i % classes.length], confidence: 0.5 + i / 100,
    w: 32 + i, h: 32, mime: "image/jpeg", error: null, thumb: new DataView(new Uint8Array([0xff, 0xd8, i]).buffer),
  }));
}

let created;
let mounted = [];

function mount(extra = {}, { experimental } = {}) {
  const model = fakeModel({
    items: items(6), classes: PETS, keymap: MAPS.pets.keymap, batch: 1,
    progress: { pool_labelled: 3, pool_size: 100, budget: 50 }, status: "", notice: "", error: {}, busy: false,
    assignments: {}, columns: 3, autofocus: false, ...extra,
  });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el, experimental });
  mounted.push(cleanup);
  const root = el.querySelector(".alw-grid");
  const press = (key, opts = {}) => {
    const ev = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true, ...opts });
    (opts.target || root).dispatchEvent(ev);
    return ev;
  };
  const tiles = () => [...el.querySelectorAll(".alw-tile")];
  const cursor = () => tiles().findIndex((t) => t.classList.contains("alw-focus"));
  const tick = () => new Promise((r) => setTimeout(r, 5));
  return { model, el, root, press, tiles, cursor, cleanup, tick };
}

beforeEach(() => {
  created = [];
  URL.createObjectURL = (blob) => { created.push(blob); return `blob:fake/${created.length}`; };
  URL.revokeObjectURL = (u) => { URL.revoked.push(u); };
  URL.revoked = [];
});
afterEach(() => {
  mounted.forEach((c) => c());
  mounted = [];
  document.body.replaceChildren();
});

describe("rendering", () => {
  it("draws one tile per item from the item's own thumbnail bytes", () => {
    const { tiles, el } = mount();
    assert.equal(tiles().length, 6);
    const img = tiles()[1].querySelector("img");
    assert.equal(img.getAttribute("src"), "blob:fake/2");
    assert.equal(created[1].type, "image/jpeg");
    assert.equal(created[1].size, 3);
    assert.equal(tiles()[1].querySelector(".alw-suggest").textContent, "dog (51%)");
    assert.equal(el.querySelector(".alw-progress").textContent,
                 "0/6 labelled in this batch · pool 3/100 labelled · budget 50");
  });

  it("an item without bytes or with an error is a placeholder tile that can still be labelled", () => {
    const its = items(2);
    its[0].thumb = new DataView(new ArrayBuffer(0));
    its[1].error = "truncated file";
    const { tiles, press, model } = mount({ items: its });
    assert.equal(tiles()[0].querySelectorAll(".alw-placeholder").length, 1);
    assert.equal(tiles()[1].querySelector(".alw-placeholder").title, "truncated file");
    assert.equal(created.length, 0);
    press("1");
    assert.deepEqual(model.state.assignments, { "img-0": "cat" });
  });

  it("renders class names and captions as text, never HTML", () => {
    const { el, tiles } = mount({ items: [{ ...items(1)[0], caption: "<img src=x onerror=alert(1)>",
                                            suggestion: "<b>bird</b>" }] });
    assert.equal(el.querySelector(".alw-tiles img[onerror]"), null);
    assert.equal(el.querySelector("b"), null);
    assert.equal(tiles()[0].querySelector(".alw-caption").textContent, "<img src=x onerror=alert(1)>");
    assert.deepEqual([...el.querySelectorAll(".alw-class-name")].map((b) => b.textContent), PETS);
  });

  it("revokes old blob URLs when a new batch arrives, and on teardown", () => {
    const { model, cleanup } = mount();
    model.update("items", items(2));
    assert.equal(URL.revoked.length, 6);
    cleanup();
    assert.equal(URL.revoked.length, 8);
  });

  it("a state update whose progress arrives before its new items does not break the grid", () => {
    const { model, tiles } = mount();
    model.state.items = items(2);
    model.state.progress = { pool_labelled: 9, pool_size: 100 };
    assert.doesNotThrow(() => model.emit("change:progress"));
    assert.equal(tiles().length, 2);
    model.emit("change:items");
    assert.equal(tiles().length, 2);
  });

  it("shows accuracy ± std in the progress line", () => {
    assert.equal(progressText(0, 0, { pool_labelled: 14, pool_size: 1797, accuracy: 0.6249, accuracy_std: 0.081 }),
                 "pool 14/1797 labelled · accuracy 62% ± 8");
    assert.equal(progressText(4, 1, { accuracy: 0.5 }), "1/4 labelled in this batch · accuracy 50%");
  });
});

describe("key map from Python", () => {
  it("has no key map of its own: with an empty map no key does anything", () => {
    const { press, model, cursor } = mount({ keymap: {} });
    for (const k of ["1", "a", " ", "ArrowRight", "Enter", "z"]) press(k);
    assert.deepEqual(model.state.assignments, {});
    assert.equal(cursor(), 0);
    assert.deepEqual(model.sent, []);
  });

  it("digit classes: pressing 6 labels the tile '6', and the button shows 6 once", () => {
    const { press, model, el } = mount({ classes: MAPS.digits.classes, keymap: MAPS.digits.keymap,
                                         items: items(3, MAPS.digits.classes) });
    press("6");
    press("0");
    assert.deepEqual(model.state.assignments, { "img-0": "6", "img-1": "0" });
    const six = [...el.querySelectorAll(".alw-class")][6];
    assert.equal(six.textContent, "6");
    assert.ok(six.classList.contains("alw-class-is-key"));
    assert.equal(six.querySelectorAll("kbd").length, 1);
  });

  it("other names: the key is a separate keycap next to the name", () => {
    const { el } = mount();
    const b = el.querySelectorAll(".alw-class")[1];
    assert.equal(b.querySelector("kbd.alw-key").textContent, "2");
    assert.equal(b.querySelector(".alw-class-name").textContent, "dog");
    assert.ok(!b.classList.contains("alw-class-is-key"));
    assert.equal(b.title, "dog (key 2)");
  });

  it("letter classes take their letter, even an action's key (a)", () => {
    const { press, model, el } = mount({ classes: MAPS.letters.classes, keymap: MAPS.letters.keymap,
                                         items: items(3, MAPS.letters.classes) });
    press("x");
    press("a");
    assert.deepEqual(model.state.assignments, { "img-0": "x", "img-1": "a" });
    assert.equal(el.querySelector(".alw-accept kbd"), null); // accept has no key left: its button still works
    el.querySelector(".alw-accept").click();
    assert.deepEqual(model.state.assignments, { "img-0": "x", "img-1": "a", "img-2": "x" });
  });

  it("action buttons show the keys the map gives them", () => {
    const { el } = mount({ keymap: MAPS.edited.keymap });
    assert.equal(el.querySelector(".alw-accept kbd").textContent, "e");
    assert.equal(el.querySelector(".alw-skip kbd").textContent, "Space");
    assert.equal(el.querySelector(".alw-submit kbd").textContent, "Enter");
    assert.equal(el.querySelectorAll(".alw-class")[0].querySelector("kbd").textContent, "q");
  });

  it("follows an edited key map", () => {
    const { press, model } = mount({ keymap: MAPS.edited.keymap });
    press("1");
    press("a");
    assert.deepEqual(model.state.assignments, {});
    press("w");
    press("s");
    assert.deepEqual(model.sent[0].labels, { "img-0": "dog" });
  });

  it("digits assign a class and move the cursor to the next unlabelled tile", () => {
    const { press, model, cursor, tiles } = mount();
    press("2");
    assert.deepEqual(model.state.assignments, { "img-0": "dog" });
    assert.equal(cursor(), 1);
    assert.equal(tiles()[0].querySelector(".alw-assigned").textContent, "dog");
    press("ArrowLeft");
    press("1");
    assert.deepEqual(model.state.assignments, { "img-0": "cat" });
    assert.equal(cursor(), 1);
  });

  it("arrows and h/j/k/l move the cursor within the grid", () => {
    const { press, cursor } = mount();
    press("l"); press("ArrowRight");
    assert.equal(cursor(), 2);
    press("j");
    assert.equal(cursor(), 5);
    press("ArrowDown");
    assert.equal(cursor(), 5);
    press("k"); press("h");
    assert.equal(cursor(), 1);
  });

  it("space skips, z and Backspace undo, a accepts the suggestion", () => {
    const { press, model, cursor, tiles } = mount();
    press(" ");
    assert.ok(tiles()[0].classList.contains("alw-skipped"));
    press("a");
    assert.deepEqual(model.state.assignments, { "img-1": "dog" });
    press("z");
    assert.deepEqual(model.state.assignments, {});
    assert.equal(cursor(), 1);
    press("Backspace");
    assert.ok(!tiles()[0].classList.contains("alw-skipped"));
    press("Backspace"); // nothing left here: ask Python to retract its last saved label
    assert.deepEqual(model.sent, [{ type: "undo" }]);
  });

  it("keeps keys away from Jupyter except Esc, which leaves the widget", () => {
    const { press, root } = mount();
    const seen = [];
    const spy = (e) => seen.push(e.key);
    document.addEventListener("keydown", spy);
    root.focus();
    const ev = press("a");
    press("x");
    assert.deepEqual(seen, []);
    assert.ok(ev.defaultPrevented);
    press("Escape");
    assert.deepEqual(seen, ["Escape"]);
    assert.notEqual(document.activeElement, root);
    assert.equal(root.getAttribute("data-lm-suppress-shortcuts"), "true");
    document.removeEventListener("keydown", spy);
  });
});

describe("focus", () => {
  it("no cursor ring and a 'click to label' hint until the grid has the focus", async () => {
    const { root, el, tiles, tick } = mount();
    await tick();
    assert.ok(!root.classList.contains("alw-active"));
    assert.equal(el.querySelector(".alw-hint").hidden, false);
    assert.match(el.querySelector(".alw-hint").textContent, /click a tile/);
    tiles()[2].dispatchEvent(new MouseEvent("click", { bubbles: true }));
    assert.equal(document.activeElement, root);
    assert.ok(root.classList.contains("alw-active"));
    assert.equal(el.querySelector(".alw-hint").hidden, true);
    root.blur();
    await tick();
    assert.ok(!root.classList.contains("alw-active"));
    assert.equal(el.querySelector(".alw-hint").hidden, false);
  });

  it("takes the focus when a batch renders, unless the user is typing elsewhere", async () => {
    const a = mount({ autofocus: true });
    await a.tick();
    assert.equal(document.activeElement, a.root);
    assert.equal(a.el.querySelector(".alw-hint").hidden, true);
    a.cleanup();
    document.body.replaceChildren();

    const editor = document.createElement("textarea");   // a notebook cell being edited
    document.body.appendChild(editor);
    editor.focus();
    const b = mount({ autofocus: true });
    await b.tick();
    assert.equal(document.activeElement, editor);
    assert.equal(b.el.querySelector(".alw-hint").hidden, false);
    b.model.update("items", items(3));                    // a new batch does not steal it either
    await b.tick();
    assert.equal(document.activeElement, editor);
  });

  it("mayTakeFocus: not from inputs or editable content", () => {
    assert.equal(mayTakeFocus(document.body), true);
    assert.equal(mayTakeFocus(document.createElement("input")), false);
    const div = document.createElement("div");
    assert.equal(mayTakeFocus(div), true);
  });
});

describe("submit, errors and the empty state", () => {
  it("Enter submits labels, sources, skips, seconds and the batch number in one message", () => {
    const { press, model } = mount({ batch: 7 });
    press("3"); press(" "); press("a");
    press("Enter");
    assert.equal(model.sent.length, 1);
    const msg = model.sent[0];
    assert.equal(msg.type, "submit");
    assert.equal(msg.batch, 7);
    assert.deepEqual(msg.labels, { "img-0": "<b>bird</b>", "img-2": "<b>bird</b>" });
    assert.deepEqual(msg.sources, { "img-0": "human", "img-2": "accepted" });
    assert.deepEqual(msg.skipped, ["img-1"]);
    assert.deepEqual(Object.keys(msg.seconds).sort(), ["img-0", "img-2"]);
    press("1"); // busy until Python answers: keys do nothing
    press("Enter");
    assert.equal(model.sent.length, 1);
    model.update("busy", true);
    model.update("busy", false); // Python answered (a refusal keeps the batch): keys work again
    press("Enter");
    assert.equal(model.sent.length, 2);
    assert.deepEqual(model.sent[1].labels, msg.labels);
  });

  it("shows a structured error as an alert, and clears it", () => {
    const { model, el } = mount();
    const alert = el.querySelector(".alw-error");
    assert.equal(alert.hidden, true);
    model.update("error", { kind: "submit", message: "the store is locked" });
    assert.equal(alert.hidden, false);
    assert.equal(alert.getAttribute("role"), "alert");
    assert.equal(alert.dataset.kind, "submit");
    assert.match(alert.textContent, /^Not saved: the store is locked\. The batch is kept/);
    assert.equal(el.querySelectorAll(".alw-tile").length, 6); // the batch stays for a retry
    model.update("error", {});
    assert.equal(alert.hidden, true);
    assert.equal(errorText({ kind: "unreadable", message: "2 image(s) could not be read" }),
                 "2 image(s) could not be read");
  });

  it("after a batch is saved: says what happened and what to run, no '0/0', no dead buttons", () => {
    const { model, el, press } = mount();
    model.update("notice", "saved 6 labels — run session.label() again (or pass continuous=True) for the next batch");
    model.update("items", []);
    const notice = el.querySelector(".alw-notice");
    assert.equal(notice.hidden, false);
    assert.match(notice.textContent, /^saved 6 labels — run session\.label\(\) again/);
    assert.equal(el.querySelector(".alw-progress").textContent, "pool 3/100 labelled · budget 50");
    assert.equal(el.querySelector(".alw-classes").hidden, true);
    assert.equal(el.querySelector(".alw-submit").hidden, true);
    assert.equal(el.querySelector(".alw-hint").hidden, true);
    press("Enter");
    press("1");
    assert.deepEqual(model.sent, []);
    press("Backspace"); // undo still retracts the last saved label
    assert.deepEqual(model.sent, [{ type: "undo" }]);
  });

  it("a status line is one line with the whole text on hover", () => {
    const { model, el } = mount();
    const long = "saved 16 labels; accuracy 81% ± 4 (cross-validated on 64 labelled items)".repeat(3);
    model.update("status", long);
    assert.equal(el.querySelector(".alw-status").textContent, long);
    assert.equal(el.querySelector(".alw-status").title, long);
  });
});

describe("mouse and enlarge", () => {
  it("shift-click selects a range, ctrl-click toggles, a class button labels them all", () => {
    const { tiles, el, model } = mount();
    const click = (i, opts = {}) => tiles()[i].dispatchEvent(new MouseEvent("click", { bubbles: true, ...opts }));
    click(1);
    click(3, { shiftKey: true });
    click(2, { ctrlKey: true });
    click(5, { metaKey: true });
    assert.deepEqual(tiles().filter((t) => t.classList.contains("alw-selected")).map((t) => t.dataset.index),
                     ["1", "3", "5"]);
    el.querySelectorAll(".alw-class")[0].click();
    assert.deepEqual(model.state.assignments, { "img-1": "cat", "img-3": "cat", "img-5": "cat" });
    el.querySelector(".alw-undo").click();
    assert.deepEqual(model.state.assignments, {});
  });

  it("enlarge shows the thumbnail, then the larger image from experimental.invoke", async () => {
    const calls = [];
    const experimental = {
      invoke: async (name, msg, opts) => {
        calls.push([name, msg, opts.signal instanceof AbortSignal]);
        return [{ id: msg.id, mime: "image/webp" }, [new DataView(new ArrayBuffer(10))]];
      },
    };
    const { tiles, el, model } = mount({}, { experimental });
    tiles()[4].querySelector(".alw-zoom").click();
    const overlay = el.querySelector(".alw-overlay");
    assert.equal(overlay.hidden, false);
    assert.equal(el.querySelector(".alw-overlay-caption").textContent, "file 4.jpg (img-4)");
    await new Promise((r) => setTimeout(r, 5));
    assert.deepEqual(calls, [["enlarge", { id: "img-4" }, true]]);
    assert.equal(created.at(-1).type, "image/webp");
    assert.equal(el.querySelector(".alw-overlay-img").getAttribute("src"), `blob:fake/${created.length}`);
    assert.deepEqual(model.sent, []); // no hand-made request message
    overlay.click();
    assert.equal(overlay.hidden, true);
  });

  it("enlarge: an error answer is said, a failed invoke keeps the thumbnail", async () => {
    let answer = [{ id: "img-0", error: "cannot read item" }, []];
    const experimental = { invoke: async () => { if (answer instanceof Error) throw answer; return answer; } };
    const { tiles, el } = mount({}, { experimental });
    tiles()[0].querySelector(".alw-zoom").click();
    await new Promise((r) => setTimeout(r, 5));
    assert.match(el.querySelector(".alw-overlay-caption").textContent, /larger image unavailable: cannot read item/);
    answer = new Error("timeout");
    tiles()[1].querySelector(".alw-zoom").click();
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(el.querySelector(".alw-overlay-img").getAttribute("src"), `blob:fake/${created.length}`);
  });
});

describe("class palette", () => {
  it("more than 10 classes get a search box ('/' from the key map); Enter assigns the first match", () => {
    const { el, model, root, press } = mount({ classes: MAPS.many.classes, keymap: MAPS.many.keymap });
    const search = el.querySelector(".alw-search");
    assert.ok(search);
    root.focus();
    press("/");
    assert.equal(document.activeElement, search);
    search.value = "m";
    search.dispatchEvent(new Event("input"));
    assert.deepEqual([...el.querySelectorAll(".alw-class-name")].map((b) => b.textContent), ["class M"]);
    const seen = [];
    const spy = (e) => seen.push(e.key);
    document.addEventListener("keydown", spy);
    press("Enter", { target: search });
    document.removeEventListener("keydown", spy);
    assert.deepEqual(model.state.assignments, { "img-0": "class M" });
    assert.deepEqual(seen, []);
    assert.deepEqual(model.sent, []);
    assert.equal(document.activeElement, root);
  });

  it("10 or fewer classes: plain buttons, no search", () => {
    const { el } = mount();
    assert.equal(el.querySelector(".alw-search"), null);
  });
});

describe("pure helpers", () => {
  it("keysFor / keyLabel / classHint read only the given map", () => {
    assert.deepEqual(keysFor(MAPS.pets.keymap, "undo"), ["Backspace", "z"]);
    assert.equal(keyLabel(" "), "Space");
    assert.deepEqual(classHint(MAPS.digits.keymap, 7, "6"), { keys: ["6"], isName: true });
    assert.deepEqual(classHint(MAPS.pets.keymap, 1, "cat"), { keys: ["1"], isName: false });
    assert.deepEqual(classHint({}, 1, "cat"), { keys: [], isName: false });
  });

  it("filterClasses keeps 1-based numbers", () => {
    assert.deepEqual(filterClasses(["Cat", "dog", "catfish"], "CAT"),
                     [{ name: "Cat", number: 1 }, { name: "catfish", number: 3 }]);
  });

  it("class actions beyond the class list do nothing", () => {
    const s = createState(2);
    assert.equal(applyAction(s, "class:4", { items: items(2), classes: PETS }), null);
    assert.equal(s.assign.size, 0);
  });

  it("the cursor wraps to the first open tile and stays when all are done", () => {
    const its = items(3);
    const s = createState(3);
    s.focus = 2;
    applyAction(s, "class:1", { items: its, classes: PETS });
    assert.equal(s.focus, 0);
    applyAction(s, "class:1", { items: its, classes: PETS });
    applyAction(s, "class:1", { items: its, classes: PETS });
    assert.equal(s.assign.size, 3);
    assert.equal(s.focus, 1);
  });

  it("an empty batch never submits", () => {
    assert.equal(applyAction(createState(0), "submit", { items: [], classes: PETS }), null);
    assert.equal(applyAction(createState(0), "undo", { items: [], classes: PETS }), "undo-remote");
  });

  it("clickTile toggling starts from the cursor tile", () => {
    const s = createState(4);
    clickTile(s, 2, { toggle: true });
    assert.deepEqual([...s.selected].sort(), [0, 2]);
  });
});
