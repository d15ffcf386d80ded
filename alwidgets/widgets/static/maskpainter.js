// MaskPainter: paint class-index masks over a batch of images; each mask goes to Python as an 8-bit PNG.
//
// A plain ES module with no imports, shipped as is (no build step). The pure parts (rasterisation,
// history, view transform, PNG codec, key actions) are exported for the unit tests in js/test.
//
// State from Python (traits, see alwidgets/widgets/maskpainter.py):
//   items       [{id, caption, thumb (bytes), mime, state: "todo"|"done"|"skipped"|"error", error}]
//   batch       the number of the shown batch (every message names it; stale ones are refused)
//   current     id of the image being painted ("" = none)
//   image, mime, width, height   that image (its bytes, shown as they are)
//   prediction  the model's predicted mask of that image, an 8-bit index PNG (empty: none)
//   initial     a mask to start from (8-bit index PNG, e.g. the one saved earlier; empty: unpainted)
//   classes, ignore_index, keymap (the whole map, computed in Python: this file has no default map)
//   status, notice, error ({} or {kind, message}), ack (changes when Python has handled a message)
// To Python (custom messages): {type: "submit", batch, item, seconds} with the mask PNG as the one
// binary buffer; {type: "skip", batch, item}; {type: "open", batch, item}; {type: "undo", batch}
// (nothing left to undo in the browser: reopen the last saved mask).
//
// Masks, their undo histories and the seconds spent stay in the browser per image of the batch, so
// going back to an image (the strip, the arrows, undo after a submit) finds it as it was left.
// Class names and captions are set with textContent, never innerHTML.

const PALETTE_THRESHOLD = 10;           // more classes than this: the palette gets a search box
const RADII = [0.5, 1, 2, 3, 4, 6, 8, 11, 16, 22, 32, 45, 64, 90, 128, 180, 256];
const IDLE_CAP_S = 60;                  // a pause longer than this between actions counts as this long
const BUSY_TIMEOUT_MS = 120000;         // no answer from Python for this long: accept keys again
const HISTORY_BYTES = 64 * 1024 * 1024; // undo patches kept per image, at most

// Okabe-Ito and Tableau colours, then generated hues: distinct on photographs
const PALETTE = [
  [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178], [213, 94, 0], [204, 121, 167],
  [228, 26, 28], [152, 78, 163], [166, 86, 40], [247, 129, 191], [77, 175, 74], [255, 127, 0], [31, 120, 180],
  [178, 223, 138], [251, 154, 153], [202, 178, 214], [255, 255, 153], [128, 128, 0], [0, 128, 128],
];

/** The overlay colour of class `c` ([r, g, b]). */
export function colourOf(c) {
  if (c < PALETTE.length) return PALETTE[c];
  const hue = (c * 137.508) % 360, s = 0.65, l = 0.55;       // golden-angle hues beyond the palette
  const f = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [f(0), f(8), f(4)];
}

// ---------------------------------------------------------------------------- rasterisation
/** A w x h mask filled with `fill` (the ignore index: unpainted pixels never train). */
export function createMask(w, h, fill) {
  return new Uint8Array(w * h).fill(fill);
}

/** The smallest rectangle holding rectangles `a` and `b` ({x0, y0, x1, y1}, ends exclusive; null = empty). */
export function unionRect(a, b) {
  if (!a) return b;
  if (!b) return a;
  return { x0: Math.min(a.x0, b.x0), y0: Math.min(a.y0, b.y0), x1: Math.max(a.x1, b.x1), y1: Math.max(a.y1, b.y1) };
}

/** Set every pixel whose centre lies within `r` of (x, y) to `value`; returns the rectangle it touched. */
export function paintDisc(mask, w, h, x, y, r, value) {
  const r2 = r * r;
  const y0 = Math.max(0, Math.floor(y - r)), y1 = Math.min(h - 1, Math.ceil(y + r));
  const x0 = Math.max(0, Math.floor(x - r)), x1 = Math.min(w - 1, Math.ceil(x + r));
  if (x0 > x1 || y0 > y1) return null;
  for (let py = y0; py <= y1; py++) {
    const dy = py + 0.5 - y;
    for (let px = x0; px <= x1; px++) {
      const dx = px + 0.5 - x;
      if (dx * dx + dy * dy <= r2) mask[py * w + px] = value;
    }
  }
  return { x0, y0, x1: x1 + 1, y1: y1 + 1 };
}

/**
 * A brush stroke: discs of radius `r` along the polyline `pts` ([[x, y], ...]), spaced by at most a
 * quarter radius, so a fast mouse leaves no gaps. Returns the rectangle it touched.
 */
export function paintStroke(mask, w, h, pts, r, value) {
  if (!pts.length) return null;
  let rect = paintDisc(mask, w, h, pts[0][0], pts[0][1], r, value);
  for (let i = 1; i < pts.length; i++) {
    const [ax, ay] = pts[i - 1], [bx, by] = pts[i];
    const steps = Math.max(1, Math.ceil(Math.hypot(bx - ax, by - ay) / Math.max(0.25, r / 4)));
    for (let s = 1; s <= steps; s++) {
      rect = unionRect(rect, paintDisc(mask, w, h, ax + ((bx - ax) * s) / steps, ay + ((by - ay) * s) / steps, r, value));
    }
  }
  return rect;
}

/**
 * Fill the polygon `pts` with `value`: the pixels whose centre is inside (even-odd rule; a centre
 * on a left edge is inside, on a right edge outside, so polygons sharing an edge never overlap).
 * Returns the rectangle it touched.
 */
