// Unit tests of the MaskPainter front end (node --test, DOM from jsdom): rasterisation, history, pre-fill,
// zoom mapping, the PNG codec, and the view (mouse painting, keys, messages) on a fake model.
// The key maps come from Python (keymaps.json, written by keymaps.py): the widget has none of its own.
import { afterEach, describe, it } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { deflateSync, inflateSync } from "node:zlib";
import { JSDOM } from "jsdom";

const dom = new JSDOM("<!doctype html><html><body></body></html>", { pretendToBeVisual: true });
for (const k of ["window", "document", "KeyboardEvent", "MouseEvent", "WheelEvent", "Event", "HTMLElement"]) {
  globalThis[k] = k === "window" ? dom.window : dom.window[k];
}
URL.createObjectURL = () => "blob:x";
URL.revokeObjectURL = () => {};

const mod = await import("../../alwidgets/widgets/static/maskpainter.js");
const { applyKey, clampView, closePolygon, crc32, createMask, createPainter, createView, decodePNG, encodePNG,
        fillPolygon, filterClasses, History, imageToScreen, paintDisc, paintStroke, panBy, prefill, screenToImage,
        touch, zoomAt } = mod;
const widget = mod.default;
const MAPS = JSON.parse(readFileSync(new URL("./keymaps.json", import.meta.url), "utf-8"));

const W = 10, H = 8, IGN = 255;

function painted(mask, value, w = W) {
  const out = [];
  mask.forEach((v, i) => { if (v === value) out.push([i % w, Math.floor(i / w)]); });
  return out;
}

/** The documented brush rule, computed directly: pixel centres within r of each stroke point. */
function discPixels(w, h, x, y, r) {
  const out = [];
  for (let py = 0; py < h; py++) for (let px = 0; px < w; px++) {
    if ((px + 0.5 - x) ** 2 + (py + 0.5 - y) ** 2 <= r * r) out.push([px, py]);
  }
  return out;
}

function rng(seed) {
  let s = seed >>> 0;
  return () => ((s = (s * 1664525 + 1013904223) >>> 0) / 2 ** 32);
}

describe("rasterisation", () => {
  it("a disc sets exactly the pixels whose centres are within the radius, and says where", () => {
    const m = createMask(W, H, IGN);
    const r = paintDisc(m, W, H, 5, 4, 2, 2);
    assert.deepEqual(painted(m, 2), discPixels(W, H, 5, 4, 2));
    assert.equal(painted(m, 2).length, 12);
    assert.deepEqual(r, { x0: 3, y0: 2, x1: 8, y1: 7 });
    const one = createMask(W, H, IGN);
    paintDisc(one, W, H, 2.5, 3.5, 0.5, 1);                       // the smallest brush: one pixel
    assert.deepEqual(painted(one, 1), [[2, 3]]);
  });

  it("a stroke leaves no gap between far-apart points and stays inside the image", () => {
    const m = createMask(W, H, IGN);
    paintStroke(m, W, H, [[0.5, 4.5], [9.5, 4.5]], 0.6, 1);
    assert.deepEqual(painted(m, 1), Array.from({ length: W }, (_, x) => [x, 4]));
    const r = paintStroke(m, W, H, [[-5, -5], [20, 20]], 3, 3);   // off-image ends: clipped, no throw
    assert.equal(m.length, W * H);
    assert.ok(r.x0 >= 0 && r.y0 >= 0 && r.x1 <= W && r.y1 <= H);
    assert.equal(paintDisc(m, W, H, -10, -10, 2, 5), null);        // wholly outside: nothing
  });

  it("a polygon fills the pixel centres inside it, shared edges once", () => {
    const m = createMask(W, H, IGN);
    const r = fillPolygon(m, W, H, [[2, 1], [6, 1], [6, 4], [2, 4]], 4);   // centres x 2..5, y 1..3
    const exp = [];
    for (let y = 1; y <= 3; y++) for (let x = 2; x <= 5; x++) exp.push([x, y]);
    assert.deepEqual(painted(m, 4), exp);
    assert.deepEqual(r, { x0: 2, y0: 1, x1: 6, y1: 4 });
    const t = createMask(W, H, IGN);
    fillPolygon(t, W, H, [[0, 0], [8, 0], [0, 8]], 1);           // right triangle: centres with x + y < 7
    assert.equal(painted(t, 1).length, 28);
    assert.ok(painted(t, 1).every(([x, y]) => x + y + 1 < 8));
    const a = createMask(W, H, IGN), b = createMask(W, H, IGN);  // two polygons sharing an edge: no overlap
    fillPolygon(a, W, H, [[0, 0], [4.3, 0], [4.3, 8], [0, 8]], 1);
    fillPolygon(b, W, H, [[4.3, 0], [10, 0], [10, 8], [4.3, 8]], 1);
    assert.equal(painted(a, 1).length + painted(b, 1).length, W * H);
    assert.ok(painted(a, 1).every(([x, y]) => b[y * W + x] === IGN));
    assert.equal(fillPolygon(t, W, H, [[0, 0], [1, 1]], 9), null);  // fewer than 3 points: nothing
  });
});

