// @vitest-environment jsdom
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import widget, { applyAction, clickTile, createState, DEFAULT_KEYMAP, filterClasses } from "../labelgrid.js";

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

const CLASSES = ["cat", "dog", "<b>bird</b>"];

function items(n) {
  return Array.from({ length: n }, (_, i) => ({
    id: `img-${i}`, caption: `file ${i}.jpg`, suggestion: CLASSES[i % 3], confidence: 0.5 + i / 100,
    w: 32 + i, h: 32, mime: "image/jpeg",
  }));
}

function mount(extra = {}) {
  const model = fakeModel({
    items: items(6), thumbs: items(6).map((_, i) => new DataView(new Uint8Array([0xff, 0xd8, i]).buffer)),
    classes: CLASSES, keymap: DEFAULT_KEYMAP, progress: { pool_labelled: 3, pool_size: 100, budget: 50 },
    status: "", busy: false, assignments: {}, columns: 3, autofocus: false, ...extra,
  });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  const root = el.querySelector(".alw-grid");
  const press = (key, opts = {}) => {
    const ev = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true, ...opts });
    (opts.target || root).dispatchEvent(ev);
    return ev;
  };
  const tiles = () => [...el.querySelectorAll(".alw-tile")];
  const focused = () => tiles().findIndex((t) => t.classList.contains("alw-focus"));
  return { model, el, root, press, tiles, focused, cleanup };
}

let created;
beforeEach(() => {
  created = [];
  URL.createObjectURL = vi.fn((blob) => { created.push(blob); return `blob:fake/${created.length}`; });
  URL.revokeObjectURL = vi.fn();
});
afterEach(() => { document.body.replaceChildren(); });

describe("rendering", () => {
  it("draws one tile per item with blob-URL thumbnails, suggestion and confidence", () => {
    const { tiles, el } = mount();
    expect(tiles()).toHaveLength(6);
    const img = tiles()[1].querySelector("img");
    expect(img.getAttribute("src")).toBe("blob:fake/2");
    expect(created[1]).toBeInstanceOf(Blob);
    expect(created[1].type).toBe("image/jpeg");
    expect(created[1].size).toBe(3);
    expect(tiles()[1].querySelector(".alw-suggest").textContent).toBe("dog 51%");
    expect(el.querySelector(".alw-progress").textContent).toBe(
      "0/6 labelled in this batch · pool 3/100 labelled · budget 50");
    expect(tiles()[0].classList.contains("alw-focus")).toBe(true);
  });

  it("renders class names and captions as text, never HTML", () => {
    const { el, tiles } = mount({ items: [{ id: "x", caption: "<img src=x onerror=alert(1)>", suggestion: "<b>bird</b>" }] });
    expect(el.querySelector(".alw-tiles img[onerror]")).toBeNull();
    expect(el.querySelector("b")).toBeNull();
    expect(tiles()[0].querySelector(".alw-caption").textContent).toBe("<img src=x onerror=alert(1)>");
    const buttons = [...el.querySelectorAll(".alw-class")].map((b) => b.textContent);
    expect(buttons).toEqual(["1cat", "2dog", "3<b>bird</b>"]);
  });

  it("revokes old blob URLs when a new batch arrives, and on teardown", () => {
    const { model, cleanup } = mount();
    model.update("items", items(2));
    expect(URL.revokeObjectURL).toHaveBeenCalledTimes(6);
    cleanup();
    expect(URL.revokeObjectURL).toHaveBeenCalledTimes(8);
  });
});

describe("key map", () => {
  it("digits assign a class and move focus to the next unlabelled tile", () => {
    const { press, model, focused, tiles } = mount();
    press("2");
    expect(model.state.assignments).toEqual({ "img-0": "dog" });
    expect(focused()).toBe(1);
    expect(tiles()[0].querySelector(".alw-assigned").textContent).toBe("dog");
    press("ArrowLeft");           // back onto the labelled tile, relabel it
    expect(focused()).toBe(0);
    press("1");
    expect(model.state.assignments).toEqual({ "img-0": "cat" });
    expect(focused()).toBe(1);
  });

  it("ignores class numbers beyond the class list", () => {
    const { press, model } = mount();
    press("9");
    expect(model.state.assignments).toEqual({});
  });

  it("arrows and h/j/k/l move focus within the grid", () => {
    const { press, focused } = mount();
    press("l"); press("ArrowRight");
    expect(focused()).toBe(2);
    press("j");                    // 3 columns (jsdom has no layout)
    expect(focused()).toBe(5);
    press("ArrowDown");            // off the grid: stays
    expect(focused()).toBe(5);
    press("k"); press("h");
    expect(focused()).toBe(1);
  });

  it("space skips, z and Backspace undo, a accepts the suggestion", () => {
    const { press, model, focused, tiles } = mount();
    press(" ");
    expect(tiles()[0].classList.contains("alw-skipped")).toBe(true);
    expect(focused()).toBe(1);
    press("a");                    // item 1 suggests dog
    expect(model.state.assignments).toEqual({ "img-1": "dog" });
    press("z");
    expect(model.state.assignments).toEqual({});
    expect(focused()).toBe(1);
    press("Backspace");            // undoes the skip
    expect(tiles()[0].classList.contains("alw-skipped")).toBe(false);
    expect(focused()).toBe(0);
    press("Backspace");            // nothing left here: ask Python to undo its last saved label
    expect(model.sent).toEqual([{ type: "undo" }]);
  });

  it("Enter submits labels, sources, skips and seconds in one message", () => {
    const { press, model } = mount();
    press("3"); press(" "); press("a");
    press("Enter");
    expect(model.sent).toHaveLength(1);
    const msg = model.sent[0];
    expect(msg.type).toBe("submit");
    expect(msg.labels).toEqual({ "img-0": "<b>bird</b>", "img-2": "<b>bird</b>" });
    expect(msg.sources).toEqual({ "img-0": "human", "img-2": "accepted" });
    expect(msg.skipped).toEqual(["img-1"]);
    expect(Object.keys(msg.seconds).sort()).toEqual(["img-0", "img-2"]);
    press("1");                     // busy until Python answers: keys do nothing
    press("Enter");
    expect(model.sent).toHaveLength(1);
    model.update("items", items(3)); // the next batch clears the busy state
    press("Enter");
    expect(model.sent).toHaveLength(2);
  });

  it("keeps keys away from Jupyter except Esc, which leaves the widget", () => {
    const { press, root } = mount();
    const seen = [];
    document.addEventListener("keydown", (e) => seen.push(e.key));
    root.focus();
    const ev = press("a");
    press("x");                    // unmapped keys do not leak either (x = cut cell)
    expect(seen).toEqual([]);
    expect(ev.defaultPrevented).toBe(true);
    press("Escape");
    expect(seen).toEqual(["Escape"]);
    expect(document.activeElement).not.toBe(root);
    expect(root.getAttribute("data-lm-suppress-shortcuts")).toBe("true");
  });

  it("follows an edited keymap", () => {
    const keymap = { ...DEFAULT_KEYMAP, q: "class:1", w: "class:2", s: "submit" };
    delete keymap["1"];
    const { press, model } = mount({ keymap });
    press("1");
    expect(model.state.assignments).toEqual({});
    press("w");
    press("s");
    expect(model.sent[0].labels).toEqual({ "img-0": "dog" });
  });
});

