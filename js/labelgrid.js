// LabelGrid: one anywidget for a whole batch of images to label.
//
// State from Python (traits): items [{id, caption, suggestion, confidence, w, h, mime}],
// thumbs [bytes] (same order), classes [str], keymap {key: action}, progress {...},
// status str, busy bool. To Python: the `assignments` trait ({id: class}) mirrors the
// pending labels; Enter sends one custom message {type: "submit", labels, sources,
// skipped, seconds}. Python answers by replacing the batch (or setting `status`).
//
// Everything the user or the data supplies (class names, ids, captions) is set with
// textContent, never innerHTML. Thumbnails arrive as binary buffers and are shown
// through Blob URLs that are revoked when the batch changes or the view goes away.

export const DEFAULT_KEYMAP = {
  "1": "class:1", "2": "class:2", "3": "class:3", "4": "class:4", "5": "class:5",
  "6": "class:6", "7": "class:7", "8": "class:8", "9": "class:9", "0": "class:10",
  ArrowLeft: "left", ArrowRight: "right", ArrowUp: "up", ArrowDown: "down",
  h: "left", l: "right", k: "up", j: "down",
  " ": "skip", Backspace: "undo", z: "undo", a: "accept", Enter: "submit", Escape: "leave",
};

const PALETTE_THRESHOLD = 10; // more classes than this: a searchable palette

// ---------------------------------------------------------------- pure state
/** Fresh labelling state for a batch of `n` tiles. */
export function createState(n) {
  return { n, focus: 0, selected: new Set(), anchor: null, assign: new Map(), sources: new Map(),
           skipped: new Set(), history: [], seconds: new Map(), lastTime: null };
}

function nextOpen(state, items, from) {
  for (let step = 1; step <= state.n; step++) {
    const i = (from + step) % state.n;
    const id = items[i].id;
    if (!state.assign.has(id) && !state.skipped.has(id)) return i;
  }
  return from;
}

function targets(state) {
  return state.selected.size ? [...state.selected].sort((a, b) => a - b) : [state.focus];
}

function record(state, items, idxs, value, source, now) {
  const prev = idxs.map((i) => {
    const id = items[i].id;
    return { i, id, label: state.assign.get(id), source: state.sources.get(id),
             skipped: state.skipped.has(id), seconds: state.seconds.get(id) };
  });
  state.history.push(prev);
  const dt = state.lastTime == null || now == null ? null : Math.max(0, (now - state.lastTime) / 1000);
  for (const i of idxs) {
    const id = items[i].id;
    if (value === null) {
      state.assign.delete(id);
      state.sources.delete(id);
      state.skipped.add(id);
    } else {
      state.assign.set(id, value);
      state.sources.set(id, source);
      state.skipped.delete(id);
      if (dt != null) state.seconds.set(id, dt / idxs.length);
    }
  }
  if (now != null) state.lastTime = now;
  state.selected.clear();
  state.focus = nextOpen(state, items, idxs[idxs.length - 1]);
}

/**
 * Apply one action to the state; returns what happened:
 * "changed", "moved", "submit", "leave", "undo-remote" (nothing to undo here), or null.
 * `columns` is the number of tiles per row (for up/down).
 */
export function applyAction(state, action, { items, classes, columns = 8, now = null }) {
  if (!state.n) return action === "submit" ? "submit" : action === "leave" ? "leave" : null;
  const move = (d) => {
    const j = state.focus + d;
    if (j >= 0 && j < state.n) state.focus = j;
    return "moved";
  };
  if (action.startsWith("class:")) {
    const k = parseInt(action.slice(6), 10) - 1;
    if (!(k >= 0 && k < classes.length)) return null;
    record(state, items, targets(state), classes[k], "human", now);
    return "changed";
  }
  switch (action) {
    case "left": return move(-1);
    case "right": return move(1);
    case "up": return move(-columns);
    case "down": return move(columns);
    case "skip":
      record(state, items, targets(state), null, null, now);
      return "changed";
    case "accept": {
      const idxs = targets(state).filter((i) => items[i].suggestion != null && classes.includes(items[i].suggestion));
      if (!idxs.length) return null;
      // one undo step per suggestion class keeps undo simple: accept all, same source
      const prevLen = state.history.length;
      for (const i of idxs) record(state, items, [i], items[i].suggestion, "accepted", now);
      const merged = state.history.splice(prevLen).flat();
      state.history.push(merged);
      return "changed";
    }
    case "undo": {
      const prev = state.history.pop();
      if (!prev) return "undo-remote";
      for (const p of prev) {
        if (p.label === undefined) state.assign.delete(p.id); else state.assign.set(p.id, p.label);
        if (p.source === undefined) state.sources.delete(p.id); else state.sources.set(p.id, p.source);
        if (p.seconds === undefined) state.seconds.delete(p.id); else state.seconds.set(p.id, p.seconds);
        if (p.skipped) state.skipped.add(p.id); else state.skipped.delete(p.id);
      }
      state.focus = prev[0].i;
      state.selected.clear();
      return "changed";
    }
    case "submit": return "submit";
    case "leave": return "leave";
    default: return null;
  }
}