describe("history", () => {
  it("undo and redo restore exact states over random strokes, polygons, clears and pre-fills", () => {
    const w = 37, h = 23, rand = rng(7);
    const st = createPainter(w, h, IGN);
    const states = [st.mask.slice()];
    const pred = new Uint8Array(w * h).map((_, i) => i % 5);
    for (let k = 0; k < 40; k++) {
      const op = Math.floor(rand() * 5);
      st.cls = Math.floor(rand() * 5);
      if (op <= 1) {
        st.tool = op === 0 ? "brush" : "eraser";
        st.history.begin(st.mask);
        const pts = Array.from({ length: 4 }, () => [rand() * w, rand() * h]);
        st.history.commit(st.mask, paintStroke(st.mask, w, h, pts, 0.5 + rand() * 5, st.tool === "eraser" ? IGN : st.cls));
      } else if (op === 2) {
        st.tool = "polygon";
        st.polygon = Array.from({ length: 5 }, () => [rand() * w, rand() * h]);
        closePolygon(st);
      } else if (op === 3) applyKey(st, "prefill", { nClasses: 5, prediction: pred });
      else applyKey(st, "clear", { nClasses: 5 });
      const last = states[states.length - 1];
      if (st.mask.some((v, i) => v !== last[i])) states.push(st.mask.slice());
    }
    assert.equal(st.history.past.length, states.length - 1);      // one step per change, none for no-ops
    for (let i = states.length - 2; i >= 0; i--) {
      applyKey(st, "undo", { nClasses: 5 });
      assert.deepEqual(st.mask, states[i], `undo to state ${i}`);
    }
    assert.equal(applyKey(st, "undo", { nClasses: 5 }), "undo-remote");   // nothing left here
    for (let i = 1; i < states.length; i++) {
      applyKey(st, "redo", { nClasses: 5 });
      assert.deepEqual(st.mask, states[i], `redo to state ${i}`);
    }
  });

  it("a new change clears the redo list; the oldest steps go past the byte limit; patches are small", () => {
    const m = createMask(100, 100, 0);
    const hist = new History(100, 100, 1000);
    for (let v = 1; v <= 4; v++) { hist.begin(m); paintDisc(m, 100, 100, 50, 50, 5, v); hist.commit(m); }
    assert.ok(hist.past.every((p) => p.before.length === 100));   // the 10 x 10 disc box, not the mask
    hist.begin(m); m.fill(9); hist.commit(m);                     // 2 x 10,000 bytes: over the limit
    assert.equal(hist.past.length, 1);
    hist.undo(m);
    hist.begin(m); m[0] = 7; hist.commit(m);
    assert.equal(hist.redo(m), null);
    hist.begin(m);
    assert.equal(hist.commit(m), null);                           // nothing changed: no step
  });

  it("the eraser and the void class write the ignore index; undo after a polygon vertex removes the vertex", () => {
    const st = createPainter(W, H, IGN);
    applyKey(st, "class:2", { nClasses: 3 });
    assert.equal(st.cls, 1);
    st.history.begin(st.mask);
    st.history.commit(st.mask, paintDisc(st.mask, W, H, 3, 3, 2, mod.paintValue(st)));
    applyKey(st, "eraser", { nClasses: 3 });
    assert.equal(mod.paintValue(st), IGN);
    applyKey(st, "polygon", { nClasses: 3 });
    applyKey(st, "void", { nClasses: 3 });
    assert.equal(mod.paintValue(st), IGN);
    st.polygon = [[0, 0], [6, 0], [6, 6], [0, 6]];
    assert.equal(applyKey(st, "undo", { nClasses: 3 }), "tools");   // the last vertex, not the mask
    assert.equal(st.polygon.length, 3);
    st.polygon.push([0, 6]);
    assert.equal(applyKey(st, "submit", { nClasses: 3 }), "mask");  // Enter closes the polygon ...
    assert.equal(painted(st.mask, 1).length, 0);                     // ... with void: the disc is gone
    assert.equal(applyKey(st, "submit", { nClasses: 3 }), "submit"); // ... then Enter submits
    applyKey(st, "undo", { nClasses: 3 });
    assert.equal(painted(st.mask, 1).length, 12);
  });
});