export function fillPolygon(mask, w, h, pts, value) {
  if (pts.length < 3) return null;
  let ymin = Infinity, ymax = -Infinity;
  for (const [, y] of pts) { ymin = Math.min(ymin, y); ymax = Math.max(ymax, y); }
  let rect = null;
  for (let py = Math.max(0, Math.floor(ymin - 0.5)); py <= Math.min(h - 1, Math.ceil(ymax)); py++) {
    const yc = py + 0.5;
    const xs = [];
    for (let i = 0, j = pts.length - 1; i < pts.length; j = i++) {
      const [xi, yi] = pts[i], [xj, yj] = pts[j];
      if ((yi > yc) !== (yj > yc)) xs.push(xi + ((yc - yi) * (xj - xi)) / (yj - yi));
    }
    xs.sort((a, b) => a - b);
    for (let k = 0; k + 1 < xs.length; k += 2) {
      const from = Math.max(0, Math.ceil(xs[k] - 0.5)), to = Math.min(w - 1, Math.ceil(xs[k + 1] - 0.5) - 1);
      for (let px = from; px <= to; px++) mask[py * w + px] = value;
      if (from <= to) rect = unionRect(rect, { x0: from, y0: py, x1: to + 1, y1: py + 1 });
    }
  }
  return rect;
}

/** Start from the model's predicted mask (w*h class indices): the labeller corrects instead of painting. */
export function prefill(mask, prediction) {
  if (!prediction || prediction.length !== mask.length) {
    throw new Error(`prediction has ${prediction ? prediction.length : 0} pixels, the mask ${mask.length}`);
  }
  mask.set(prediction);
}

// ---------------------------------------------------------------------------- undo / redo
function crop(mask, w, r) {
  const cw = r.x1 - r.x0, out = new Uint8Array(cw * (r.y1 - r.y0));
  for (let y = r.y0; y < r.y1; y++) out.set(mask.subarray(y * w + r.x0, y * w + r.x1), (y - r.y0) * cw);
  return out;
}

function paste(mask, w, r, data) {
  const cw = r.x1 - r.x0;
  for (let y = r.y0; y < r.y1; y++) mask.set(data.subarray((y - r.y0) * cw, (y - r.y0 + 1) * cw), y * w + r.x0);
}

/**
 * Undo/redo of one image's mask as patches: each step keeps the changed rectangle before and after,
 * so undo and redo restore exact states while a history of brush dabs on a big image stays small.
 * Use: begin(mask) before an edit, commit(mask, rect?) after it (rect: where it may have changed).
 */
export class History {
  constructor(w, h, limitBytes = HISTORY_BYTES) {
    this.w = w; this.h = h; this.limitBytes = limitBytes;
    this.past = []; this.future = []; this.base = null;
  }
  begin(mask) { this.base = mask.slice(); }
  get pending() { return this.base !== null; }
  /** Record the edit since begin(); returns the changed rectangle, or null when nothing changed (no step). */
  commit(mask, rect = null) {
    const base = this.base;
    this.base = null;
    if (!base) return null;
    const { w, h } = this;
    const r0 = rect || { x0: 0, y0: 0, x1: w, y1: h };
    let x0 = Infinity, y0 = Infinity, x1 = -1, y1 = -1;
    for (let y = Math.max(0, r0.y0); y < Math.min(h, r0.y1); y++) {
      for (let x = Math.max(0, r0.x0), i = y * w + x; x < Math.min(w, r0.x1); x++, i++) {
        if (mask[i] !== base[i]) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          y1 = y;
        }
      }
    }
    if (x1 < 0) return null;
    const r = { x0, y0, x1: x1 + 1, y1: y1 + 1 };
    this.past.push({ r, before: crop(base, w, r), after: crop(mask, w, r) });
    this.future = [];
    let bytes = this.past.reduce((n, p) => n + 2 * p.before.length, 0);
    while (this.past.length > 1 && bytes > this.limitBytes) bytes -= 2 * this.past.shift().before.length;
    return r;
  }
  /** Undo the last step; returns the rectangle it restored, or null when there is nothing to undo. */
  undo(mask) {
    const p = this.past.pop();
    if (!p) return null;
    paste(mask, this.w, p.r, p.before);
    this.future.push(p);
    return p.r;
  }
  redo(mask) {
    const p = this.future.pop();
    if (!p) return null;
    paste(mask, this.w, p.r, p.after);
    this.past.push(p);
    return p.r;
  }
}

// ---------------------------------------------------------------------------- zoom and pan
/** The scale at which a w x h image is first shown in a box of at most maxW x maxH (small images enlarged). */
export function fitScale(w, h, maxW = 960, maxH = 640) {
  const enlarge = Math.max(1, Math.floor(400 / Math.max(w, h)));
  return Math.min(maxW / w, maxH / h, enlarge);
}

/**
 * The view of a w x h image in a viewport: screen = (tx + s * x, ty + s * y), in CSS pixels from the
 * viewport's top-left corner. The viewport is the image at its fit scale.
 */
export function createView(w, h, maxW, maxH) {
  const fit = fitScale(w, h, maxW, maxH);
  return { w, h, fit, s: fit, tx: 0, ty: 0, vw: Math.round(w * fit), vh: Math.round(h * fit) };
}

/** The image coordinates (pixels, fractional) under viewport point (sx, sy): exact at any zoom. */
export function screenToImage(view, sx, sy) {
  return [(sx - view.tx) / view.s, (sy - view.ty) / view.s];
}

export function imageToScreen(view, x, y) {
  return [view.tx + view.s * x, view.ty + view.s * y];
}

/** Keep the image over the viewport: centred when smaller, no empty margin when larger. */
export function clampView(view) {
  for (const [t, size, vsize] of [["tx", view.w, view.vw], ["ty", view.h, view.vh]]) {
    const span = size * view.s;
    view[t] = span <= vsize ? (vsize - span) / 2 : Math.min(0, Math.max(vsize - span, view[t]));
  }
  return view;
}

/** Zoom by `factor` about viewport point (sx, sy), which stays over the same image point. */
export function zoomAt(view, factor, sx, sy) {
  const s = Math.min(Math.max(32, view.fit * 8), Math.max(view.fit, view.s * factor));
  const [x, y] = screenToImage(view, sx, sy);
  view.s = s;
  view.tx = sx - s * x;
  view.ty = sy - s * y;
  return clampView(view);
}

