// LabelGrid: one anywidget for a whole batch of images to label.
//
// A plain ES module with no imports, shipped as is (no build step).
//
// State from Python (traits, see alwidgets/widgets/labelgrid.py):
//   items     [{id, caption, thumb (bytes: a DataView), mime, w, h, suggestion, confidence, error}]
//   classes   [name]
//   keymap    {key: action}: the whole map, computed in Python. This file has no default map:
//             it looks keys up there and shows on the buttons the keys it finds there.
//   batch     the number of the shown batch (sent back with a submit)
//   progress  {pool_labelled, pool_size, budget, accuracy, accuracy_std}
//   status, notice (shown instead of tiles when there are none), error ({} or {kind, message}), busy
// To Python: the `assignments` trait ({id: class}) mirrors the pending labels; Enter sends one
// custom message {type: "submit", batch, labels, sources, skipped, seconds}; Backspace with
// nothing left to undo here sends {type: "undo"}; the enlarged image is asked for with
// anywidget's experimental.invoke("enlarge", {id}).
//
// Everything the user or the data supplies (class names, ids, captions) is set with
// textContent, never innerHTML. Thumbnails are shown through Blob URLs that are revoked
// when the batch changes or the view goes away.

const PALETTE_THRESHOLD = 10; // more classes than this: a searchable palette
const ENLARGE_TIMEOUT_MS = 30000;

// ---------------------------------------------------------------- pure helpers
/** Keys bound to `action` in `keymap`, in the map's order. */
export function keysFor(keymap, action) {
  return Object.keys(keymap || {}).filter((k) => keymap[k] === action);
}

const KEY_NAMES = { " ": "Space", ArrowLeft: "←", ArrowRight: "→", ArrowUp: "↑", ArrowDown: "↓", Escape: "Esc" };

/** How a KeyboardEvent.key is written on a keycap. */
export function keyLabel(key) {
  return KEY_NAMES[key] || key;
}

/** The class named by an action ("class:N" is the N-th class), or undefined. */
export function classOf(action, classes) {
  if (typeof action !== "string" || !action.startsWith("class:")) return undefined;
  const k = parseInt(action.slice(6), 10) - 1;
  return k >= 0 && k < classes.length ? classes[k] : undefined;
}

/**
 * The key hint of class number `number` (1-based) named `name`:
 * {keys, isName}. isName: a key is the class name itself (digit and letter classes),
 * so the button shows the name as the keycap; otherwise the keys are shown as separate keycaps.
 */
export function classHint(keymap, number, name) {
  const keys = keysFor(keymap, `class:${number}`);
  return { keys, isName: keys.includes(name) };
}

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