describe("keys", () => {
  it("pre-fill copies the prediction and is undoable; a wrong size throws; none: nothing", () => {
    const st = createPainter(W, H, IGN);
    const pred = new Uint8Array(W * H).map((_, i) => i % 3);
    assert.equal(applyKey(st, "prefill", { nClasses: 3, prediction: pred }), "mask");
    assert.deepEqual(st.mask, pred);
    applyKey(st, "undo", { nClasses: 3 });
    assert.deepEqual(st.mask, createMask(W, H, IGN));
    assert.throws(() => prefill(st.mask, new Uint8Array(3)), /3 pixels/);
    assert.equal(applyKey(st, "prefill", { nClasses: 3 }), "none");
  });

  it("class keys beyond the classes are ignored; the brush size steps stay in bounds", () => {
    const st = createPainter(W, H, IGN);
    assert.equal(applyKey(st, "class:7", { nClasses: 3 }), "none");
    assert.equal(st.cls, 0);
    for (let i = 0; i < 40; i++) applyKey(st, "smaller", { nClasses: 3 });
    assert.equal(st.radius, 0.5);
    for (let i = 0; i < 60; i++) applyKey(st, "bigger", { nClasses: 3 });
    assert.equal(st.radius, 256);
    applyKey(st, "smaller", { nClasses: 3 });
    assert.equal(st.radius, 180);
  });

  it("Escape drops an open polygon, else leaves; the palette search matches names case-insensitively", () => {
    const st = createPainter(W, H, IGN);
    st.polygon = [[1, 1]];
    assert.equal(applyKey(st, "cancel", { nClasses: 3 }), "tools");
    assert.equal(applyKey(st, "cancel", { nClasses: 3 }), "leave");
    assert.deepEqual(filterClasses(["Road", "Sidewalk", "roadside"], "ROAD").map((c) => c.index), [0, 2]);
  });

  it("seconds add up the gaps between actions, a long pause counting as 60 s", () => {
    const doc = { seconds: 0, last: null };
    touch(doc, 1000);
    touch(doc, 4000);
    touch(doc, 4000 + 3600 * 1000);
    assert.equal(doc.seconds, 63);
  });
});

