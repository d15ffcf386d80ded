// MaskPainter front end: paint a class-index mask over an image; the mask goes to Python as an 8-bit PNG.
// Plain ESM, no bundling. The pure functions (rasterisation, history, PNG encoding) are exported for tests.

export const DEFAULT_KEYMAP = {
  "1": "class:0", "2": "class:1", "3": "class:2", "4": "class:3", "5": "class:4",
  "6": "class:5", "7": "class:6", "8": "class:7", "9": "class:8", "0": "class:9",
  "[": "smaller", "]": "bigger", "b": "brush", "e": "eraser", "g": "polygon",
  "z": "undo", "y": "redo", "c": "clear", "p": "prefill", "h": "toggle", "o": "opacity",
  "Enter": "enter", "Escape": "cancel",
};

const PALETTE = [
  [128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222], [128, 128, 0],
  [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0], [0, 128, 192], [230, 159, 0],
  [86, 180, 233], [0, 158, 115], [240, 228, 66], [213, 94, 0], [204, 121, 167],
];

export function colourOf(c) {
  return PALETTE[c % PALETTE.length];
}

/** A w x h mask filled with `fill` (the ignore index: unpainted pixels never train). */
export function createMask(w, h, fill) {
  return new Uint8Array(w * h).fill(fill);
}

/** Set every pixel whose centre lies within `r` of (x, y) to `value`. */
export function paintDisc(mask, w, h, x, y, r, value) {
  const r2 = r * r;
  const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(h - 1, Math.ceil(y + r));
  const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(w - 1, Math.ceil(x + r));
  for (let py = y0; py <= y1; py++) {
    const dy = py + 0.5 - y;
    for (let px = x0; px <= x1; px++) {
      const dx = px + 0.5 - x;
      if (dx * dx + dy * dy <= r2) mask[py * w + px] = value;
    }
  }
}

/** A brush stroke: discs of radius `r` along the polyline `pts` ([[x, y], ...]), spaced by a quarter radius. */
export function paintStroke(mask, w, h, pts, r, value) {
  if (!pts.length) return;
  paintDisc(mask, w, h, pts[0][0], pts[0][1], r, value);
  for (let i = 1; i < pts.length; i++) {
    const [ax, ay] = pts[i - 1], [bx, by] = pts[i];
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(0.25, r / 4)));
    for (let s = 1; s <= steps; s++) {
      paintDisc(mask, w, h, ax + ((bx - ax) * s) / steps, ay + ((by - ay) * s) / steps, r, value);
    }
  }
}

/** Fill the polygon `pts` (even-odd rule, pixel centres) with `value`. */
export function fillPolygon(mask, w, h, pts, value) {
  if (pts.length < 3) return;
  for (let py = 0; py < h; py++) {
    const yc = py + 0.5;
    const xs = [];
    for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
      const [xi, yi] = pts[i], [xj, yj] = pts[j];
      if ((yi > yc) !== (yj > yc)) xs.push(xi + ((yc - yi) * (xj - xi)) / (yj - yi));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      // a pixel is inside when its centre is in [left, right): shared edges are painted once
      const from = Math.max(0, Math.ceil(xs[k] - 0.5)), to = Math.min(w - 1, Math.ceil(xs[k + 1] - 0.5) - 1);
      for (let px = from; px <= to; px++) mask[py * w + px] = value;
    }
  }
}

/** Undo/redo over whole-mask snapshots: restores exact states. */
export class History {
  constructor(limit = 50) { this.limit = limit; this.past = []; this.future = []; }
  /** Call before changing `mask`: remembers its current state and clears the redo list. */
  record(mask) {
    this.past.push(mask.slice());
    if (this.past.length > this.limit) this.past.shift();
    this.future = [];
  }
  undo(mask) {
    if (!this.past.length) return false;
    this.future.push(mask.slice());
    mask.set(this.past.pop());
    return true;
  }
  redo(mask) {
    if (!this.future.length) return false;
    this.past.push(mask.slice());
    mask.set(this.future.pop());
    return true;
  }
}

/** Start from the model's predicted mask (raw uint8, w*h): the labeller corrects instead of painting. */
export function prefill(mask, prediction) {
  if (!prediction || prediction.length !== mask.length) {
    throw new Error(`prediction has ${prediction ? prediction.length : 0} pixels, the mask ${mask.length}`);
  }
  mask.set(prediction);
}

