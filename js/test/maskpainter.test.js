// @vitest-environment jsdom
import { inflateSync } from "node:zlib";
import { afterEach, describe, expect, it, vi } from "vitest";
import widget, {
  applyKey, closePolygon, crc32, createMask, createPainter, encodePNG, fillPolygon, History, paintDisc,
  paintStroke, prefill,
} from "../../alwidgets/widgets/static/maskpainter.js";

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
    expect(painted(m, 2)).toEqual(expected);
    expect(expected.length).toBe(12);
  });

  it("a stroke leaves no gap between far-apart points and stays inside the image", () => {
    const m = createMask(W, H, IGN);
    paintStroke(m, W, H, [[0.5, 4.5], [9.5, 4.5]], 0.6, 1);
    expect(painted(m, 1)).toEqual(Array.from({ length: W }, (_, x) => [x, 4]));
    paintStroke(m, W, H, [[-5, -5], [20, 20]], 3, 3);            // off-image ends: clipped, no throw
    expect(m.length).toBe(W * H);
  });

  it("a polygon fills the pixel centres inside it (even-odd)", () => {
    const m = createMask(W, H, IGN);
    fillPolygon(m, W, H, [[2, 1], [6, 1], [6, 4], [2, 4]], 4);   // covers centres x 2..5, y 1..3
    const exp = [];
    for (let y = 1; y <= 3; y++) for (let x = 2; x <= 5; x++) exp.push([x, y]);
    expect(painted(m, 4)).toEqual(exp);
    const t = createMask(W, H, IGN);
    fillPolygon(t, W, H, [[0, 0], [8, 0], [0, 8]], 1);           // right triangle: centres with x + y < 7
    expect(painted(t, 1).length).toBe(28);
    expect(painted(t, 1).every(([x, y]) => x + y + 1 < 8)).toBe(true);
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
    expect(painted(s2, 1).length).toBeLessThan(painted(s1, 1).length);
    applyKey(st, "undo", { nClasses: 3 });
    expect(st.mask).toEqual(s1);
    applyKey(st, "undo", { nClasses: 3 });
    expect(st.mask).toEqual(s0);
    expect(applyKey(st, "undo", { nClasses: 3 })).toBe("redraw");   // nothing left: unchanged
    expect(st.mask).toEqual(s0);
    applyKey(st, "redo", { nClasses: 3 });
    applyKey(st, "redo", { nClasses: 3 });
    expect(st.mask).toEqual(s2);
  });

  it("a new change clears the redo list; history keeps at most its limit", () => {
    const h = new History(2);
    const m = createMask(2, 1, 0);
    for (let v = 1; v <= 4; v++) { h.record(m); m.fill(v); }
    expect(h.past.length).toBe(2);
    h.undo(m); h.record(m); m.fill(9);
    expect(h.redo(m)).toBe(false);
  });

  it("polygon mode: Enter closes the polygon, then Enter submits", () => {
    const st = createPainter(W, H, IGN);
    applyKey(st, "polygon", { nClasses: 3 });
    applyKey(st, "class:2", { nClasses: 3 });
    st.polygon = [[1, 1], [5, 1], [5, 5]];
    expect(applyKey(st, "enter", { nClasses: 3 })).toBe("redraw");
    expect(painted(st.mask, 2).length).toBeGreaterThan(0);
    expect(applyKey(st, "enter", { nClasses: 3 })).toBe("submit");
    applyKey(st, "undo", { nClasses: 3 });
    expect(painted(st.mask, 2).length).toBe(0);
  });

  it("pre-fill copies the prediction and is undoable; a wrong size throws", () => {
    const st = createPainter(W, H, IGN);
    const pred = new Uint8Array(W * H).map((_, i) => i % 3);
    applyKey(st, "prefill", { nClasses: 3, prediction: pred });
    expect(st.mask).toEqual(pred);
    applyKey(st, "undo", { nClasses: 3 });
    expect(st.mask).toEqual(createMask(W, H, IGN));
    expect(() => prefill(st.mask, new Uint8Array(3))).toThrow(/3 pixels/);
    expect(applyKey(st, "prefill", { nClasses: 3 })).toBe("none");
  });

  it("class keys beyond the classes are ignored; brush size stays in bounds", () => {
    const st = createPainter(W, H, IGN);
    applyKey(st, "class:7", { nClasses: 3 });
    expect(st.cls).toBe(0);
    for (let i = 0; i < 40; i++) applyKey(st, "smaller", { nClasses: 3 });
    expect(st.radius).toBe(1);
    for (let i = 0; i < 60; i++) applyKey(st, "bigger", { nClasses: 3 });
    expect(st.radius).toBe(200);
  });
});

describe("PNG", () => {
  it("encodes an 8-bit greyscale PNG whose pixels are the mask", async () => {
    const m = new Uint8Array(W * H).map((_, i) => (i * 7) % 12);
    const png = await encodePNG(m, W, H);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const dv = new DataView(png.buffer);
    expect(dv.getUint32(16)).toBe(W);
    expect(dv.getUint32(20)).toBe(H);
    expect(png[24]).toBe(8);
    expect(png[25]).toBe(0);
    const ihdrCrc = dv.getUint32(29);
    expect(ihdrCrc).toBe(crc32(png.subarray(12, 29)));
    const idatLen = dv.getUint32(33);
    const raw = inflateSync(png.subarray(41, 41 + idatLen));
    const rows = [];
    for (let y = 0; y < H; y++) {
      expect(raw[y * (W + 1)]).toBe(0);
      rows.push(...raw.subarray(y * (W + 1) + 1, (y + 1) * (W + 1)));
    }
    expect(rows).toEqual([...m]);
  });
});

describe("view", () => {
  afterEach(() => document.body.replaceChildren());

  function fakeModel(state) {
    const handlers = {}, sent = [];
    return {
      state, sent, get(k) { return this.state[k]; }, set(k, v) { this.state[k] = v; }, save_changes() {},
      send(msg, cb, buffers) { sent.push({ msg, buffers }); },
      on(ev, f) { (handlers[ev] ||= []).push(f); }, off(ev, f) { handlers[ev] = (handlers[ev] || []).filter((g) => g !== f); },
    };
  }

  it("shows class names as text and submits a PNG buffer on Enter", async () => {
    URL.createObjectURL = vi.fn(() => "blob:x");
    URL.revokeObjectURL = vi.fn();
    const model = fakeModel({ image: new DataView(new Uint8Array([1, 2, 3]).buffer), mime: "image/png", width: W,
      height: H, classes: ["road", "<img src=x onerror=alert(1)>"], ignore_index: IGN, prediction: new DataView(new ArrayBuffer(0)),
      keymap: {}, status: "" });
    const el = document.createElement("div");
    document.body.appendChild(el);
    const cleanup = widget.render({ model, el });
    const buttons = [...el.querySelectorAll(".alw-painter-class")];
    expect(buttons[1].textContent).toContain("<img src=x onerror=alert(1)>");
    expect(el.querySelector("img[src='x']")).toBeNull();
    const root = el.querySelector(".alw-painter");
    root.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    await vi.waitFor(() => expect(model.sent.length).toBe(1));
    expect(model.sent[0].msg.type).toBe("submit");
    const png = new Uint8Array(model.sent[0].buffers[0]);
    expect(png[1]).toBe(0x50);
    cleanup();
  });
});