describe("zoom and pan", () => {
  it("screen and image coordinates map both ways at any zoom and pan", () => {
    const v = createView(480, 360, 960, 640);
    assert.equal(v.fit, 1);
    zoomAt(v, 3.7, 100, 50);
    panBy(v, -33.3, 12.9);
    for (const [x, y] of [[0, 0], [17.25, 300.5], [479.9, 359.9]]) {
      const [sx, sy] = imageToScreen(v, x, y);
      const [bx, by] = screenToImage(v, sx, sy);
      assert.ok(Math.abs(bx - x) < 1e-9 && Math.abs(by - y) < 1e-9);
    }
  });

  it("zooming keeps the point under the cursor; the image never leaves the viewport", () => {
    const v = createView(480, 360, 960, 640);
    const before = screenToImage(v, 200, 150);
    zoomAt(v, 4, 200, 150);
    assert.equal(v.s, 4);
    const after = screenToImage(v, 200, 150);
    assert.ok(Math.abs(after[0] - before[0]) < 1e-9 && Math.abs(after[1] - before[1]) < 1e-9);
    mod.panBy(v, 1e6, -1e6);                                     // far away: clamped to the edges
    assert.equal(v.tx, 0);
    assert.equal(v.ty, v.vh - 360 * 4);
    zoomAt(v, 1e-6, 10, 10);                                     // never below the whole image
    assert.equal(v.s, v.fit);
    assert.deepEqual([v.tx, v.ty], [0, 0]);
    assert.equal(clampView({ ...v, s: v.fit / 2 }).tx, v.vw / 4); // smaller than the viewport: centred
  });

  it("a brush stroke made on the zoomed screen paints exactly the pixels the image points give", () => {
    const w = 64, h = 48;
    const v = createView(w, h, 960, 640);                        // small image: enlarged to fit
    assert.equal(v.fit, 6);
    zoomAt(v, 3.3, 123.4, 77.7);
    mod.panBy(v, -41.7, 19.2);
    const screenPts = [[150.3, 90.1], [171.9, 130.6], [240.2, 128.8]];
    const a = createMask(w, h, IGN), b = createMask(w, h, IGN);
    paintStroke(a, w, h, screenPts.map(([sx, sy]) => screenToImage(v, sx, sy)), 1.5, 2);
    const imagePts = screenPts.map(([sx, sy]) => [(sx - v.tx) / v.s, (sy - v.ty) / v.s]);
    paintStroke(b, w, h, imagePts, 1.5, 2);
    assert.deepEqual(a, b);
    assert.ok(painted(a, 2, w).length > 10);
    // one dab at the centre of pixel (20, 10), clicked on the screen at 19.8x zoom: that pixel only
    const one = createMask(w, h, IGN);
    const [sx, sy] = imageToScreen(v, 20.5, 10.5);
    paintDisc(one, w, h, ...screenToImage(v, sx, sy), 0.5, 3);
    assert.deepEqual(painted(one, 3, w), [[20, 10]]);
  });
});

// ---------------------------------------------------------------------------- PNG
/** A PNG made here with filter `filter` on every row (node's zlib): what other encoders may write. */
function filteredPNG(values, w, h, filter) {
  const raw = new Uint8Array((w + 1) * h);
  const px = (x, y) => (x < 0 || y < 0 ? 0 : values[y * w + x]);
  for (let y = 0; y < h; y++) {
    raw[y * (w + 1)] = filter;
    for (let x = 0; x < w; x++) {
      const a = px(x - 1, y), b = px(x, y - 1), c = px(x - 1, y - 1);
      const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
      const pred = [0, a, b, (a + b) >> 1, pa <= pb && pa <= pc ? a : pb <= pc ? b : c][filter];
      raw[y * (w + 1) + 1 + x] = (values[y * w + x] - pred) & 0xff;
    }
  }
  const chunk = (type, data) => {
    const out = new Uint8Array(12 + data.length), dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    out.set([...type].map((c) => c.charCodeAt(0)), 4);
    out.set(data, 8);
    dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  };
  const ihdr = new Uint8Array(13);
  new DataView(ihdr.buffer).setUint32(0, w);
  new DataView(ihdr.buffer).setUint32(4, h);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr),
    chunk("IDAT", deflateSync(raw)), chunk("IEND", new Uint8Array(0))];
  return Buffer.concat(parts);
}