/** Mouse selection: plain click focuses one tile, shift extends a range, ctrl/cmd toggles. */
export function clickTile(state, i, { shift = false, toggle = false } = {}) {
  if (shift && state.anchor != null) {
    const [a, b] = state.anchor < i ? [state.anchor, i] : [i, state.anchor];
    state.selected = new Set(Array.from({ length: b - a + 1 }, (_, k) => a + k));
  } else if (toggle) {
    if (!state.selected.size) state.selected.add(state.focus);
    if (state.selected.has(i)) state.selected.delete(i); else state.selected.add(i);
    state.anchor = i;
  } else {
    state.selected.clear();
    state.anchor = i;
  }
  state.focus = i;
}

/** The submit message for the current state. */
export function submitPayload(state) {
  return {
    type: "submit",
    labels: Object.fromEntries(state.assign),
    sources: Object.fromEntries(state.sources),
    skipped: [...state.skipped],
    seconds: Object.fromEntries(state.seconds),
  };
}

/** Classes whose name contains `query` (case-insensitive), with their 1-based numbers. */
export function filterClasses(classes, query) {
  const q = (query || "").trim().toLowerCase();
  return classes.map((name, i) => ({ name, number: i + 1 })).filter((c) => !q || c.name.toLowerCase().includes(q));
}

// ---------------------------------------------------------------- DOM helpers
function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = String(text);
  return e;
}

function toBlobUrl(buf, mime) {
  if (buf == null) return null;
  const bytes = buf instanceof DataView ? new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength)
    : buf instanceof ArrayBuffer ? new Uint8Array(buf) : buf;
  return URL.createObjectURL(new Blob([bytes], { type: mime || "image/jpeg" }));
}

function columnsOf(tilesEl, fallback) {
  const kids = tilesEl.children;
  if (!kids.length) return fallback;
  const top = kids[0].offsetTop;
  let n = 0;
  for (const k of kids) {
    if (k.offsetTop !== top) break;
    n++;
  }
  // jsdom (no layout) puts every tile at offsetTop 0: use the fallback
  return n === kids.length && kids.length > 1 && kids[kids.length - 1].offsetLeft === kids[0].offsetLeft ? fallback : n;
}

