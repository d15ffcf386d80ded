// Unit tests of the MaskPainter front end (node --test, DOM from jsdom): rasterisation, history, pre-fill, PNG.
import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { inflateSync } from "node:zlib";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
for (const k of ["window", "document", "KeyboardEvent", "MouseEvent", "Event", "HTMLElement"]) {
  globalThis[k] = k === "window" ? dom.window : dom.window[k];
}

const mod = await import("../../alwidgets/widgets/static/maskpainter.js");
const { applyKey, crc32, createMask, createPainter, encodePNG, fillPolygon, History, paintDisc, paintStroke,
        prefill } = mod;
const widget = mod.default;

const W = 10, H = 8, IGN = 255;

function painted(mask, value) {
  const out = [];
  mask.forEach((v, i) => { if (v === value) out.push([i % W, Math.floor(i / W)]); });
  return out;
}

describe("rasterisation", () => {
  it("a disc sets exactly the pixels whose centres are within the radius", () => {
    const m = createMask(W, H, IGN);
    paintDisc(m, W, H, 5, 4, 2, 2);
    const expected = [];
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      if ((x + 0.5 - 5) ** 2 + (y + 0.5 - 4) ** 2 <= 4) expected.push([x, y]);
    }
    assert.deepEqual(painted(m, 2), expected);
    assert.equal(expected.length, 12);
  });

  it("a stroke leaves no gap between far-apart points and stays inside the image", () => {
    const m = createMask(W, H, IGN);
    paintStroke(m, W, H, [[0.5, 4.5], [9.5, 4.5]], 0.6, 1);
    assert.deepEqual(painted(m, 1), Array.from({ length: W }, (_, x) => [x, 4]));
    paintStroke(m, W, H, [[-5, -5], [20, 20]], 3, 3);            // off-image ends: clipped, no throw
    assert.equal(m.length, W * H);
  });

  it("a polygon fills the pixel centres inside it, shared edges once", () => {
    const m = createMask(W, H, IGN);
    fillPolygon(m, W, H, [[2, 1], [6, 1], [6, 4], [2, 4]], 4);   // centres x 2..5, y 1..3
    const exp = [];
    for (let y = 1; y <= 3; y++) for (let x = 2; x <= 5; x++) exp.push([x, y]);
    assert.deepEqual(painted(m, 4), exp);
    const t = createMask(W, H, IGN);
    fillPolygon(t, W, H, [[0, 0], [8, 0], [0, 8]], 1);           // right triangle: centres with x + y < 7
    assert.equal(painted(t, 1).length, 28);
    assert.ok(painted(t, 1).every(([x, y]) => x + y + 1 < 8));
    fillPolygon(t, W, H, [[0, 0], [1, 1]], 9);                   // fewer than 3 points: nothing
    assert.equal(painted(t, 9).length, 0);
  });
});