export function panBy(view, dx, dy) {
  view.tx += dx;
  view.ty += dy;
  return clampView(view);
}

export function resetView(view) {
  view.s = view.fit;
  view.tx = view.ty = 0;
  return clampView(view);
}

// ---------------------------------------------------------------------------- PNG (8-bit index)
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

function concat(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

async function pipe(raw, stream) {
  const reader = new ReadableStream({ start(c) { c.enqueue(raw); c.close(); } }).pipeThrough(stream).getReader();
  const parts = [];
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
  }
  return concat(parts);
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
  // "deflate" is the zlib format (RFC 1950) that PNG needs
  return concat([new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk("IHDR", ihdr),
    chunk("IDAT", await pipe(raw, new CompressionStream("deflate"))), chunk("IEND", new Uint8Array(0))]);
}

function paeth(a, b, c) {
  const p = a + b - c, pa = Math.abs(p - a), pb = Math.abs(p - b), pc = Math.abs(p - c);
  return pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
}

/**
 * Decode an 8-bit greyscale or palette PNG (not interlaced) into its w x h index values, as Python's
 * mask_to_png writes them: {w, h, data}. Anything else throws an Error saying why.
 */
export async function decodePNG(bytes) {
  const b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes.buffer || bytes, bytes.byteOffset || 0,
    bytes.byteLength);
  const sig = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
  if (b.length < 8 || sig.some((v, i) => b[i] !== v)) throw new Error("not a PNG file");
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let w = 0, h = 0, off = 8;
  const idat = [];
  while (off + 8 <= b.length) {
    const len = dv.getUint32(off), type = String.fromCharCode(...b.subarray(off + 4, off + 8));
    const data = b.subarray(off + 8, off + 8 + len);
    if (data.length !== len) throw new Error(`truncated ${type} chunk`);
    if (type === "IHDR") {
      w = dv.getUint32(off + 8); h = dv.getUint32(off + 12);
      const [depth, colour, , , interlace] = data.subarray(8, 13);
      if (depth !== 8 || (colour !== 0 && colour !== 3) || interlace !== 0) {
        throw new Error(`mask PNG must be 8-bit greyscale or palette, not interlaced (depth ${depth}, colour type ${colour})`);
      }
    } else if (type === "IDAT") idat.push(data);
    else if (type === "IEND") break;
    off += 12 + len;
  }
  if (!w || !h || !idat.length) throw new Error("PNG has no image data");
  const raw = await pipe(concat(idat), new DecompressionStream("deflate"));
  if (raw.length < (w + 1) * h) throw new Error("PNG image data is short");
  const out = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) {
    const f = raw[y * (w + 1)], src = raw.subarray(y * (w + 1) + 1, (y + 1) * (w + 1));
    const row = out.subarray(y * w, (y + 1) * w), up = y ? out.subarray((y - 1) * w, y * w) : null;
    for (let x = 0; x < w; x++) {
      const a = x ? row[x - 1] : 0, u = up ? up[x] : 0, c = x && up ? up[x - 1] : 0;
      const pred = f === 0 ? 0 : f === 1 ? a : f === 2 ? u : f === 3 ? (a + u) >> 1 : f === 4 ? paeth(a, u, c) : -1;
      if (pred < 0) throw new Error(`bad PNG filter ${f}`);
      row[x] = (src[x] + pred) & 0xff;
    }
  }
  return { w, h, data: out };
}

// ---------------------------------------------------------------------------- painter state
/** The labeller's tools (kept from image to image) around one image's mask. */
export function createPainter(w, h, ignore) {
  return { w, h, ignore, mask: createMask(w, h, ignore), history: new History(w, h), cls: 0, radius: 8,
    tool: "brush", polygon: [], stroke: null, visible: true, opacity: 0.5, dirty: null };
}

/** Switch the painter to another image's document ({w, h, mask, history}), keeping the tools. */
export function loadDoc(st, doc) {
  st.w = doc.w; st.h = doc.h; st.mask = doc.mask; st.history = doc.history;
  st.polygon = []; st.stroke = null; st.dirty = "all";
}

/** The value the current tool writes: the class, or the ignore index for the eraser (and the void class). */
export function paintValue(st) {
  return st.tool === "eraser" ? st.ignore : st.cls;
}

export function closePolygon(st) {
  if (st.polygon.length < 3) { st.polygon = []; return null; }
  st.history.begin(st.mask);
  const rect = fillPolygon(st.mask, st.w, st.h, st.polygon, paintValue(st));
  st.polygon = [];
  return st.history.commit(st.mask, rect);
}

/** Classes whose name contains `query` (case-insensitive): [{name, index}] (0-based). */
export function filterClasses(classes, query) {
  const q = (query || "").trim().toLowerCase();
  return classes.map((name, index) => ({ name, index })).filter((c) => !q || c.name.toLowerCase().includes(q));
}

function nextRadius(r, dir) {
  const i = RADII.findIndex((v) => v >= r);
  const k = i < 0 ? RADII.length - 1 : RADII[i] === r ? i + dir : dir > 0 ? i : i - 1;
  return RADII[Math.max(0, Math.min(RADII.length - 1, k))];
}

/**
 * Apply a key action to the painter; returns what the view must do: "mask" (the mask changed:
 * st.dirty says where), "tools", "view" (zoom), "none", or an action for the view itself
 * ("submit", "skip", "previous", "next", "search", "leave", "undo-remote", "zoom_in", "zoom_out", "fit", "pan").
 */