describe("PNG", () => {
  it("encodes an 8-bit greyscale PNG whose pixels are the mask", async () => {
    const m = new Uint8Array(W * H).map((_, i) => (i * 7) % 12);
    const png = await encodePNG(m, W, H);
    assert.deepEqual([...png.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const dv = new DataView(png.buffer);
    assert.deepEqual([dv.getUint32(16), dv.getUint32(20), png[24], png[25]], [W, H, 8, 0]);
    assert.equal(dv.getUint32(29), crc32(png.subarray(12, 29)));
    const raw = inflateSync(png.subarray(41, 41 + dv.getUint32(33)));
    const rows = [];
    for (let y = 0; y < H; y++) rows.push(...raw.subarray(y * (W + 1) + 1, (y + 1) * (W + 1)));
    assert.deepEqual(rows, [...m]);
    assert.deepEqual((await decodePNG(png)).data, m);
  });

  it("decodes every PNG row filter, and the PNG Python's mask_to_png writes", async () => {
    const w = 13, h = 9;
    const values = new Uint8Array(w * h).map((_, i) => (i * 37 + (i % 5) * 11) % 256);
    for (const f of [0, 1, 2, 3, 4]) {
      const got = await decodePNG(new Uint8Array(filteredPNG(values, w, h, f)));
      assert.deepEqual([got.w, got.h], [w, h]);
      assert.deepEqual(got.data, values, `filter ${f}`);
    }
    // mask_to_png of (arange(35).reshape(5, 7) * 7 % 13) with [0, 0] = 255
    const py = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAcAAAAFCAAAAACs8akEAAAAJ0lEQVR4nC3HMRIAIAgDQQ2FGP7/3BssZLtdfXbqhgpjEABYv" +
      "3PzAGltFi5LnGsbAAAAAElFTkSuQmCC", "base64");
    const exp = Array.from({ length: 35 }, (_, i) => (i * 7) % 13);
    exp[0] = 255;
    assert.deepEqual([...(await decodePNG(new Uint8Array(py))).data], exp);
    await assert.rejects(decodePNG(new Uint8Array([1, 2, 3])), /not a PNG/);
  });
});

// ---------------------------------------------------------------------------- view
function fakeModel(state) {
  const handlers = {}, sent = [];
  return {
    state, sent, get(k) { return this.state[k]; }, set(k, v) { this.state[k] = v; }, save_changes() {},
    send(msg, cb, buffers) { sent.push({ msg, buffers }); },
    on(ev, f) { (handlers[ev] ||= []).push(f); },
    off(ev, f) { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
    update(changes) {                                  // as the widget manager does: set, then the events
      Object.assign(this.state, changes);
      for (const k of Object.keys(changes)) for (const f of handlers[`change:${k}`] || []) f();
    },
  };
}

const bytes = (a) => new DataView(new Uint8Array(a).buffer);
const until = async (cond, what) => {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(cond(), `timed out waiting for ${what}`);
};

function mount(extra = {}) {
  const { classes, keymap } = extra.map || MAPS.painter;
  const model = fakeModel({
    items: [{ id: "a", caption: "a.png", thumb: bytes([1]), mime: "image/png", state: "todo" },
            { id: "b", caption: "b.png", thumb: bytes([1]), mime: "image/png", state: "done" }],
    batch: 3, current: "a", image: bytes([1, 2, 3]), mime: "image/png", width: W, height: H,
    prediction: bytes([]), initial: bytes([]), classes, ignore_index: IGN, keymap, status: "", notice: "",
    error: {}, ack: 0, ...extra.state,
  });
  const el = document.createElement("div");
  document.body.appendChild(el);
  const cleanup = widget.render({ model, el });
  const root = el.querySelector(".alw-painter");
  const press = (key, opts = {}) => {
    const ev = new KeyboardEvent("keydown", { key, bubbles: true, cancelable: true, ...opts });
    root.dispatchEvent(ev);
    return ev;
  };
  const viewport = el.querySelector(".alw-painter-viewport");
  // jsdom has no layout: the viewport's box is at (0, 0), so client coordinates are viewport coordinates
  const mouse = (type, x, y, opts = {}) => viewport.dispatchEvent(new MouseEvent(type, { clientX: x, clientY: y,
    bubbles: true, cancelable: true, button: 0, ...opts }));
  const scale = () => Number(viewport.dataset.scale);
  return { model, el, root, press, mouse, viewport, scale, cleanup };
}

async function submitted(model, n = 1) {
  await until(() => model.sent.filter((s) => s.msg.type === "submit").length >= n, "a submit");
  const s = model.sent.filter((m) => m.msg.type === "submit")[n - 1];
  return { ...s, mask: (await decodePNG(new Uint8Array(s.buffers[0]))).data };
}

describe("view", () => {
  afterEach(() => document.body.replaceChildren());

  it("shows class names as text, paints with the mouse at the shown scale and submits a PNG on Enter", async () => {
    const { model, el, root, press, mouse, scale, cleanup } = mount();
    await until(() => root.dataset.ready === "a", "the image");
    const names = [...el.querySelectorAll(".alw-painter-class-name")].map((e) => e.textContent);
    assert.ok(names.includes("<b>car</b>"));
    assert.equal(el.querySelector(".alw-painter-class b"), null);
    assert.equal(scale(), 40);                                   // 10 x 8 image shown at 40x
    press("3");                                                  // class 3 = index 2
    press("[");                                                  // r 8 -> 6
    mouse("mousedown", 5 * 40, 4 * 40);
    mouse("mouseup", 5 * 40, 4 * 40);
    press("Enter");
    const { msg, mask } = await submitted(model);
    assert.deepEqual([msg.type, msg.batch, msg.item], ["submit", 3, "a"]);
    assert.ok(msg.seconds >= 0);
    assert.deepEqual(painted(mask, 2), discPixels(W, H, 5, 4, 6));
    cleanup();
  });

  it("zoomed with the wheel, a click still lands on the pixel under it", async () => {
    const { model, root, press, mouse, viewport, scale, cleanup } = mount();
    await until(() => root.dataset.ready === "a", "the image");
    viewport.dispatchEvent(new WheelEvent("wheel", { deltaY: -400, clientX: 130, clientY: 90, bubbles: true,
      cancelable: true }));
    assert.ok(scale() > 40);
    const s = scale(), tx = Number(viewport.dataset.tx), ty = Number(viewport.dataset.ty);
    press("[");
    for (let i = 0; i < 5; i++) press("[");                      // the smallest brush: one pixel
    const [sx, sy] = [tx + s * 3.5, ty + s * 2.5];                // the centre of pixel (3, 2) on the screen
    mouse("mousedown", sx, sy);
    mouse("mouseup", sx, sy);
    press("Enter");
    const { mask } = await submitted(model);
    assert.deepEqual(painted(mask, 0), [[3, 2]]);
    cleanup();
  });

  it("polygon by clicks, Enter fills, Enter submits; undo with nothing left asks Python; the strip opens images",
    async () => {
      const { model, el, root, press, mouse, cleanup } = mount();
      await until(() => root.dataset.ready === "a", "the image");
      press("2");
      press("g");
      for (const [x, y] of [[2, 1], [6, 1], [6, 4], [2, 4]]) { mouse("mousedown", x * 40, y * 40); mouse("mouseup", x * 40, y * 40); }
      press("Enter");
      press("Enter");
      const { mask } = await submitted(model);
      const exp = [];
      for (let y = 1; y <= 3; y++) for (let x = 2; x <= 5; x++) exp.push([x, y]);
      assert.deepEqual(painted(mask, 1), exp);
      model.update({ ack: 1 });                                    // Python handled it
      press("z");                                                  // undoes the fill
      press("z");                                                  // nothing left here: Python's turn
      assert.deepEqual(model.sent.at(-1).msg, { type: "undo", batch: 3 });
      model.update({ ack: 2 });
      const thumbs = [...el.querySelectorAll(".alw-painter-thumb")];
      assert.deepEqual(thumbs.map((t) => t.dataset.state), ["todo", "done"]);
      thumbs[1].click();
      assert.deepEqual(model.sent.at(-1).msg, { type: "open", batch: 3, item: "b" });
      model.update({ ack: 3 });
      press("s");
      assert.deepEqual(model.sent.at(-1).msg, { type: "skip", batch: 3, item: "a" });
      cleanup();
    });

  it("going to another image and back finds the mask and its undo history as they were left", async () => {
    const { model, root, press, mouse, cleanup } = mount();
    await until(() => root.dataset.ready === "a", "the image");
    mouse("mousedown", 100, 100);
    mouse("mouseup", 100, 100);
    const first = (async () => { press("Enter"); return submitted(model); })();
    const a = (await first).mask;
    model.update({ ack: 1, current: "b", image: bytes([4, 5]) });
    await until(() => root.dataset.ready === "b", "image b");
    press("Enter");
    const b = (await submitted(model, 2)).mask;
    assert.deepEqual(b, createMask(W, H, IGN));                    // b starts unpainted
    model.update({ ack: 2, current: "a", image: bytes([1, 2, 3]) });
    await until(() => root.dataset.ready === "a", "image a again");
    press("Enter");
    assert.deepEqual((await submitted(model, 3)).mask, a);
    model.update({ ack: 3 });
    press("z");                                                  // the dab is still undoable
    press("Enter");
    assert.deepEqual((await submitted(model, 4)).mask, createMask(W, H, IGN));
    cleanup();
  });

  it("pre-fill from the PNG Python sends; a saved mask to start from; a new batch starts afresh", async () => {
    const pred = new Uint8Array(W * H).map((_, i) => (i % 7 === 0 ? 2 : 1));
    const init = new Uint8Array(W * H).fill(IGN);
    init[5] = 0;
    const { model, el, root, press, cleanup } = mount({ state: {
      prediction: new DataView((await encodePNG(pred, W, H)).buffer),
      initial: new DataView((await encodePNG(init, W, H)).buffer) } });
    await until(() => root.dataset.ready === "a", "the image");
    assert.equal(el.querySelector("[data-action=prefill]").disabled, false);
    press("Enter");
    assert.deepEqual((await submitted(model)).mask, init);
    model.update({ ack: 1 });
    press("p");
    press("Enter");
    assert.deepEqual((await submitted(model, 2)).mask, pred);
    model.update({ ack: 2, batch: 4, prediction: bytes([]), initial: bytes([]) });
    await until(() => root.dataset.ready === "a" && el.querySelector("[data-action=prefill]").disabled, "batch 4");
    press("Enter");
    const last = await submitted(model, 3);
    assert.equal(last.msg.batch, 4);
    assert.deepEqual(last.mask, createMask(W, H, IGN));
    cleanup();
  });

  it("beyond ten classes: the search box picks a class by name; keys Python sends are shown", async () => {
    const { model, el, root, press, mouse, cleanup } = mount({ map: MAPS.painter_many });
    await until(() => root.dataset.ready === "a", "the image");
    const search = el.querySelector(".alw-painter-search");
    assert.ok(search);
    press("/");
    assert.equal(document.activeElement, search);
    search.value = "class m";
    search.dispatchEvent(new Event("input", { bubbles: true }));
    assert.deepEqual([...el.querySelectorAll(".alw-painter-classes .alw-painter-class-name")].map((e) => e.textContent),
      ["class M"]);
    search.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true, cancelable: true }));
    assert.equal(document.activeElement, root);
    mouse("mousedown", 40, 40);
    mouse("mouseup", 40, 40);
    press("q");                                                  // a key given in Python: class 12 (index 11)
    mouse("mousedown", 300, 200);
    mouse("mouseup", 300, 200);
    press("Enter");
    const { mask } = await submitted(model);
    assert.ok(painted(mask, 12).length > 0 && painted(mask, 11).length > 0);
    const keycaps = [...el.querySelectorAll(".alw-painter-class")].map((b) => b.querySelector("kbd")?.textContent);
    assert.equal(keycaps[9], "0");
    assert.equal(keycaps[11], "q");
    cleanup();
  });

  it("the error trait is shown as text; keys do not reach Jupyter; Esc with nothing open does", async () => {
    const { model, el, root, press, cleanup } = mount();
    await until(() => root.dataset.ready === "a", "the image");
    model.update({ error: { kind: "mask", message: "mask is 9x6 (WxH) but the image is 10x8 <b>x</b>" } });
    const alert = el.querySelector(".alw-painter-error");
    assert.match(alert.textContent, /Not saved: mask is 9x6 .* <b>x<\/b>\. The mask is kept/);
    assert.equal(alert.querySelector("b"), null);
    let reached = 0;
    document.body.addEventListener("keydown", () => reached++);
    assert.ok(press("b").defaultPrevented);
    press("x");
    assert.equal(reached, 0);
    press("Escape");
    assert.equal(reached, 1);
    cleanup();
  });
});