// ---------------------------------------------------------------------------- PNG (8-bit greyscale)
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes) {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function chunk(type, data) {
  const out = new Uint8Array(12 + data.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, data.length);
  for (let i = 0; i < 4; i++) out[4 + i] = type.charCodeAt(i);
  out.set(data, 8);
  dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
  return out;
}

async function zlib(raw) {
  const cs = new CompressionStream("deflate");   // "deflate" = zlib format (RFC 1950), as PNG needs
  const reader = new ReadableStream({ start(c) { c.enqueue(raw); c.close(); } }).pipeThrough(cs).getReader();
  const parts = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

/** Encode a w x h uint8 mask as an 8-bit greyscale PNG (lossless). */
export async function encodePNG(mask, w, h) {
  const raw = new Uint8Array((w + 1) * h);
  for (let y = 0; y < h; y++) raw.set(mask.subarray(y * w, (y + 1) * w), y * (w + 1) + 1);  // filter 0
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, w);
  dv.setUint32(4, h);
  ihdr.set([8, 0, 0, 0, 0], 8);               // bit depth 8, colour type 0 (greyscale)
  const parts = [new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr),
    chunk("IDAT", await zlib(raw)), chunk("IEND", new Uint8Array(0))];
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

// ---------------------------------------------------------------------------- painter state
export function createPainter(w, h, ignore) {
  return { w, h, ignore, mask: createMask(w, h, ignore), history: new History(), cls: 0, radius: 8,
    tool: "brush", polygon: [], stroke: null, visible: true, opacity: 0.5 };
}

/** Apply a key action to the painter state; returns what the view must do ("redraw", "submit", ...). */
export function applyKey(st, action, { nClasses, prediction = null } = {}) {
  if (action.startsWith("class:")) {
    const c = Number(action.slice(6));
    if (c < nClasses) { st.cls = c; if (st.tool === "eraser") st.tool = "brush"; }
    return "redraw";
  }
  switch (action) {
    case "smaller": st.radius = Math.max(1, Math.min(st.radius - 1, Math.round(st.radius / 1.25))); return "redraw";
    case "bigger": st.radius = Math.min(200, Math.round(st.radius * 1.25) + 1); return "redraw";
    case "brush": case "eraser": case "polygon": st.tool = action; st.polygon = []; return "redraw";
    case "undo": st.polygon = []; st.history.undo(st.mask); return "redraw";
    case "redo": st.history.redo(st.mask); return "redraw";
    case "clear": st.history.record(st.mask); st.mask.fill(st.ignore); return "redraw";
    case "prefill": if (!prediction) return "none"; st.history.record(st.mask); prefill(st.mask, prediction); return "redraw";
    case "toggle": st.visible = !st.visible; return "redraw";
    case "opacity": st.opacity = st.opacity >= 0.85 ? 0.25 : st.opacity + 0.25; return "redraw";
    case "cancel": st.polygon = []; return "redraw";
    case "enter":
      if (st.tool === "polygon" && st.polygon.length >= 3) { closePolygon(st); return "redraw"; }
      return "submit";
    default: return "none";
  }
}

export function closePolygon(st) {
  st.history.record(st.mask);
  fillPolygon(st.mask, st.w, st.h, st.polygon, st.tool === "eraser" ? st.ignore : st.cls);
  st.polygon = [];
}

function paintValue(st) { return st.tool === "eraser" ? st.ignore : st.cls; }

// ---------------------------------------------------------------------------- view
function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "alw-painter";
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true");   // JupyterLab: our keys are not notebook commands
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "mask painter: digits pick classes, b brush, e eraser, g polygon, Enter submits");
  const bar = document.createElement("div");
  bar.className = "alw-painter-bar";
  const stage = document.createElement("div");
  stage.className = "alw-painter-stage";
  const img = document.createElement("img");
  const canvas = document.createElement("canvas");
  const status = document.createElement("div");
  status.className = "alw-painter-status";
  stage.append(img, canvas);
  root.append(bar, stage, status);
  el.appendChild(root);
  let st = null, url = null, started = performance.now();

  const keymap = () => ({ ...DEFAULT_KEYMAP, ...(model.get("keymap") || {}) });
  const classes = () => model.get("classes") || [];

  function drawBar() {
    bar.replaceChildren();
    classes().forEach((name, c) => {
      const b = document.createElement("button");
      b.className = "alw-painter-class" + (st && st.cls === c && st.tool !== "eraser" ? " alw-on" : "");
      const [r, g, bl] = colourOf(c);
      b.style.borderColor = `rgb(${r},${g},${bl})`;
      b.textContent = `${c < 10 ? (c + 1) % 10 + " " : ""}${name}`;       // text, never HTML
      b.onclick = () => { if (st) { applyKey(st, `class:${c}`, { nClasses: classes().length }); draw(); } };
      bar.appendChild(b);
    });
    const info = document.createElement("span");
    info.className = "alw-painter-info";
    info.textContent = st ? `${st.tool} r=${st.radius}` : "";
    bar.appendChild(info);
  }

  function draw() {
    if (!st) return;
    drawBar();
    const ctx = canvas.getContext("2d");
    if (!ctx) return;
    const im = ctx.createImageData(st.w, st.h);
    const a = st.visible ? Math.round(255 * st.opacity) : 0;
    for (let i = 0; i < st.mask.length; i++) {
      const v = st.mask[i];
      if (v === st.ignore) continue;
      const [r, g, b] = colourOf(v);
      im.data[4 * i] = r; im.data[4 * i + 1] = g; im.data[4 * i + 2] = b; im.data[4 * i + 3] = a;
    }
    ctx.putImageData(im, 0, 0);
    if (st.polygon.length) {
      ctx.strokeStyle = "#fff";
      ctx.beginPath();
      st.polygon.forEach(([x, y], i) => (i ? ctx.lineTo(x, y) : ctx.moveTo(x, y)));
      ctx.stroke();
    }
  }

  function load() {
    const w = model.get("width"), h = model.get("height");
    if (url) URL.revokeObjectURL(url);
    const bytes = model.get("image");
    url = bytes && bytes.byteLength ? URL.createObjectURL(new Blob([bytes], { type: model.get("mime") || "image/jpeg" })) : null;
    if (url) img.src = url;
    canvas.width = w; canvas.height = h;
    st = w && h ? createPainter(w, h, model.get("ignore_index")) : null;
    started = performance.now();
    draw();
  }

  function pos(ev) {
    const r = canvas.getBoundingClientRect();
    const sx = r.width ? st.w / r.width : 1, sy = r.height ? st.h / r.height : 1;
    return [(ev.clientX - r.left) * sx, (ev.clientY - r.top) * sy];
  }

  canvas.addEventListener("mousedown", (ev) => {
    if (!st) return;
    root.focus();
    const p = pos(ev);
    if (st.tool === "polygon") { st.polygon.push(p); draw(); return; }
    st.history.record(st.mask);
    st.stroke = [p];
    paintStroke(st.mask, st.w, st.h, st.stroke, st.radius, paintValue(st));
    draw();
  });
  canvas.addEventListener("mousemove", (ev) => {
    if (!st || !st.stroke) return;
    const p = pos(ev);
    paintStroke(st.mask, st.w, st.h, [st.stroke[st.stroke.length - 1], p], st.radius, paintValue(st));
    st.stroke.push(p);
    draw();
  });
  const end = () => { if (st) st.stroke = null; };
  canvas.addEventListener("mouseup", end);
  canvas.addEventListener("mouseleave", end);
  canvas.addEventListener("dblclick", () => { if (st && st.polygon.length >= 3) { closePolygon(st); draw(); } });

  async function submit() {
    const png = await encodePNG(st.mask, st.w, st.h);
    model.send({ type: "submit", seconds: (performance.now() - started) / 1000 }, undefined, [png.buffer]);
  }

  root.addEventListener("keydown", (ev) => {
    if (!st) return;
    ev.stopPropagation();                                    // Jupyter's command-mode keys must not fire
    let action = keymap()[ev.key];
    if ((ev.ctrlKey || ev.metaKey) && ev.key.toLowerCase() === "z") action = ev.shiftKey ? "redo" : "undo";
    if (!action) return;
    ev.preventDefault();
    const pred = model.get("prediction");
    const todo = applyKey(st, action, { nClasses: classes().length,
      prediction: pred && pred.byteLength ? new Uint8Array(pred.buffer, pred.byteOffset, pred.byteLength) : null });
    if (todo === "submit") submit();
    draw();
  });

  const onStatus = () => { status.textContent = model.get("status") || ""; };
  model.on("change:image", load);
  model.on("change:classes", draw);
  model.on("change:status", onStatus);
  load();
  onStatus();
  return () => {
    model.off("change:image", load);
    model.off("change:classes", draw);
    model.off("change:status", onStatus);
    if (url) URL.revokeObjectURL(url);
  };
}

export default { render };