export function applyKey(st, action, { nClasses, prediction = null } = {}) {
  if (action.startsWith("class:")) {
    const c = Number(action.slice(6)) - 1;
    if (!(c >= 0 && c < nClasses)) return "none";
    st.cls = c;
    if (st.tool === "eraser") st.tool = "brush";
    return "tools";
  }
  const changed = (rect) => {
    if (!rect) return "none";
    st.dirty = st.dirty === "all" ? "all" : unionRect(st.dirty, rect);
    return "mask";
  };
  switch (action) {
    case "smaller": st.radius = nextRadius(st.radius, -1); return "tools";
    case "bigger": st.radius = nextRadius(st.radius, 1); return "tools";
    case "brush": case "eraser": case "polygon":
      st.tool = action; st.polygon = []; return "tools";
    case "void":
      st.cls = st.ignore; if (st.tool === "eraser") st.tool = "brush"; return "tools";
    case "undo":
      if (st.polygon.length) { st.polygon.pop(); return "tools"; }
      if (!st.history.past.length) return "undo-remote";
      return changed(st.history.undo(st.mask));
    case "redo": return changed(st.history.redo(st.mask));
    case "clear":
      st.polygon = [];
      st.history.begin(st.mask); st.mask.fill(st.ignore);
      return changed(st.history.commit(st.mask));
    case "prefill":
      if (!prediction) return "none";
      st.history.begin(st.mask); prefill(st.mask, prediction);
      return changed(st.history.commit(st.mask));
    case "toggle": st.visible = !st.visible; return "tools";
    case "opacity": st.opacity = st.opacity >= 0.875 ? 0.25 : st.opacity + 0.25; return "tools";
    case "cancel":
      if (st.polygon.length) { st.polygon = []; return "tools"; }
      return "leave";
    case "submit":
      if (st.tool === "polygon" && st.polygon.length >= 3) {
        const rect = closePolygon(st);
        return rect ? changed(rect) : "tools";
      }
      st.polygon = [];
      return "submit";
    case "skip": case "previous": case "next": case "search": case "zoom_in": case "zoom_out": case "fit": case "pan":
      return action;
    default: return "none";
  }
}

/** Seconds spent: gaps between actions added up, each at most IDLE_CAP_S (a pause counts, lunch does not). */
export function touch(doc, now) {
  if (doc.last != null) doc.seconds += Math.min(IDLE_CAP_S, Math.max(0, (now - doc.last) / 1000));
  doc.last = now;
}

// ---------------------------------------------------------------------------- DOM helpers
function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}

function bytesOf(buf) {
  if (buf == null) return null;
  const b = buf instanceof DataView ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
    : buf instanceof ArrayBuffer ? new Uint8Array(buf) : buf;
  return b.byteLength ? b : null;
}

function toBlobUrl(buf, mime) {
  const b = bytesOf(buf);
  return b ? URL.createObjectURL(new Blob([b], { type: mime || "image/png" })) : null;
}

const KEY_NAMES = { " ": "Space", ArrowLeft: "←", ArrowRight: "→", Escape: "Esc", Delete: "Del" };

function keycap(key) {
  return h("kbd", "alw-key", KEY_NAMES[key] || key);
}

function keysFor(keymap, action) {
  return Object.keys(keymap || {}).filter((k) => keymap[k] === action);
}

const clock = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