describe("painter state", () => {
  it("eraser paints the ignore index; undo and redo restore exact states", () => {
    const st = createPainter(W, H, IGN);
    const s0 = st.mask.slice();
    applyKey(st, "class:1", { nClasses: 3 });
    st.history.record(st.mask);
    paintDisc(st.mask, W, H, 3, 3, 2, st.cls);
    const s1 = st.mask.slice();
    applyKey(st, "eraser", { nClasses: 3 });
    st.history.record(st.mask);
    paintDisc(st.mask, W, H, 3, 3, 1, st.tool === "eraser" ? st.ignore : st.cls);
    const s2 = st.mask.slice();
    assert.ok(painted(s2, 1).length < painted(s1, 1).length);
    applyKey(st, "undo", { nClasses: 3 });
    assert.deepEqual(st.mask, s1);
    applyKey(st, "undo", { nClasses: 3 });
    assert.deepEqual(st.mask, s0);
    applyKey(st, "undo", { nClasses: 3 });                        // nothing left: unchanged
    assert.deepEqual(st.mask, s0);
    applyKey(st, "redo", { nClasses: 3 });
    applyKey(st, "redo", { nClasses: 3 });
    assert.deepEqual(st.mask, s2);
  });

  it("a new change clears the redo list; history keeps at most its limit", () => {
    const h = new History(2);
    const m = createMask(2, 1, 0);
    for (let v = 1; v <= 4; v++) { h.record(m); m.fill(v); }
    assert.equal(h.past.length, 2);
    h.undo(m); h.record(m); m.fill(9);
    assert.equal(h.redo(m), false);
  });

  it("polygon mode: Enter closes the polygon, then Enter submits; undo removes the fill", () => {
    const st = createPainter(W, H, IGN);
    applyKey(st, "polygon", { nClasses: 3 });
    applyKey(st, "class:2", { nClasses: 3 });
    st.polygon = [[1, 1], [5, 1], [5, 5]];
    assert.equal(applyKey(st, "enter", { nClasses: 3 }), "redraw");
    assert.ok(painted(st.mask, 2).length > 0);
    assert.equal(applyKey(st, "enter", { nClasses: 3 }), "submit");
    applyKey(st, "undo", { nClasses: 3 });
    assert.equal(painted(st.mask, 2).length, 0);
  });

  it("pre-fill copies the prediction and is undoable; a wrong size throws", () => {
    const st = createPainter(W, H, IGN);
    const pred = new Uint8Array(W * H).map((_, i) => i % 3);
    applyKey(st, "prefill", { nClasses: 3, prediction: pred });
    assert.deepEqual(st.mask, pred);
    applyKey(st, "undo", { nClasses: 3 });
    assert.deepEqual(st.mask, createMask(W, H, IGN));
    assert.throws(() => prefill(st.mask, new Uint8Array(3)), /3 pixels/);
    assert.equal(applyKey(st, "prefill", { nClasses: 3 }), "none");
  });

  it("class keys beyond the classes are ignored; brush size stays in bounds", () => {
    const st = createPainter(W, H, IGN);
    applyKey(st, "class:7", { nClasses: 3 });
    assert.equal(st.cls, 0);
    for (let i = 0; i < 40; i++) applyKey(st, "smaller", { nClasses: 3 });
    assert.equal(st.radius, 1);
    for (let i = 0; i < 60; i++) applyKey(st, "bigger", { nClasses: 3 });
    assert.equal(st.radius, 200);
  });
});

describe("PNG", () => {
  it("encodes an 8-bit greyscale PNG whose pixels are the mask", async () => {
    const m = new Uint8Array(W * H).map((_, i) => (i * 7) % 12);
    const png = await encodePNG(m, W, H);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const dv = new DataView(png.buffer);
    assert.equal(dv.getUint32(16), W);
    assert.equal(dv.getUint32(20), H);
    assert.equal(png[24], 8);
    assert.equal(png[25], 0);
    assert.equal(dv.getUint32(29), crc32(png.subarray(12, 29)));
    const idatLen = dv.getUint32(33);
    const raw = inflateSync(png.subarray(41, 41 + idatLen));
    const rows = [];
    for (let y = 0; y < H; y++) {
      assert.equal(raw[y * (W + 1)], 0);
      rows.push(...raw.subarray(y * (W + 1) + 1, (y + 1) * (W + 1)));
    }
    assert.deepEqual(rows, [...m]);
  });
});

describe("view", () => {
  afterEach(() => document.body.replaceChildren());

  function fakeModel(state) {
    const handlers = {}, sent = [];
    return {
      state, sent, get(k) { return this.state[k]; }, set(k, v) { this.state[k] = v; }, save_changes() {},
      send(msg, cb, buffers) { sent.push({ msg, buffers }); },
      on(ev, f) { (handlers[ev] ||= []).push(f); },
      off(ev, f) { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
    };
  }

  it("shows class names as text and submits a PNG buffer on Enter", async () => {
    URL.createObjectURL = () => "blob:x";
    URL.revokeObjectURL = () => {};
    const model = fakeModel({ image: new DataView(new Uint8Array([1, 2, 3]).buffer), mime: "image/png", width: W,
      height: H, classes: ["road", "<img src=x onerror=alert(1)>"], ignore_index: IGN,
      prediction: new DataView(new ArrayBuffer(0)), keymap: {}, status: "" });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    const buttons = [...el.querySelectorAll(".alw-painter-class")];
    assert.ok(buttons[1].textContent.includes("<img src=x onerror=alert(1)>"));
    assert.equal(el.querySelector("img[src='x']"), null);
    const root = el.querySelector(".alw-painter");
    const ev = new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true });
    root.dispatchEvent(ev);
    for (let i = 0; i < 100 && !model.sent.length; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(model.sent.length, 1);
    assert.equal(model.sent[0].msg.type, "submit");
    const png = new Uint8Array(model.sent[0].buffers[0]);
    assert.equal(png[1], 0x50);
    assert.ok(ev.defaultPrevented);
    cleanup();
  });
});