// ---------------------------------------------------------------- view
function render({ model, el }) {
  const root = h("div", "alw-grid");
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "label grid: digits assign classes, arrows move, Enter submits");
  const header = h("div", "alw-header");
  const progress = h("span", "alw-progress");
  const status = h("span", "alw-status");
  status.setAttribute("role", "status");
  header.append(progress, status);
  const tiles = h("div", "alw-tiles");
  const classBar = h("div", "alw-classes");
  const search = h("input", "alw-search");
  search.type = "search";
  search.placeholder = "search classes…";
  search.setAttribute("aria-label", "search classes");
  const classList = h("div", "alw-class-list");
  const actions = h("div", "alw-actions");
  const btn = (label, action, title) => {
    const b = h("button", `alw-btn alw-${action}`, label);
    b.type = "button";
    b.title = title;
    b.addEventListener("click", () => act(action));
    return b;
  };
  actions.append(btn("Accept suggestion (a)", "accept", "assign the suggested class"),
                 btn("Skip (space)", "skip", "skip this item"),
                 btn("Undo (z)", "undo", "undo the last assignment"),
                 btn("Submit (Enter)", "submit", "save the labels of this batch"));
  const overlay = h("div", "alw-overlay");
  overlay.hidden = true;
  const overlayImg = h("img", "alw-overlay-img");
  const overlayCaption = h("div", "alw-overlay-caption");
  overlay.append(overlayImg, overlayCaption);
  overlay.addEventListener("click", () => { overlay.hidden = true; root.focus(); });
  root.append(header, tiles, classBar, actions, overlay);
  el.appendChild(root);

  let state = createState(0);
  let urls = [];
  let overlayUrl = null;
  let tileEls = [];
  let busy = false;
  const items = () => model.get("items") || [];
  const classes = () => model.get("classes") || [];
  const clock = () => (typeof performance !== "undefined" ? performance.now() : Date.now());

  function syncAssignments() {
    model.set("assignments", Object.fromEntries(state.assign));
    model.save_changes();
  }

  function paintTiles() {
    const its = items();
    tileEls.forEach((t, i) => {
      const id = its[i].id;
      const label = state.assign.get(id);
      t.classList.toggle("alw-focus", i === state.focus);
      t.classList.toggle("alw-selected", state.selected.has(i));
      t.classList.toggle("alw-done", label !== undefined);
      t.classList.toggle("alw-skipped", state.skipped.has(id));
      t.setAttribute("aria-selected", String(i === state.focus || state.selected.has(i)));
      t.querySelector(".alw-assigned").textContent =
        label !== undefined ? label : state.skipped.has(id) ? "skipped" : "";
    });
    const p = model.get("progress") || {};
    const done = state.assign.size;
    const parts = [`${done}/${state.n} labelled in this batch`];
    if (p.pool_size != null) parts.push(`pool ${p.pool_labelled ?? 0}/${p.pool_size} labelled`);
    if (p.budget != null) parts.push(`budget ${p.budget}`);
    progress.textContent = parts.join(" · ");
    const focused = tileEls[state.focus];
    if (focused && focused.scrollIntoView && root.contains(document.activeElement)) {
      focused.scrollIntoView({ block: "nearest" });
    }
  }

  function buildTiles() {
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    tiles.replaceChildren();
    const its = items();
    const thumbs = model.get("thumbs") || [];
    state = createState(its.length);
    state.lastTime = clock();
    tileEls = its.map((it, i) => {
      const t = h("div", "alw-tile");
      t.dataset.index = String(i);
      t.setAttribute("role", "option");
      const box = h("div", "alw-thumb");
      const img = h("img");
      img.alt = it.caption || it.id;
      img.draggable = false;
      // tiny images (8x8 digits) are scaled up without blurring
      img.addEventListener("load", () => img.classList.toggle("alw-pixel", img.naturalWidth > 0 && img.naturalWidth < 48));
      // an unreadable image (it.error from Python, no bytes, or bytes the browser cannot decode)
      // becomes a placeholder: the tile can still be skipped or labelled
      const broken = (why) => {
        box.classList.add("alw-broken");
        img.remove();
        const ph = h("div", "alw-placeholder", "image unavailable");
        ph.title = why || "the image could not be read";
        box.prepend(ph);
      };
      const thumb = thumbs[i];
      const url = it.error || !thumb || !thumb.byteLength ? null : toBlobUrl(thumb, it.mime);
      img.addEventListener("error", () => broken(it.error));
      if (url) { urls.push(url); img.src = url; }
      // mixed aspect ratios: every tile has the same box and the image is fitted inside (CSS object-fit)
      if (it.w && it.h) img.title = `${it.w}×${it.h}`;
      box.appendChild(img);
      if (!url) broken(it.error);
      const zoom = h("button", "alw-zoom", "⤢");
      zoom.type = "button";
      zoom.title = "enlarge";
      zoom.addEventListener("click", (e) => { e.stopPropagation(); enlarge(i); });
      box.appendChild(zoom);
      const caption = h("div", "alw-caption", it.caption || it.id);
      caption.title = it.id;
      const suggest = h("div", "alw-suggest");
      if (it.suggestion != null) {
        const conf = it.confidence != null ? ` ${Math.round(it.confidence * 100)}%` : "";
        suggest.textContent = `${it.suggestion}${conf}`;
        suggest.title = "model's suggestion (press a to accept)";
      }
      const assigned = h("div", "alw-assigned");
      t.append(box, caption, suggest, assigned);
      t.addEventListener("click", (e) => {
        clickTile(state, i, { shift: e.shiftKey, toggle: e.ctrlKey || e.metaKey });
        paintTiles();
        root.focus();
      });
      t.addEventListener("dblclick", () => enlarge(i));
      tiles.appendChild(t);
      return t;
    });
    syncAssignments();
    paintTiles();
  }

  function buildClasses() {
    const cls = classes();
    const usePalette = cls.length > PALETTE_THRESHOLD;
    classBar.replaceChildren();
    classBar.classList.toggle("alw-palette", usePalette);
    if (usePalette) classBar.appendChild(search);
    classBar.appendChild(classList);
    paintClasses();
  }

  function paintClasses() {
    const cls = classes();
    const shown = filterClasses(cls, cls.length > PALETTE_THRESHOLD ? search.value : "");
    classList.replaceChildren(...shown.map(({ name, number }) => {
      const b = h("button", "alw-class");
      b.type = "button";
      if (number <= 10) b.appendChild(h("kbd", null, number % 10));
      b.appendChild(h("span", null, name));
      b.title = name;
      b.addEventListener("click", () => { assignClass(number); root.focus(); });
      return b;
    }));
  }

  function assignClass(number) {
    const cls = classes();
    if (!(number >= 1 && number <= cls.length)) return;
    record(state, items(), targets(state), cls[number - 1], "human", clock());
    syncAssignments();
    paintTiles();
  }

  function enlarge(i) {
    const it = items()[i];
    if (!it) return;
    const thumbs = model.get("thumbs") || [];
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = toBlobUrl(thumbs[i], it.mime);
    overlayImg.src = overlayUrl || "";
    overlayImg.alt = it.caption || it.id;
    overlayCaption.textContent = it.caption ? `${it.caption} (${it.id})` : it.id;
    overlay.dataset.id = it.id;
    overlay.hidden = false;
    model.send({ type: "enlarge", id: it.id }); // Python answers with a larger image
  }

  function submit() {
    if (busy) return;
    busy = true;
    root.classList.add("alw-busy");
    status.textContent = "saving…";
    model.send(submitPayload(state));
  }

  function act(action) {
    if (busy && action !== "leave") return;
    const r = applyAction(state, action, { items: items(), classes: classes(),
                                           columns: columnsOf(tiles, model.get("columns") || 8), now: clock() });
    if (r === "changed") syncAssignments();
    if (r === "submit") submit();
    if (r === "undo-remote") model.send({ type: "undo" });
    if (r === "leave") {
      if (!overlay.hidden) { overlay.hidden = true; return; }
      root.blur();
      return;
    }
    paintTiles();
  }

  root.addEventListener("keydown", (e) => {
    // Keys typed in the class search box: filter, Enter assigns the first match.
    if (e.target === search) {
      e.stopPropagation();
      if (e.key === "Enter") {
        const first = filterClasses(classes(), search.value)[0];
        if (first) assignClass(first.number);
        search.value = "";
        paintClasses();
        root.focus();
        e.preventDefault();
      } else if (e.key === "Escape") {
        search.value = "";
        paintClasses();
        root.focus();
        e.preventDefault();
      }
      return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey) { e.stopPropagation(); return; }
    if (e.key === "/" && classes().length > PALETTE_THRESHOLD) {
      e.preventDefault();
      e.stopPropagation();
      search.focus();
      return;
    }
    const keymap = model.get("keymap") || DEFAULT_KEYMAP;
    const action = keymap[e.key];
    if (action === "leave") {
      act("leave");
      return; // let Esc reach Jupyter too: it leaves the widget
    }
    // Everything else stays inside the widget so notebook shortcuts (a, b, dd, z ...) never fire.
    e.stopPropagation();
    if (!action) return;
    e.preventDefault();
    act(action);
  });
  search.addEventListener("input", paintClasses);

  const onCustom = (msg, buffers) => {
    if (msg && msg.type === "image" && !overlay.hidden && overlay.dataset.id === msg.id && buffers && buffers[0]) {
      if (overlayUrl) URL.revokeObjectURL(overlayUrl);
      overlayUrl = toBlobUrl(buffers[0], msg.mime);
      overlayImg.src = overlayUrl;
    }
  };
  const onItems = () => { busy = false; root.classList.remove("alw-busy"); buildTiles(); };
  const onStatus = () => {
    status.textContent = model.get("status") || "";
    status.classList.toggle("alw-error", (model.get("status") || "").startsWith("error"));
  };
  const onBusy = () => {
    busy = !!model.get("busy");
    root.classList.toggle("alw-busy", busy);
  };
  const listeners = [
    ["change:items", onItems],
    ["change:classes", buildClasses],
    ["change:progress", paintTiles],
    ["change:status", onStatus],
    ["change:busy", onBusy],
    ["msg:custom", onCustom],
  ];
  for (const [event, fn] of listeners) model.on(event, fn);

  buildClasses();
  buildTiles();
  onStatus();
  onBusy();
  if (model.get("autofocus")) root.focus();

  return () => {
    urls.forEach((u) => URL.revokeObjectURL(u));
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    for (const [event, fn] of listeners) model.off(event, fn);
  };
}

export default { render };