// ---------------------------------------------------------------------------- view
function render({ model, el }) {
  const root = h("div", "alw-painter");
  root.dataset.renderAt = String(Date.now());   // wall clock, with data-shown-at: the latency benchmark
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true");   // JupyterLab: our keys are not notebook commands
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "mask painter: digits pick classes, b brush, e eraser, g polygon, Enter submits");
  const header = h("div", "alw-painter-header");
  const progress = h("span", "alw-painter-progress");
  const status = h("span", "alw-painter-status");
  status.setAttribute("role", "status");
  header.append(progress, status);
  const alert = h("div", "alw-painter-error");
  alert.setAttribute("role", "alert");
  const notice = h("div", "alw-painter-notice");
  const tools = h("div", "alw-painter-tools");
  const palette = h("div", "alw-painter-palette");
  const search = h("input", "alw-painter-search");
  search.type = "search";
  search.placeholder = "search classes… (/)";
  search.setAttribute("aria-label", "search classes");
  const classList = h("div", "alw-painter-classes");
  const main = h("div", "alw-painter-main");
  const viewport = h("div", "alw-painter-viewport");
  const layer = h("div", "alw-painter-layer");
  const img = h("img", "alw-painter-image");
  img.draggable = false;
  img.alt = "";
  const canvas = h("canvas", "alw-painter-mask");
  const SVG = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("class", "alw-painter-marks");
  const poly = document.createElementNS(SVG, "polyline");
  poly.setAttribute("class", "alw-painter-poly");
  const cursor = document.createElementNS(SVG, "circle");
  cursor.setAttribute("class", "alw-painter-cursor");
  svg.append(poly, cursor);
  layer.append(img, canvas, svg);
  viewport.appendChild(layer);
  const info = h("div", "alw-painter-info");
  main.append(viewport);
  const strip = h("div", "alw-painter-strip");
  root.append(header, alert, notice, tools, palette, main, info, strip);
  el.appendChild(root);

  const ignore = () => model.get("ignore_index");
  let st = createPainter(1, 1, ignore());
  st.ready = false;
  let view = createView(1, 1);
  let docs = new Map();            // item id -> {w, h, mask, history, seconds, last}
  let docsBatch = null;
  let doc = null;                  // the shown image's document
  let shown = null;                // its id
  let url = null, thumbUrls = [];
  let busy = false, disposed = false, loadSeq = 0;
  let imageData = null;
  let spaceHeld = false, drag = null, lastMouse = null;
  const classes = () => model.get("classes") || [];
  const keymap = () => model.get("keymap") || {};
  const items = () => model.get("items") || [];
  const predictionBytes = () => bytesOf(model.get("prediction"));
  let prediction = null;           // decoded prediction of the shown image (Uint8Array) or null

  // ---------------------------------------------------------------- drawing
  function drawMask(rect) {
    const ctx = canvas.getContext && canvas.getContext("2d");
    if (!ctx || !st.ready) return;
    if (!imageData || imageData.width !== st.w || imageData.height !== st.h) {
      imageData = ctx.createImageData(st.w, st.h);
      rect = null;
    }
    const r = rect || { x0: 0, y0: 0, x1: st.w, y1: st.h };
    const d = imageData.data, m = st.mask, ign = st.ignore, w = st.w;
    for (let y = r.y0; y < r.y1; y++) {
      for (let x = r.x0, i = y * w + x; x < r.x1; x++, i++) {
        const v = m[i], o = 4 * i;
        if (v === ign) { d[o + 3] = 0; continue; }
        const c = colourOf(v);
        d[o] = c[0]; d[o + 1] = c[1]; d[o + 2] = c[2]; d[o + 3] = 255;
      }
    }
    ctx.putImageData(imageData, 0, 0, r.x0, r.y0, r.x1 - r.x0, r.y1 - r.y0);
  }

  function drawMarks() {
    poly.setAttribute("points", st.polygon.map(([x, y]) => `${x},${y}`).join(" "));
    const c = st.cls === st.ignore || st.tool === "eraser" ? [255, 255, 255] : colourOf(st.cls);
    poly.style.stroke = `rgb(${c})`;
    cursor.style.stroke = `rgb(${c})`;
    cursor.setAttribute("r", String(st.radius));
    cursor.style.display = lastMouse && st.tool !== "polygon" && st.ready ? "" : "none";
    if (lastMouse) { cursor.setAttribute("cx", String(lastMouse[0])); cursor.setAttribute("cy", String(lastMouse[1])); }
  }

  function applyView() {
    viewport.style.width = `${view.vw}px`;
    viewport.style.height = `${view.vh}px`;
    layer.style.width = `${view.w}px`;
    layer.style.height = `${view.h}px`;
    layer.style.transform = `translate(${view.tx}px, ${view.ty}px) scale(${view.s})`;
    layer.classList.toggle("alw-pixelated", view.s >= 2);
    svg.setAttribute("viewBox", `0 0 ${view.w} ${view.h}`);
    svg.style.setProperty("--alw-line", `${1.5 / view.s}px`);
    // what the browser tests read to turn screen points into image pixels
    viewport.dataset.scale = String(view.s);
    viewport.dataset.tx = String(view.tx);
    viewport.dataset.ty = String(view.ty);
  }

  function paintTools() {
    canvas.style.opacity = String(st.opacity);
    canvas.hidden = !st.visible;
    for (const b of tools.querySelectorAll("button[data-action]")) {
      const a = b.dataset.action;
      b.classList.toggle("alw-on", a === st.tool || (a === "toggle" && !st.visible));
      if (a === "prefill") b.disabled = !predictionBytes();
    }
    opacityInput.value = String(Math.round(st.opacity * 100));
    for (const b of classList.children) {
      const c = Number(b.dataset.index);
      b.classList.toggle("alw-on", st.tool !== "eraser" && st.cls === c);
    }
    voidBtn.classList.toggle("alw-on", st.tool !== "eraser" && st.cls === st.ignore);
    const name = st.cls === st.ignore ? "void" : classes()[st.cls] ?? "";
    const zoom = view.fit ? Math.round((view.s / view.fit) * 100) : 100;
    info.textContent = `${st.tool}${st.tool === "eraser" ? "" : ` · ${name}`}` +
      `${st.tool === "polygon" ? (st.polygon.length ? ` · ${st.polygon.length} points (Enter closes)` : "") : ` r=${st.radius}`}` +
      ` · zoom ${zoom}%` + (predictionBytes() ? " · p: start from the model's prediction" : "");
    drawMarks();
  }

  function paintProgress() {
    const its = items();
    const n = its.length, done = its.filter((it) => it.state === "done").length;
    const skipped = its.filter((it) => it.state === "skipped").length;
    const k = its.findIndex((it) => it.id === shown);
    progress.textContent = n ? `image ${k + 1}/${n} · ${done} done${skipped ? ` · ${skipped} skipped` : ""}` : "";
  }

  // ---------------------------------------------------------------- toolbar and palette
  const buttons = [];
  function tool(label, action, title) {
    const b = h("button", "alw-painter-btn");
    b.type = "button";
    b.dataset.action = action;
    b.dataset.label = label;
    b.title = title;
    b.addEventListener("click", () => { act(action); root.focus({ preventScroll: true }); });
    buttons.push(b);
    return b;
  }
  const opacityInput = h("input", "alw-painter-opacity");
  opacityInput.type = "range"; opacityInput.min = "10"; opacityInput.max = "100"; opacityInput.step = "5";
  opacityInput.title = "overlay opacity";
  opacityInput.addEventListener("input", () => { st.opacity = Number(opacityInput.value) / 100; paintTools(); });
  tools.append(tool("Brush", "brush", "paint the class"), tool("Eraser", "eraser", "back to unpainted (ignore index)"),
    tool("Polygon", "polygon", "click points (or drag a lasso); Enter or double-click fills"),
    tool("−", "smaller", "smaller brush"), tool("+", "bigger", "bigger brush"),
    tool("Undo", "undo", "undo"), tool("Redo", "redo", "redo"), tool("Clear", "clear", "clear the mask (undoable)"),
    tool("Prediction", "prefill", "start from the model's predicted mask"),
    tool("Hide", "toggle", "show or hide the mask"), opacityInput,
    tool("Zoom −", "zoom_out", "zoom out (wheel)"), tool("Zoom +", "zoom_in", "zoom in (wheel)"),
    tool("Fit", "fit", "whole image"), tool("Skip", "skip", "skip this image"),
    tool("Submit", "submit", "save this mask and go to the next image"));
  const voidBtn = h("button", "alw-painter-class alw-painter-void");
  voidBtn.type = "button";
  voidBtn.addEventListener("click", () => { act("void"); root.focus({ preventScroll: true }); });

  function paintButtons() {
    const km = keymap();
    for (const b of buttons) {
      b.replaceChildren(h("span", null, b.dataset.label));
      const keys = keysFor(km, b.dataset.action);
      if (keys.length) b.append(" ", keycap(keys[0]));
    }
    voidBtn.replaceChildren();
    for (const k of keysFor(km, "void").slice(0, 1)) voidBtn.appendChild(keycap(k));
    voidBtn.appendChild(h("span", "alw-painter-class-name", "void (ignore)"));
  }

  function buildPalette() {
    palette.replaceChildren();
    if (classes().length > PALETTE_THRESHOLD) palette.appendChild(search);
    palette.append(classList, voidBtn);
    paintClasses();
    paintButtons();
  }

  function paintClasses() {
    const cls = classes(), km = keymap();
    const shownCls = filterClasses(cls, cls.length > PALETTE_THRESHOLD ? search.value : "");
    classList.replaceChildren(...shownCls.map(({ name, index }) => {
      const b = h("button", "alw-painter-class");
      b.type = "button";
      b.dataset.index = String(index);
      const sw = h("span", "alw-painter-swatch");
      sw.style.background = `rgb(${colourOf(index)})`;
      b.appendChild(sw);
      const keys = keysFor(km, `class:${index + 1}`);
      for (const k of keys.slice(0, 1)) b.appendChild(keycap(k));
      b.appendChild(h("span", "alw-painter-class-name", name));     // text, never HTML
      b.title = keys.length ? `${name} (key ${keys[0]})` : name;
      b.addEventListener("click", () => { act(`class:${index + 1}`); root.focus({ preventScroll: true }); });
      return b;
    }));
    paintTools();
  }

  // ---------------------------------------------------------------- the strip
  function buildStrip() {
    thumbUrls.forEach((u) => URL.revokeObjectURL(u));
    thumbUrls = [];
    strip.replaceChildren(...items().map((it) => {
      const t = h("button", "alw-painter-thumb");
      t.type = "button";
      t.dataset.id = it.id;
      t.dataset.state = it.state || "todo";
      t.title = it.error ? `${it.caption || it.id}: ${it.error}` : it.caption || it.id;
      const u = it.error ? null : toBlobUrl(it.thumb, it.mime);
      if (u) {
        thumbUrls.push(u);
        const im = h("img");
        im.src = u;
        im.alt = it.caption || it.id;
        im.draggable = false;
        t.appendChild(im);
      } else t.appendChild(h("span", "alw-painter-thumb-missing", it.error ? "no image" : "…"));
      t.appendChild(h("span", "alw-painter-badge", it.state || "todo"));
      t.addEventListener("click", () => { open(it.id); root.focus({ preventScroll: true }); });
      return t;
    }));
    paintStrip();
  }

  function paintStrip() {
    for (const t of strip.children) {
      t.classList.toggle("alw-current", t.dataset.id === shown);
      if (t.dataset.id === shown && t.scrollIntoView && root.contains(document.activeElement)) {
        t.scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    }
    paintProgress();
  }

  // ---------------------------------------------------------------- messages to Python
  let busyTimer = null;
  function setBusy(on) {
    busy = on;
    root.classList.toggle("alw-busy", on);
    clearTimeout(busyTimer);
    // a kernel that never answers (dead, interrupted) must not lock the painter: Python refuses stale messages
    if (on) busyTimer = setTimeout(() => { setBusy(false); status.textContent = "no answer from the kernel yet"; }, BUSY_TIMEOUT_MS);
  }

  function send(msg, buffers) {
    setBusy(true);
    model.send({ ...msg, batch: model.get("batch") }, undefined, buffers);
  }

  // for the browser tests: send a message as this view would (bad payloads cannot be made through the UI)
  root.alwSend = (msg, buffers) => model.send({ batch: model.get("batch"), item: shown, ...msg }, undefined, buffers);

  function open(id) {
    if (busy || !id || id === shown) return;
    if (doc) doc.last = null;
    send({ type: "open", item: id });
  }

  function neighbour(step) {
    const its = items(), k = its.findIndex((it) => it.id === shown);
    return k < 0 ? null : its[(k + step + its.length) % its.length].id;
  }

  async function submit() {
    if (busy || !doc || !st.ready) return;
    setBusy(true);
    await prefilling;
    touch(doc, clock());
    status.textContent = "saving…";
    const png = await encodePNG(st.mask, st.w, st.h);
    if (disposed) return;
    model.send({ type: "submit", batch: model.get("batch"), item: shown, seconds: Math.round(doc.seconds * 1000) / 1000 },
      undefined, [png.buffer]);
  }

  // ---------------------------------------------------------------- loading an image
  async function load() {
    const seq = ++loadSeq;
    if (model.get("batch") !== docsBatch) { docs = new Map(); docsBatch = model.get("batch"); }
    const id = model.get("current") || null;
    const w = model.get("width"), hh = model.get("height");
    const shownBefore = shown;            // the same image again (new masks from Python): keep the zoom
    if (doc) doc.last = null;
    if (url) { URL.revokeObjectURL(url); url = null; }
    shown = id;
    st.ready = false;
    root.dataset.ready = "";
    prediction = null;
    predictionFor = null;
    main.hidden = !id || !w || !hh;
    if (main.hidden) { doc = null; paintStrip(); paintTools(); return; }
    // the image first: the browser decodes it while the masks below are decoded
    if (view.w !== w || view.h !== hh || id !== shownBefore) {
      view = createView(w, hh, Math.max(320, Math.min(960, (window.innerWidth || 1040) - 80)), 640);
    }
    img.alt = id;
    url = toBlobUrl(model.get("image"), model.get("mime"));
    img.removeAttribute("src");
    root.dataset.shown = "";
    if (url) img.src = url;
    canvas.width = w; canvas.height = hh;   // cleared until this image's mask is drawn
    imageData = null;
    applyView();
    paintStrip();
    let d = docs.get(id);
    if (!d || d.w !== w || d.h !== hh) {
      d = { w, h: hh, mask: createMask(w, hh, ignore()), history: new History(w, hh), seconds: 0, last: null };
      const init = bytesOf(model.get("initial"));
      if (init) {
        try {
          const m = await decodePNG(init);
          if (m.w === w && m.h === hh) d.mask.set(m.data);
        } catch (e) { showError({ kind: "initial", message: `the saved mask could not be shown: ${e.message}` }); }
      }
      if (seq !== loadSeq) return;
      docs.set(id, d);
    }
    if (seq !== loadSeq) return;
    const blank = d.blank !== false && !bytesOf(model.get("initial"));
    d.blank = false;
    doc = d;
    loadDoc(st, d);
    st.ignore = ignore();
    st.ready = true;
    root.dataset.ready = id;              // painting works from here (tests wait for it)
    touch(doc, clock());                  // seconds count from here
    if (!blank) drawMask(null);           // a new, unpainted mask: the cleared canvas already shows it
    paintTools();
    if (!busy && root.isConnected && mayTakeFocus(document.activeElement)) root.focus({ preventScroll: true });
  }
  let told = false;
  img.addEventListener("load", () => {
    root.dataset.shown = shown || "";
    root.dataset.shownAt = String(Date.now());     // wall clock: what the latency benchmark compares
    setTimeout(ensurePrediction, 0);              // decoded once the image is up: p is instant later
    // once per view: Python may now send what waits for the image (a session's plots)
    if (!told) { told = true; model.send({ type: "shown", batch: model.get("batch"), item: shown }); }
  });

  // the prediction PNG is decoded off the image's critical path: after it is shown, or on p
  let predictionFor = null;
  let prefilling = Promise.resolve();     // a p still decoding: Enter waits for it
  async function ensurePrediction() {
    const id = shown, seq = loadSeq;
    if (!id || predictionFor === id) return prediction;
    const pb = predictionBytes();
    let p = null;
    if (pb) {
      try {
        const m = await decodePNG(pb);
        p = m.w === st.w && m.h === st.h ? m.data : null;
      } catch (e) { p = null; }
    }
    if (seq !== loadSeq) return null;
    prediction = p;
    predictionFor = id;
    paintTools();
    return prediction;
  }
  img.addEventListener("error", () => {
    if (img.getAttribute("src")) showError({ kind: "image", message: "the browser could not show this image" });
  });

  // ---------------------------------------------------------------- actions
  function afterMask() {
    if (st.dirty) { drawMask(st.dirty === "all" ? null : st.dirty); st.dirty = null; }
    paintTools();
  }

  function act(action) {
    if (action === "prefill" && st.ready && predictionFor !== shown) {   // decode first, then pre-fill
      const id = shown;
      prefilling = ensurePrediction().then(() => { if (shown === id && predictionFor === id) act(action); });
      return;
    }
    if (!st.ready && !["skip", "previous", "next", "leave", "search"].includes(action) && !action.startsWith("class:")) return;
    if (doc) touch(doc, clock());
    const r = applyKey(st, action, { nClasses: classes().length, prediction });
    switch (r) {
      case "mask": afterMask(); break;
      case "tools": paintTools(); break;
      case "submit": submit(); break;
      case "skip": if (!busy && shown) send({ type: "skip", item: shown }); break;
      case "previous": open(neighbour(-1)); break;
      case "next": open(neighbour(1)); break;
      case "undo-remote": if (!busy) send({ type: "undo" }); break;
      case "search":
        if (classes().length > PALETTE_THRESHOLD) search.focus();
        break;
      case "zoom_in": case "zoom_out": {
        const [sx, sy] = lastMouse ? imageToScreen(view, lastMouse[0], lastMouse[1]) : [view.vw / 2, view.vh / 2];
        zoomAt(view, r === "zoom_in" ? 1.5 : 1 / 1.5, sx, sy);
        applyView(); paintTools();
        break;
      }
      case "fit": resetView(view); applyView(); paintTools(); break;
      case "leave": root.blur(); break;
      default: break;
    }
  }

  // ---------------------------------------------------------------- mouse
  function at(ev) {
    const r = viewport.getBoundingClientRect();
    return [ev.clientX - r.left - viewport.clientLeft, ev.clientY - r.top - viewport.clientTop];
  }

  viewport.addEventListener("mousedown", (ev) => {
    if (!st.ready || busy) return;       // the mask on its way to Python stays as it was sent
    root.focus({ preventScroll: true });
    ev.preventDefault();
    const [sx, sy] = at(ev);
    if (ev.button === 1 || (ev.button === 0 && spaceHeld)) {
      drag = { kind: "pan", sx, sy };
      viewport.classList.add("alw-panning");
      return;
    }
    if (ev.button !== 0) return;
    touch(doc, clock());
    const p = screenToImage(view, sx, sy);
    if (st.tool === "polygon") {
      st.polygon.push(p);
      drag = { kind: "lasso", sx, sy };
      paintTools();
      return;
    }
    st.history.begin(st.mask);
    st.stroke = [p];
    drag = { kind: "stroke", rect: paintStroke(st.mask, st.w, st.h, st.stroke, st.radius, paintValue(st)) };
    drawMask(drag.rect);
  });

  function onMove(ev) {
    if (!st.ready) return;
    const [sx, sy] = at(ev);
    const p = screenToImage(view, sx, sy);
    lastMouse = p;
    if (drag && drag.kind === "pan") {
      panBy(view, sx - drag.sx, sy - drag.sy);
      drag.sx = sx; drag.sy = sy;
      applyView();
    } else if (drag && drag.kind === "stroke" && st.stroke) {
      const r = paintStroke(st.mask, st.w, st.h, [st.stroke[st.stroke.length - 1], p], st.radius, paintValue(st));
      st.stroke.push(p);
      drag.rect = unionRect(drag.rect, r);
      drawMask(r);
    } else if (drag && drag.kind === "lasso" && Math.hypot(sx - drag.sx, sy - drag.sy) >= 4) {
      st.polygon.push(p);               // dragging in polygon mode draws a lasso
      drag.sx = sx; drag.sy = sy;
    }
    drawMarks();
    if (drag && drag.kind === "lasso") paintTools();
  }

  function onUp() {
    if (!drag) return;
    if (drag.kind === "stroke" && st.history.pending) {
      st.history.commit(st.mask, drag.rect);
      st.stroke = null;
      if (doc) touch(doc, clock());
      paintTools();
    }
    viewport.classList.remove("alw-panning");
    drag = null;
  }
  viewport.addEventListener("mousemove", onMove);
  const onWindowMove = (ev) => { if (drag && drag.kind !== "lasso" && ev.target !== viewport && !viewport.contains(ev.target)) onMove(ev); };
  window.addEventListener("mousemove", onWindowMove);
  window.addEventListener("mouseup", onUp);
  viewport.addEventListener("mouseleave", () => { lastMouse = null; drawMarks(); });
  viewport.addEventListener("dblclick", (ev) => {
    ev.preventDefault();
    if (st.ready && st.tool === "polygon" && st.polygon.length >= 3) { st.dirty = closePolygon(st); afterMask(); }
  });
  viewport.addEventListener("auxclick", (ev) => ev.preventDefault());
  viewport.addEventListener("wheel", (ev) => {
    if (!st.ready) return;
    ev.preventDefault();                // the notebook does not scroll under the image
    const [sx, sy] = at(ev);
    const dy = ev.deltaMode === 1 ? ev.deltaY * 16 : ev.deltaY;
    zoomAt(view, Math.exp(-dy * 0.002), sx, sy);
    applyView();
    paintTools();
  }, { passive: false });

  // ---------------------------------------------------------------- keys
  root.addEventListener("keydown", (ev) => {
    if (ev.target === search) {
      ev.stopPropagation();
      if (ev.key === "Enter" || ev.key === "Escape") {
        const first = ev.key === "Enter" ? filterClasses(classes(), search.value)[0] : null;
        search.value = "";
        paintClasses();
        if (first) act(`class:${first.index + 1}`);
        root.focus({ preventScroll: true });
        ev.preventDefault();
      }
      return;
    }
    let action = keymap()[ev.key];
    if (ev.ctrlKey || ev.metaKey) {
      const k = ev.key.toLowerCase();
      action = k === "z" ? (ev.shiftKey ? "redo" : "undo") : k === "y" ? "redo" : null;
      if (!action) return;              // the browser's own shortcuts (copy, ...) keep working
    } else if (ev.altKey) return;
    if (action === "cancel" && !st.polygon.length) {
      root.blur();                      // let Esc reach Jupyter too: it leaves the widget
      return;
    }
    ev.stopPropagation();               // Jupyter's command-mode keys (a, b, dd, z, ...) must not fire
    if (!action) return;
    ev.preventDefault();
    if (action === "pan") { spaceHeld = true; viewport.classList.add("alw-pan-ready"); return; }
    if (ev.repeat && ["submit", "skip", "previous", "next", "undo", "redo", "clear", "prefill"].includes(action)) return;
    act(action);
  });
  root.addEventListener("keyup", (ev) => {
    if (keymap()[ev.key] === "pan") { spaceHeld = false; viewport.classList.remove("alw-pan-ready"); }
  });
  root.addEventListener("blur", () => { spaceHeld = false; viewport.classList.remove("alw-pan-ready"); });
  search.addEventListener("input", paintClasses);

  // ---------------------------------------------------------------- from Python
  function showError(e) {
    const text = e && e.message ? (e.kind === "submit" || e.kind === "mask"
      ? `Not saved: ${e.message}. The mask is kept: fix it and press Enter again.` : e.message) : "";
    alert.textContent = text;
    alert.hidden = !text;
    alert.dataset.kind = (e && e.kind) || "";
  }
  const onAck = () => setBusy(false);
  const onStatus = () => { const t = model.get("status") || ""; status.textContent = t; status.title = t; };
  const onNotice = () => { const t = model.get("notice") || ""; notice.textContent = t; notice.hidden = !t; };
  const onError = () => showError(model.get("error"));
  let pending = false;
  const onImage = () => {               // current, image, size and masks arrive together: load once
    if (pending) return;
    pending = true;
    Promise.resolve().then(() => { pending = false; if (!disposed) load(); });
  };
  const onPrediction = () => {          // a refit landed: the shown image keeps its mask, p uses the new one
    if (pending || !st.ready || model.get("current") !== shown) { onImage(); return; }
    prediction = null;
    predictionFor = null;
    paintTools();
    setTimeout(ensurePrediction, 0);
  };
  const onItems = () => { buildStrip(); };
  const listeners = [
    ["change:current", onImage], ["change:image", onImage], ["change:batch", onImage],
    ["change:prediction", onPrediction], ["change:initial", onImage],
    ["change:items", onItems], ["change:classes", buildPalette], ["change:keymap", buildPalette],
    ["change:status", onStatus], ["change:notice", onNotice], ["change:error", onError], ["change:ack", onAck],
  ];
  for (const [event, fn] of listeners) model.on(event, fn);
  load();                                 // the image first: it is what the labeller waits for
  buildPalette();
  buildStrip();
  onStatus();
  onNotice();
  onError();

  return () => {
    disposed = true;
    clearTimeout(busyTimer);
    if (url) URL.revokeObjectURL(url);
    thumbUrls.forEach((u) => URL.revokeObjectURL(u));
    window.removeEventListener("mouseup", onUp);
    window.removeEventListener("mousemove", onWindowMove);
    for (const [event, fn] of listeners) model.off(event, fn);
  };
}

/** Whether focus may be taken from `el`: not while the user is typing somewhere else. */
function mayTakeFocus(el) {
  if (!el || el === el.ownerDocument?.body) return true;
  if (el.isContentEditable) return false;
  return !/^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName);
}

export default { render };