describe("mouse", () => {
  it("shift-click selects a range, ctrl-click toggles, a class button labels them all", () => {
    const { tiles, el, model } = mount();
    const click = (i, opts = {}) => tiles()[i].dispatchEvent(new MouseEvent("click", { bubbles: true, ...opts }));
    click(1);
    click(3, { shiftKey: true });
    click(2, { ctrlKey: true });   // drop 2 from the range
    click(5, { metaKey: true });   // add 5
    expect(tiles().filter((t) => t.classList.contains("alw-selected")).map((t) => t.dataset.index))
      .toEqual(["1", "3", "5"]);
    el.querySelectorAll(".alw-class")[0].click();
    expect(model.state.assignments).toEqual({ "img-1": "cat", "img-3": "cat", "img-5": "cat" });
    expect(tiles().some((t) => t.classList.contains("alw-selected"))).toBe(false);
    // one undo step takes back the whole multi-assignment
    el.querySelector(".alw-undo").click();
    expect(model.state.assignments).toEqual({});
  });

  it("click-to-enlarge shows the image and asks Python for a larger one", () => {
    const { tiles, el, model } = mount();
    tiles()[4].querySelector(".alw-zoom").click();
    const overlay = el.querySelector(".alw-overlay");
    expect(overlay.hidden).toBe(false);
    expect(el.querySelector(".alw-overlay-caption").textContent).toBe("file 4.jpg (img-4)");
    expect(model.sent).toEqual([{ type: "enlarge", id: "img-4" }]);
    model.emit("msg:custom", { type: "image", id: "img-4", mime: "image/webp" }, [new DataView(new ArrayBuffer(10))]);
    expect(created.at(-1).type).toBe("image/webp");
    expect(el.querySelector(".alw-overlay-img").getAttribute("src")).toBe(`blob:fake/${created.length}`);
    overlay.click();
    expect(overlay.hidden).toBe(true);
  });
});

describe("class palette", () => {
  const many = Array.from({ length: 14 }, (_, i) => `class ${String.fromCharCode(65 + i)}`);

  it("more than 10 classes get a search box; Enter assigns the first match", () => {
    const { el, model, root, press } = mount({ classes: many });
    const search = el.querySelector(".alw-search");
    expect(search).not.toBeNull();
    press("/");
    search.value = "m";
    search.dispatchEvent(new Event("input"));
    expect([...el.querySelectorAll(".alw-class")].map((b) => b.title)).toEqual(["class M"]);
    const seen = [];
    document.addEventListener("keydown", (e) => seen.push(e.key));
    press("Enter", { target: search });
    expect(model.state.assignments).toEqual({ "img-0": "class M" });
    expect(seen).toEqual([]);
    expect(model.sent).toEqual([]);   // Enter in the search box does not submit
    expect(document.activeElement).toBe(root);
  });

  it("10 or fewer classes: plain buttons, no search", () => {
    const { el } = mount();
    expect(el.querySelector(".alw-search")).toBeNull();
  });
});

describe("pure state", () => {
  it("filterClasses keeps 1-based numbers", () => {
    expect(filterClasses(["Cat", "dog", "catfish"], "CAT")).toEqual([
      { name: "Cat", number: 1 }, { name: "catfish", number: 3 }]);
  });

  it("focus wraps to the first open tile and stays when all are done", () => {
    const its = items(3);
    const s = createState(3);
    s.focus = 2;
    applyAction(s, "class:1", { items: its, classes: CLASSES });
    expect(s.focus).toBe(0);
    applyAction(s, "class:1", { items: its, classes: CLASSES });
    applyAction(s, "class:1", { items: its, classes: CLASSES });
    expect(s.assign.size).toBe(3);
    expect(s.focus).toBe(1);
  });

  it("clickTile toggling starts from the focused tile", () => {
    const s = createState(4);
    clickTile(s, 2, { toggle: true });
    expect([...s.selected].sort()).toEqual([0, 2]);
  });
});