/** Give tiles `idxs` the class `value` (null: skip them); one undo step. */
export function record(state, items, idxs, value, source, now) {
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
 * "changed", "moved", "submit", "leave", "search", "undo-remote" (nothing to undo here), or null.
 * `columns` is the number of tiles per row (for up/down).
 */
export function applyAction(state, action, { items, classes, columns = 8, now = null }) {
  if (action === "leave" || action === "search") return action;
  if (!state.n) return action === "undo" ? "undo-remote" : null;
  const move = (d) => {
    const j = state.focus + d;
    if (j >= 0 && j < state.n) state.focus = j;
    return "moved";
  };
  const cls = classOf(action, classes);
  if (cls !== undefined) {
    record(state, items, targets(state), cls, "human", now);
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
      const prevLen = state.history.length;
      for (const i of idxs) record(state, items, [i], items[i].suggestion, "accepted", now);
      state.history.push(state.history.splice(prevLen).flat()); // one undo step for the whole accept
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

/** The submit message for the current state of batch number `batch`. */
export function submitPayload(state, batch) {
  return {
    type: "submit",
    batch,
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

/** The header's progress line. */
export function progressText(n, done, p = {}) {
  const parts = n ? [`${done}/${n} labelled in this batch`] : [];
  if (p.pool_size != null) parts.push(`pool ${p.pool_labelled ?? 0}/${p.pool_size} labelled`);
  if (p.budget != null) parts.push(`budget ${p.budget}`);
  if (p.accuracy != null) {
    const std = p.accuracy_std != null && Number.isFinite(p.accuracy_std) ? ` ± ${Math.round(p.accuracy_std * 100)}` : "";
    parts.push(`accuracy ${Math.round(p.accuracy * 100)}%${std}`);
  }
  return parts.join(" · ");
}

/** The alert line for the `error` trait ({} -> ""). */
export function errorText(error) {
  if (!error || !error.message) return "";
  switch (error.kind) {
    case "submit": return `Not saved: ${error.message}. The batch is kept: fix it and press Enter again.`;
    case "undo": return `Undo failed: ${error.message}`;
    case "message": return `Refused: ${error.message}`;
    default: return error.message;
  }
}

/** Whether focus may be taken from `el` (the active element): not while the user is typing somewhere. */
export function mayTakeFocus(el) {
  if (!el || el === el.ownerDocument?.body) return true;
  if (el.isContentEditable) return false;
  return !/^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName);
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
  if (!bytes.byteLength) return null;
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

function keycap(key) {
  return h("kbd", "alw-key", keyLabel(key));
}

// ---------------------------------------------------------------- view
function render({ model, el, experimental }) {
  const root = h("div", "alw-grid");
  root.tabIndex = 0;
  root.setAttribute("data-lm-suppress-shortcuts", "true");
  root.setAttribute("role", "application");
  root.setAttribute("aria-label", "label grid: keys assign classes, arrows move, Enter submits");
  const header = h("div", "alw-header");
  const progress = h("span", "alw-progress");
  const status = h("span", "alw-status");
  status.setAttribute("role", "status");
  header.append(progress, status);
  const alert = h("div", "alw-error");
  alert.setAttribute("role", "alert");
  const hint = h("div", "alw-hint", "click a tile to label with the keyboard");
  const notice = h("div", "alw-notice");
  const tiles = h("div", "alw-tiles");
  const classBar = h("div", "alw-classes");
  const search = h("input", "alw-search");
  search.type = "search";
  search.placeholder = "search classes…";
  search.setAttribute("aria-label", "search classes");
  const classList = h("div", "alw-class-list");
  const actions = h("div", "alw-actions");
  const buttons = {};
  const btn = (label, action, title) => {
    const b = h("button", `alw-btn alw-${action}`);
    b.type = "button";
    b.title = title;
    b.dataset.label = label;
    b.addEventListener("click", () => { act(action); root.focus(); });
    buttons[action] = b;
    return b;
  };
  actions.append(btn("Accept suggestion", "accept", "assign the suggested class"),
                 btn("Skip", "skip", "skip this item"),
                 btn("Undo", "undo", "undo the last assignment"),
                 btn("Submit", "submit", "save the labels of this batch"));
  const overlay = h("div", "alw-overlay");
  overlay.hidden = true;
  const overlayImg = h("img", "alw-overlay-img");
  const overlayCaption = h("div", "alw-overlay-caption");
  overlay.append(overlayImg, overlayCaption);
  overlay.addEventListener("click", () => { overlay.hidden = true; root.focus(); });
  root.append(header, alert, hint, notice, tiles, classBar, actions, overlay);
  el.appendChild(root);

  let state = createState(0);
  let urls = [];
  let overlayUrl = null;
  let tileEls = [];
  let busy = false;
  let disposed = false;
  const items = () => model.get("items") || [];
  const classes = () => model.get("classes") || [];
  const keymap = () => model.get("keymap") || {};
  const clock = () => (typeof performance !== "undefined" ? performance.now() : Date.now());
  const hasFocus = () => root.contains(document.activeElement);

  function syncAssignments() {
    model.set("assignments", Object.fromEntries(state.assign));
    model.save_changes();
  }

  function paintFocus() {
    const active = hasFocus();
    root.classList.toggle("alw-active", active);
    hint.hidden = active || !state.n;
  }

  function paintTiles() {
    const its = items();
    // a state update can bring new items before their change event (e.g. with progress): rebuild first
    if (its.length !== tileEls.length || tileEls.some((t, i) => t.dataset.id !== its[i].id)) { buildTiles(); return; }
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
    progress.textContent = progressText(state.n, state.assign.size, model.get("progress") || {});
    const focused = tileEls[state.focus];
    if (focused && focused.scrollIntoView && hasFocus()) focused.scrollIntoView({ block: "nearest" });
    paintFocus();
  }

  function buildTiles() {
    urls.forEach((u) => URL.revokeObjectURL(u));
    urls = [];
    tiles.replaceChildren();
    const its = items();
    state = createState(its.length);
    state.lastTime = clock();
    tileEls = its.map((it, i) => {
      const t = h("div", "alw-tile");
      t.dataset.index = String(i);
      t.dataset.id = it.id;
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
      const url = it.error ? null : toBlobUrl(it.thumb, it.mime);
      img.addEventListener("error", () => broken(it.error));
      if (url) { urls.push(url); img.src = url; }
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
        const conf = it.confidence != null ? ` (${Math.round(it.confidence * 100)}%)` : "";
        suggest.textContent = `${it.suggestion}${conf}`;
        suggest.title = "the model's suggestion (accept it with the Accept button or its key)";
      }
      const assigned = h("div", "alw-assigned");
      t.append(box, caption, suggest, assigned);
      t.addEventListener("click", (e) => {
        clickTile(state, i, { shift: e.shiftKey, toggle: e.ctrlKey || e.metaKey });
        root.focus();
        paintTiles();
      });
      t.addEventListener("dblclick", () => enlarge(i));
      tiles.appendChild(t);
      return t;
    });
    const empty = !its.length;
    root.classList.toggle("alw-empty", empty);
    notice.hidden = !empty;
    classBar.hidden = empty;
    for (const a of ["accept", "skip", "submit"]) buttons[a].hidden = empty;
    syncAssignments();
    paintTiles();
  }

  function paintButtons() {
    const km = keymap();
    for (const [action, b] of Object.entries(buttons)) {
      b.replaceChildren(h("span", null, b.dataset.label));
      const keys = keysFor(km, action);
      if (keys.length) b.append(" ", keycap(keys[0]));
    }
  }

  function buildClasses() {
    const cls = classes();
    const usePalette = cls.length > PALETTE_THRESHOLD;
    classBar.replaceChildren();
    classBar.classList.toggle("alw-palette", usePalette);
    if (usePalette) classBar.appendChild(search);
    classBar.appendChild(classList);
    paintClasses();
    paintButtons();
  }

  function paintClasses() {
    const cls = classes();
    const km = keymap();
    const shown = filterClasses(cls, cls.length > PALETTE_THRESHOLD ? search.value : "");
    classList.replaceChildren(...shown.map(({ name, number }) => {
      const b = h("button", "alw-class");
      b.type = "button";
      const { keys, isName } = classHint(km, number, name);
      if (isName) {
        // the key is the class name: one keycap, nothing to translate
        b.classList.add("alw-class-is-key");
        b.appendChild(h("kbd", "alw-key alw-key-name", name));
        b.title = `${name} (key ${keyLabel(name)})`;
      } else {
        for (const k of keys.slice(0, 2)) b.appendChild(keycap(k));
        b.appendChild(h("span", "alw-class-name", name));
        b.title = keys.length ? `${name} (key ${keys.map(keyLabel).join(" or ")})` : name;
      }
      b.addEventListener("click", () => { assignClass(name); root.focus(); });
      return b;
    }));
  }

  function assignClass(name) {
    if (!state.n) return;
    record(state, items(), targets(state), name, "human", clock());
    syncAssignments();
    paintTiles();
  }

  async function enlarge(i) {
    const it = items()[i];
    if (!it) return;
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = it.error ? null : toBlobUrl(it.thumb, it.mime);
    overlayImg.src = overlayUrl || "";
    overlayImg.alt = it.caption || it.id;
    overlayCaption.textContent = it.caption && it.caption !== it.id ? `${it.caption} (${it.id})` : it.id;
    overlay.dataset.id = it.id;
    overlay.hidden = false;
    if (!experimental || typeof experimental.invoke !== "function") return; // the thumbnail, enlarged
    let response, buffers;
    try {
      [response, buffers] = await experimental.invoke("enlarge", { id: it.id },
                                                      { signal: AbortSignal.timeout(ENLARGE_TIMEOUT_MS) });
    } catch (e) {
      return; // no answer (kernel busy or gone): the enlarged thumbnail stays
    }
    if (disposed || overlay.hidden || overlay.dataset.id !== it.id || !response) return;
    if (response.error || !buffers || !buffers[0]) {
      overlayCaption.textContent += ` — larger image unavailable: ${response.error || "no data"}`;
      return;
    }
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    overlayUrl = toBlobUrl(buffers[0], response.mime);
    overlayImg.src = overlayUrl || "";
  }

  function submit() {
    if (busy || !state.n) return;
    busy = true;
    root.classList.add("alw-busy");
    status.textContent = "saving…";
    model.send(submitPayload(state, model.get("batch")));
  }

  function act(action) {
    if (busy && action !== "leave") return;
    const r = applyAction(state, action, { items: items(), classes: classes(),
                                           columns: columnsOf(tiles, model.get("columns") || 8), now: clock() });
    if (r === "changed") syncAssignments();
    if (r === "submit") submit();
    if (r === "undo-remote") model.send({ type: "undo" });
    if (r === "search") {
      if (classes().length > PALETTE_THRESHOLD && !classBar.hidden) search.focus();
      return;
    }
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
        if (first) assignClass(first.name);
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
    const action = keymap()[e.key];
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
  root.addEventListener("focusin", paintFocus);
  root.addEventListener("focusout", () => setTimeout(paintFocus, 0)); // activeElement settles after the event
  root.addEventListener("mousedown", (e) => { if (e.target === root) root.focus(); });

  // Focus the grid when a batch renders, unless the user is typing elsewhere (a cell's editor)
  // or the notebook takes the focus back: then the hint says "click a tile".
  let focusTries = 0;
  function maybeFocus() {
    if (disposed || !model.get("autofocus") || !state.n || hasFocus()) { paintFocus(); return; }
    if (!root.isConnected && focusTries++ < 20) { setTimeout(maybeFocus, 100); return; }
    if (mayTakeFocus(document.activeElement)) root.focus({ preventScroll: true });
    paintFocus();
  }

  const onItems = () => {
    busy = false;
    root.classList.remove("alw-busy");
    buildTiles();
    focusTries = 0;
    maybeFocus();
  };
  const onStatus = () => {
    const text = model.get("status") || "";
    status.textContent = text;
    status.title = text;
  };
  const onNotice = () => { notice.textContent = model.get("notice") || ""; };
  const onError = () => {
    const text = errorText(model.get("error"));
    alert.textContent = text;
    alert.hidden = !text;
    alert.dataset.kind = (model.get("error") || {}).kind || "";
  };
  const onBusy = () => {
    busy = !!model.get("busy");
    root.classList.toggle("alw-busy", busy);
  };
  const listeners = [
    ["change:items", onItems],
    ["change:classes", buildClasses],
    ["change:keymap", buildClasses],
    ["change:progress", paintTiles],
    ["change:status", onStatus],
    ["change:notice", onNotice],
    ["change:error", onError],
    ["change:busy", onBusy],
  ];
  for (const [event, fn] of listeners) model.on(event, fn);

  buildClasses();
  buildTiles();
  onStatus();
  onNotice();
  onError();
  onBusy();
  setTimeout(maybeFocus, 0);

  return () => {
    disposed = true;
    urls.forEach((u) => URL.revokeObjectURL(u));
    if (overlayUrl) URL.revokeObjectURL(overlayUrl);
    for (const [event, fn] of listeners) model.off(event, fn);
  };
}

export default { render };
