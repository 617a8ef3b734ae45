// dermaseg canvas: the image with an SVG overlay, and the gestures that prompt and edit it.
// Runs as gr.HTML js_on_load: `element`, `props`, `trigger`, `watch` are given by Gradio.
// Coordinates are image pixels (x, y). The SVG's viewBox is the part of the image on screen (zoom and
// pan change only the viewBox, kept at the stage's aspect ratio), so the overlay needs no scaling and
// every pointer position goes through the SVG's own screen transform (`toImage`) at every zoom.
const NS = "http://www.w3.org/2000/svg";
const root = element.querySelector(".ds-canvas");
const stage = element.querySelector(".ds-stage");
const statusEl = element.querySelector(".ds-status");
const empty = element.querySelector(".ds-empty");
const loading = element.querySelector(".ds-loading");
const zoomOut = element.querySelector(".ds-zoom");
const sizeIn = element.querySelector(".ds-brush-size");
const sizeOut = element.querySelector(".ds-brush-out");
const fillIn = element.querySelector(".ds-fill");
const fillOut = element.querySelector(".ds-fill-out");
let view = { kind: "view", ack: 0 };
let mode = "box";
let seq = 0;
let pending = null; // {seq, t0}: the gesture whose answer we are timing
let drag = null; // current pointer interaction
let deferred = false; // a view arrived during a drag: draw it on release
let zoom = null; // {cx, cy, s}: image point at the stage's centre, screen px per image px; null: fit
let strokeSeq = 0; // the paint gesture whose preview stays drawn until its answer arrives
let spaceHeld = false;
let hover = false; // the pointer is over the stage (Space pans only then)
const touches = new Map(); // pointerId -> [clientX, clientY] of touch pointers down
window.__dsLatencies = window.__dsLatencies || [];
window.__dsFirstDrawn = window.__dsFirstDrawn || [];

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

const svg = el("svg", { class: "ds-svg", preserveAspectRatio: "xMidYMid meet", viewBox: "0 0 1 1" });
const img = el("image", { class: "ds-img", x: 0, y: 0, preserveAspectRatio: "none" }, svg);
const heat = el("image", { class: "ds-heat", x: 0, y: 0, preserveAspectRatio: "none" }, svg);
const lesionG = el("g", { class: "ds-lesions" }, svg);
const maskPath = el("path", { class: "ds-mask", "fill-rule": "evenodd", d: "" }, svg);
const strokePath = el("path", { class: "ds-stroke", d: "" }, svg);
const axesG = el("g", { class: "ds-axes" }, svg);
const promptG = el("g", { class: "ds-prompts" }, svg);
const rulerG = el("g", { class: "ds-ruler" }, svg);
const handleG = el("g", { class: "ds-handles" }, svg);
const dragRect = el("rect", { class: "ds-dragbox", visibility: "hidden" }, svg);
const brushCursor = el("circle", { class: "ds-brush-cursor", r: 1, visibility: "hidden" }, svg);
svg.style.display = "none";
stage.appendChild(svg);

function toImage(evt) {
  const pt = svg.createSVGPoint();
  pt.x = evt.clientX;
  pt.y = evt.clientY;
  const p = pt.matrixTransform(svg.getScreenCTM().inverse());
  return [p.x, p.y];
}
function pxPerUnit() {
  const m = svg.getScreenCTM();
  return m ? m.a : 1;
}
function inside(p, margin = 0) {
  return (
    view.image && p[0] >= -margin && p[1] >= -margin && p[0] <= view.image.width + margin && p[1] <= view.image.height + margin
  );
}
function round2(v) {
  return Math.round(v * 100) / 100;
}

// ---- preferences (UI only: never image data in the browser's storage)
function pref(name, fallback) {
  try {
    const v = window.localStorage.getItem("dermaseg." + name);
    return v === null ? fallback : Number(v);
  } catch (e) {
    return fallback;
  }
}
function savePref(name, value) {
  try {
    window.localStorage.setItem("dermaseg." + name, String(value));
  } catch (e) {
    /* storage refused: the preference lasts for this page only */
  }
}
let lastFill = 25;
function setFill(percent) {
  const v = Math.max(0, Math.min(100, Math.round(percent)));
  if (v > 0) lastFill = v;
  fillIn.value = v;
  fillOut.textContent = v + "%";
  root.style.setProperty("--ds-fill-opacity", String(v / 100));
  savePref("fillOpacity", v);
}
function setBrushSize(px) {
  const v = Math.max(Number(sizeIn.min), Math.min(Number(sizeIn.max), Math.round(px)));
  sizeIn.value = v;
  sizeOut.textContent = String(v);
  savePref("brushSize", v);
  brushCursor.setAttribute("r", brushRadius());
}
function brushRadius(u = pxPerUnit()) {
  return Number(sizeIn.value) / 2 / u; // image px: the size is a screen diameter
}
fillIn.addEventListener("input", () => setFill(Number(fillIn.value)));
sizeIn.addEventListener("input", () => setBrushSize(Number(sizeIn.value)));

// ---- zoom and pan: the viewBox is the stage's rectangle, centred on (cx, cy), s screen px per image px
function stageSize() {
  return [stage.clientWidth || 1, stage.clientHeight || 1];
}
function fitZoom() {
  const [ew, eh] = stageSize();
  const { width, height } = view.image;
  return { cx: width / 2, cy: height / 2, s: Math.min(ew / width, eh / height) };
}
function current() {
  return zoom || fitZoom();
}
function applyZoom() {
  if (!view.image) return;
  const z = current();
  const [ew, eh] = stageSize();
  const w = ew / z.s, h = eh / z.s;
  svg.setAttribute("viewBox", [z.cx - w / 2, z.cy - h / 2, w, h].join(" "));
  zoomOut.textContent = Math.round(z.s * 100) + "%";
  root.dataset.zoom = String(z.s);
}
function setZoom(z) {
  const { width, height } = view.image;
  const fit = fitZoom().s;
  const s = Math.max(Math.min(fit, 1) / 2, Math.min(32, z.s));
  // keep some of the image on screen: its centre point stays within the image
  zoom = { cx: Math.max(0, Math.min(width, z.cx)), cy: Math.max(0, Math.min(height, z.cy)), s: s };
  applyZoom();
  drawOverlay();
}
function zoomAt(p, factor) {
  const z = current();
  const s = z.s * factor;
  setZoom({ cx: p[0] - (p[0] - z.cx) * (z.s / s), cy: p[1] - (p[1] - z.cy) * (z.s / s), s: s });
}
function fit() {
  zoom = null;
  applyZoom();
  drawOverlay();
}
function oneToOne() {
  const z = current();
  setZoom({ cx: z.cx, cy: z.cy, s: 1 });
}
// The image point under client position (x, y) for zoom z (before any viewBox is set for it).
function imageAt(z, x, y) {
  const r = stage.getBoundingClientRect();
  const [ew, eh] = stageSize();
  return [z.cx + (x - r.left - ew / 2) / z.s, z.cy + (y - r.top - eh / 2) / z.s];
}

stage.addEventListener(
  "wheel",
  (evt) => {
    if (!view.image) return;
    evt.preventDefault(); // neither the page scrolls nor the browser zooms (ctrl+wheel is a trackpad pinch)
    const unit = evt.deltaMode === 1 ? 16 : evt.deltaMode === 2 ? 400 : 1;
    const k = evt.ctrlKey ? 0.01 : 0.002;
    zoomAt(toImage(evt), Math.exp(-evt.deltaY * unit * k));
  },
  { passive: false },
);
stage.addEventListener("pointerenter", () => (hover = true));
stage.addEventListener("pointerleave", () => {
  hover = false;
  brushCursor.setAttribute("visibility", "hidden");
});

// ---- sending gestures
// A gesture goes straight to the server's fast path (see gesture_route.py), one at a time in order;
// the measurements follow through the Gradio event "measure". Should the server refuse (a restarted
// server no longer knows this page's channel), the gesture goes through the Gradio event "gesture".
let queue = Promise.resolve();
function send(gesture) {
  seq = Math.max(seq, view.ack) + 1; // above every answer drawn, even if this script was reloaded
  gesture.kind = "gesture";
  gesture.seq = seq;
  pending = { seq: seq, t0: performance.now() };
  root.classList.add("ds-busy");
  const channel = view.channel;
  const text = JSON.stringify(gesture); // as it is now: an edited outline may change while this waits
  queue = queue.then(() => (channel ? post(text, channel) : viaGradio(text)));
  return seq;
}
function viaGradio(text) {
  props.value = text;
  trigger("gesture");
}
async function post(text, channel) {
  let r;
  try {
    r = await fetch(new URL("dermaseg/gesture", document.baseURI), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: '{"channel":' + JSON.stringify(channel) + ',"gesture":' + text + "}",
    });
    if (!r.ok) throw new Error("HTTP " + r.status);
  } catch (e) {
    viaGradio(text);
    return;
  }
  // The server has the gesture now: it is never sent again. Its answer is the view, or (a click without a
  // box) a line with its preview, drawn at once, then a line with the final view.
  try {
    const reader = r.body.getReader();
    const utf8 = new TextDecoder();
    let rest = "";
    for (;;) {
      const { value, done } = await reader.read();
      const lines = (rest + utf8.decode(value || new Uint8Array(), { stream: !done })).split("\n");
      rest = done ? "" : lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        const v = JSON.parse(line);
        if (v.kind === "preview") accept(v.view, true);
        else accept(v);
      }
      if (done) break;
    }
  } catch (e) {
    // cut short: the measure event below brings the session's view (a rejection would stop the queue)
  }
  trigger("measure");
}

function setStatus(text) {
  statusEl.textContent = text;
  statusEl.title = text; // the whole message, when the line cuts it
}

function setMode(m) {
  mode = m;
  root.dataset.mode = m;
  for (const b of element.querySelectorAll(".ds-toolbar button[data-mode]")) b.classList.toggle("active", b.dataset.mode === m);
  brushCursor.setAttribute("visibility", "hidden");
  drawHandles();
}

function ringsPath(parts) {
  let d = "";
  for (const part of parts) {
    for (const ring of [part.exterior].concat(part.holes || [])) {
      if (ring.length < 2) continue;
      d += "M" + ring.map((p) => p[0] + " " + p[1]).join("L") + "Z";
    }
  }
  return d;
}

// The draw* helpers take u = screen px per image px; drawOverlay() reads it once, before its DOM writes,
// as each getScreenCTM() after a write forces the browser to lay the page out again.
function drawPrompts(u = pxPerUnit()) {
  promptG.replaceChildren();
  const pr = view.prompts;
  if (!pr) return;
  const r = 6 / u;
  if (pr.box) {
    const [x0, y0, x1, y1] = pr.box;
    el("rect", { class: "ds-box", x: x0, y: y0, width: x1 - x0, height: y1 - y0, "stroke-width": 2 / u }, promptG);
  }
  pr.points.forEach((p, i) => {
    const pos = pr.labels[i] === 1;
    el("circle", { class: pos ? "ds-pos" : "ds-neg", cx: p[0], cy: p[1], r: r, "stroke-width": 2 / u }, promptG);
  });
}

function drawRuler(u = pxPerUnit()) {
  rulerG.replaceChildren();
  const pts = view.ruler || [];
  const w = 2 / u;
  if (pts.length === 2) el("line", { x1: pts[0][0], y1: pts[0][1], x2: pts[1][0], y2: pts[1][1], "stroke-width": w }, rulerG);
  for (const p of pts) el("circle", { cx: p[0], cy: p[1], r: 4 / u, "stroke-width": w }, rulerG);
}

function drawAxes(u = pxPerUnit()) {
  axesG.replaceChildren();
  const a = view.axes;
  if (!a) return;
  const w = 2 / u;
  for (const [name, seg] of [["major", a.major], ["minor", a.minor], ["feret", a.feret]]) {
    el("line", { class: "ds-axis-" + name, x1: seg[0][0], y1: seg[0][1], x2: seg[1][0], y2: seg[1][1], "stroke-width": w }, axesG);
  }
}

// Saved lesions other than the one being edited: thin outlines with their label; the select tool picks one.
function drawLesions(u = pxPerUnit()) {
  lesionG.replaceChildren();
  for (const l of view.lesions || []) {
    if (l.selected || !l.polygons || !l.polygons.length) continue;
    el("path", { class: "ds-lesion", "fill-rule": "evenodd", d: ringsPath(l.polygons), "stroke-width": 1.5 / u }, lesionG).dataset.id = l.id;
    let x = Infinity, y = Infinity;
    for (const part of l.polygons) for (const p of part.exterior) if (p[1] < y || (p[1] === y && p[0] < x)) [x, y] = p;
    const t = el("text", { class: "ds-lesion-label", x: x, y: y - 5 / u, "font-size": 12 / u, "stroke-width": 3 / u }, lesionG);
    t.textContent = l.label || "lesion " + l.id;
  }
}

function drawHandles(u = pxPerUnit()) {
  handleG.replaceChildren();
  if (mode !== "edit" || !view.polygons) return;
  const r = 4.5 / u;
  view.polygons.forEach((part, pi) => {
    [part.exterior].concat(part.holes || []).forEach((ring, ri) => {
      ring.forEach((p, vi) => {
        const c = el("circle", { class: "ds-handle", cx: p[0], cy: p[1], r: r, "stroke-width": 1.5 / u }, handleG);
        c.dataset.ref = pi + "," + ri + "," + vi;
      });
    });
  });
}

function ringOf(ref) {
  const [pi, ri] = ref;
  const part = view.polygons[pi];
  return ri === 0 ? part.exterior : part.holes[ri - 1];
}

// Everything drawn in image units whose screen size must stay constant (redrawn on zoom).
function drawOverlay() {
  if (!view.image) return;
  const u = pxPerUnit();
  maskPath.setAttribute("stroke-width", 2 / u);
  drawLesions(u);
  drawPrompts(u);
  drawRuler(u);
  drawAxes(u);
  drawHandles(u);
  brushCursor.setAttribute("r", brushRadius(u));
  brushCursor.setAttribute("stroke-width", 1.5 / u);
}

function draw() {
  if (!view.image) {
    svg.style.display = "none";
    empty.style.display = "";
    setStatus(view.message || "");
    return;
  }
  empty.style.display = "none";
  svg.style.display = "";
  const { src, width, height } = view.image;
  if (img.getAttribute("href") !== src) {
    img.setAttribute("href", src);
    zoom = null; // a new image opens fitted
    for (const im of [img, heat]) {
      im.setAttribute("width", width);
      im.setAttribute("height", height);
    }
  }
  applyZoom();
  if (view.heatmap) heat.setAttribute("href", view.heatmap);
  heat.style.display = view.heatmap ? "" : "none";
  maskPath.setAttribute("d", ringsPath(view.polygons || []));
  if (strokeSeq && view.ack >= strokeSeq) {
    strokeSeq = 0;
    strokePath.setAttribute("d", "");
  }
  drawOverlay();
  setStatus(view.message || "");
  root.dataset.ack = String(view.ack);
  if (view.axes || !(view.polygons || []).length) root.dataset.measured = String(view.ack);
}

// ---- opening an image: a progress bar over the stage when the answer takes a moment (a cold open runs
// the encoder for ~1-2 s). The page calls window.__dsOpening() when an open starts; any view from the
// server ends it.
let openTimer = null;
function opening() {
  clearTimeout(openTimer);
  openTimer = setTimeout(() => {
    loading.hidden = false; // a warm open (~50 ms) does not flash
    openTimer = setTimeout(opened, 180000); // should the answer never come (a lost connection)
  }, 150);
}
function opened() {
  clearTimeout(openTimer);
  openTimer = null;
  loading.hidden = true;
}
window.__dsOpening = opening;

function onView() {
  let v;
  try {
    v = JSON.parse(props.value);
  } catch (e) {
    return;
  }
  if (v && v.kind === "view") opened();
  accept(v);
}

// Draw a view from the server unless a newer one of the same session is drawn already (answers arrive by
// two paths; a restarted server starts a new session, whose views all count). A preview (a click's answer
// on the image alone, `InteractiveSession.preview`) is drawn; the final view of the same gesture follows.
function accept(v, preview = false) {
  if (!v || v.kind !== "view" || (v.channel === view.channel && v.ack < view.ack)) return;
  view = v;
  if (drag) {
    deferred = true;
    return;
  }
  draw();
  if (pending && v.ack >= pending.seq) {
    const p = pending;
    if (preview) {
      requestAnimationFrame(() => (p.shown = p.shown || performance.now() - p.t0));
      return;
    }
    pending = null;
    root.classList.remove("ds-busy");
    requestAnimationFrame(() => {
      const t = performance.now() - p.t0;
      window.__dsLatencies.push(t); // gesture sent -> its answer drawn
      window.__dsFirstDrawn.push(p.shown || t); // ... -> its first outline (a preview) drawn
      root.dataset.rendered = String(v.ack);
    });
  }
}

// ---- pointer gestures

function panning(evt) {
  return evt.button === 1 || (evt.button === 0 && spaceHeld);
}

svg.addEventListener("pointerdown", (evt) => {
  if (!view.image) return;
  if (evt.pointerType === "touch") {
    touches.set(evt.pointerId, [evt.clientX, evt.clientY]);
    if (touches.size === 2) {
      // a second finger: pinch and pan; whatever the first finger started is dropped
      drag && drag.kind === "paint" && strokePath.setAttribute("d", "");
      dragRect.setAttribute("visibility", "hidden");
      const [a, b] = [...touches.values()];
      const z = current();
      const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2];
      drag = { kind: "pinch", z0: z, d0: Math.hypot(a[0] - b[0], a[1] - b[1]) || 1, p0: imageAt(z, mid[0], mid[1]) };
      svg.setPointerCapture(evt.pointerId);
      evt.preventDefault();
      return;
    }
  }
  if (panning(evt)) {
    drag = { kind: "pan", start: [evt.clientX, evt.clientY], z0: current() };
    root.classList.add("ds-dragging");
    svg.setPointerCapture(evt.pointerId);
    evt.preventDefault();
    return;
  }
  if (evt.button !== 0) return;
  const p = toImage(evt);
  const t = evt.target;
  if (mode === "edit" && t.classList.contains("ds-handle")) {
    const ref = t.dataset.ref.split(",").map(Number);
    if (evt.shiftKey) {
      const ring = ringOf(ref);
      if (ring.length <= 3) {
        setStatus("a ring needs at least 3 vertices");
        return;
      }
      ring.splice(ref[2], 1);
      send({ type: "edit", polygons: view.polygons });
      draw();
      return;
    }
    drag = vertexDrag(ref, evt.altKey, p);
    svg.setPointerCapture(evt.pointerId);
    evt.preventDefault();
    return;
  }
  if (mode === "brush" || mode === "erase") {
    const r = brushRadius();
    if (!inside(p, r)) return;
    const erase = mode === "erase" || evt.altKey;
    drag = { kind: "paint", points: [p], r: r, erase: erase };
    strokePath.classList.toggle("ds-erasing", erase);
    strokePath.setAttribute("stroke-width", 2 * r);
    drawStroke(drag.points);
    svg.setPointerCapture(evt.pointerId);
    evt.preventDefault();
    return;
  }
  if (!inside(p)) return;
  if (mode === "box") {
    drag = { kind: "box", start: p, screen: [evt.clientX, evt.clientY], alt: evt.altKey || evt.shiftKey };
    svg.setPointerCapture(evt.pointerId);
    evt.preventDefault();
  }
});

// A vertex drag moves its neighbours along the ring too, less the farther they are (a raised cosine over
// FALLOFF_PX screen px of outline on each side), so a dense traced outline bends instead of spiking.
// On a sparse outline, or with Alt held, only the vertex moves.
const FALLOFF_PX = 36;
function vertexDrag(ref, alone, grab) {
  const ring = ringOf(ref);
  const i = ref[2];
  const n = ring.length;
  const reach = alone ? 0 : FALLOFF_PX / pxPerUnit();
  const moved = [[i, 1]];
  for (const dir of [1, -1]) {
    let dist = 0;
    for (let k = 1; k < n / 2; k++) {
      const a = ring[(i + dir * (k - 1) + n) % n], b = ring[(i + dir * k + n) % n];
      dist += Math.hypot(b[0] - a[0], b[1] - a[1]);
      if (dist >= reach) break;
      moved.push([(i + dir * k + n) % n, 0.5 * (1 + Math.cos((Math.PI * dist) / reach))]);
    }
  }
  const handles = new Map([...handleG.children].map((c) => [c.dataset.ref, c]));
  return {
    kind: "vertex",
    polygons: view.polygons, // what the drag edits, even should a newer view arrive meanwhile
    ring: ring,
    grab: grab, // the pointer moves the vertex by its own motion (no jump to the pointer on grabbing)
    moved: moved.map(([j, w]) => ({ j: j, w: w, at: ring[j].slice(), handle: handles.get(ref[0] + "," + ref[1] + "," + j) })),
    changed: false,
  };
}

function drawStroke(points) {
  strokePath.setAttribute("d", "M" + points.map((q) => q[0] + " " + q[1]).join("L") + (points.length === 1 ? "Z" : ""));
}

svg.addEventListener("pointermove", (evt) => {
  if (evt.pointerType === "touch" && touches.has(evt.pointerId)) touches.set(evt.pointerId, [evt.clientX, evt.clientY]);
  if ((mode === "brush" || mode === "erase") && view.image && !spaceHeld) {
    const p = toImage(evt);
    brushCursor.setAttribute("cx", p[0]);
    brushCursor.setAttribute("cy", p[1]);
    brushCursor.setAttribute("visibility", "visible");
  }
  if (!drag) return;
  if (drag.kind === "pinch") {
    if (touches.size < 2) return;
    const [a, b] = [...touches.values()];
    const s = drag.z0.s * (Math.hypot(a[0] - b[0], a[1] - b[1]) / drag.d0);
    const r = stage.getBoundingClientRect();
    const [ew, eh] = stageSize();
    const mid = [(a[0] + b[0]) / 2 - r.left - ew / 2, (a[1] + b[1]) / 2 - r.top - eh / 2];
    setZoom({ cx: drag.p0[0] - mid[0] / s, cy: drag.p0[1] - mid[1] / s, s: s });
    return;
  }
  if (drag.kind === "pan") {
    const z = drag.z0;
    setZoom({ cx: z.cx - (evt.clientX - drag.start[0]) / z.s, cy: z.cy - (evt.clientY - drag.start[1]) / z.s, s: z.s });
    return;
  }
  const p = toImage(evt);
  if (drag.kind === "box") {
    const [x0, y0] = drag.start;
    dragRect.setAttribute("x", Math.min(x0, p[0]));
    dragRect.setAttribute("y", Math.min(y0, p[1]));
    dragRect.setAttribute("width", Math.abs(p[0] - x0));
    dragRect.setAttribute("height", Math.abs(p[1] - y0));
    dragRect.setAttribute("stroke-width", 2 / pxPerUnit());
    dragRect.setAttribute("visibility", "visible");
  } else if (drag.kind === "paint") {
    const last = drag.points[drag.points.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) >= Math.max(drag.r / 2, 0.5)) {
      drag.points.push(p);
      drawStroke(drag.points);
    }
  } else if (drag.kind === "vertex") {
    const w = view.image.width, h = view.image.height;
    const dx = p[0] - drag.grab[0], dy = p[1] - drag.grab[1];
    for (const m of drag.moved) {
      const q = [round2(Math.min(Math.max(m.at[0] + m.w * dx, 0), w)), round2(Math.min(Math.max(m.at[1] + m.w * dy, 0), h))];
      drag.ring[m.j] = q;
      if (m.handle) {
        m.handle.setAttribute("cx", q[0]);
        m.handle.setAttribute("cy", q[1]);
      }
    }
    maskPath.setAttribute("d", ringsPath(drag.polygons));
    drag.changed = true;
  }
});

function endDrag(evt) {
  if (evt.pointerType === "touch") touches.delete(evt.pointerId);
  if (!drag) return;
  if (drag.kind === "pinch" && touches.size > 0) return; // until the last finger lifts
  const d = drag;
  drag = null;
  root.classList.remove("ds-dragging");
  dragRect.setAttribute("visibility", "hidden");
  if (d.kind === "box") {
    const p = toImage(evt);
    const small = Math.hypot(evt.clientX - d.screen[0], evt.clientY - d.screen[1]) < 5;
    if (small) {
      send({ type: "click", x: round2(d.start[0]), y: round2(d.start[1]), positive: !d.alt });
    } else {
      const w = view.image.width, h = view.image.height;
      const x0 = Math.max(0, Math.min(d.start[0], p[0])), x1 = Math.min(w, Math.max(d.start[0], p[0]));
      const y0 = Math.max(0, Math.min(d.start[1], p[1])), y1 = Math.min(h, Math.max(d.start[1], p[1]));
      send({ type: "box", box: [round2(x0), round2(y0), round2(x1), round2(y1)] });
    }
  } else if (d.kind === "vertex" && d.changed) {
    send({ type: "edit", polygons: d.polygons });
  } else if (d.kind === "paint") {
    const p = toImage(evt);
    const last = d.points[d.points.length - 1];
    if (Math.hypot(p[0] - last[0], p[1] - last[1]) > 0.25) d.points.push(p);
    drawStroke(d.points);
    const points = d.points.map((q) => [round2(q[0]), round2(q[1])]);
    strokeSeq = send({ type: "paint", points: points, radius: round2(d.r), erase: d.erase });
  }
  if (deferred) {
    deferred = false;
    draw();
  }
}
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);
svg.addEventListener("auxclick", (evt) => evt.button === 1 && evt.preventDefault()); // no middle-click paste/scroll
svg.addEventListener("mousedown", (evt) => evt.button === 1 && evt.preventDefault()); // no autoscroll

svg.addEventListener("click", (evt) => {
  if (!view.image || spaceHeld || evt.button !== 0) return;
  if (mode === "select") {
    const t = evt.target.closest && evt.target.closest(".ds-lesion");
    if (t) send({ type: "select", annotation_id: Number(t.dataset.id) });
    return;
  }
  if (mode !== "pos" && mode !== "neg" && mode !== "ruler") return;
  const p = toImage(evt);
  if (!inside(p)) return;
  if (mode === "ruler") {
    send({ type: "ruler", x: round2(p[0]), y: round2(p[1]) });
    return;
  }
  const modifier = evt.altKey || evt.shiftKey;
  const positive = (mode === "pos") !== modifier;
  send({ type: "click", x: round2(p[0]), y: round2(p[1]), positive: positive });
});

// Insert a vertex: double-click near an edge of the outline in edit mode.
svg.addEventListener("dblclick", (evt) => {
  if (mode !== "edit" || !view.polygons || !view.polygons.length) return;
  const p = toImage(evt);
  let best = null;
  view.polygons.forEach((part, pi) => {
    [part.exterior].concat(part.holes || []).forEach((ring, ri) => {
      for (let i = 0; i < ring.length; i++) {
        const a = ring[i], b = ring[(i + 1) % ring.length];
        const dx = b[0] - a[0], dy = b[1] - a[1];
        const len2 = dx * dx + dy * dy || 1;
        const t = Math.max(0, Math.min(1, ((p[0] - a[0]) * dx + (p[1] - a[1]) * dy) / len2));
        const q = [a[0] + t * dx, a[1] + t * dy];
        const dist = Math.hypot(p[0] - q[0], p[1] - q[1]);
        if (!best || dist < best.dist) best = { dist: dist, ring: ring, at: i + 1, q: [round2(q[0]), round2(q[1])] };
      }
    });
  });
  if (!best || best.dist * pxPerUnit() > 12) return;
  best.ring.splice(best.at, 0, best.q);
  send({ type: "edit", polygons: view.polygons });
  draw();
});

for (const b of element.querySelectorAll(".ds-toolbar button[data-mode]")) b.addEventListener("click", () => setMode(b.dataset.mode));
element.querySelector("[data-view=fit]").addEventListener("click", () => view.image && fit());
element.querySelector("[data-view=one]").addEventListener("click", () => view.image && oneToOne());

// ---- keyboard shortcuts (ignored while typing in a field); the canvas's own through window.__dsCanvas
function canvasKey(evt, k) {
  const modes = { v: "select", b: "box", c: "pos", x: "neg", e: "edit", r: "ruler" };
  if (k === "d") setMode(evt.shiftKey ? "erase" : "brush");
  else if (k in modes) setMode(modes[k]);
  else if (k === "[" || k === "]") setBrushSize(Number(sizeIn.value) * (k === "]" ? 1.25 : 0.8));
  else if (k === "o") setFill(Number(fillIn.value) > 0 ? 0 : lastFill);
  else if (!view.image) return false;
  else if (k === "f" || k === "0") fit();
  else if (k === "1") oneToOne();
  else if (k === "+" || k === "=" || k === "-") zoomAt([current().cx, current().cy], k === "-" ? 0.8 : 1.25);
  else return false;
  return true;
}
window.__dsCanvas = {
  key: canvasKey,
  space: (down) => {
    if (down && !hover) return false; // Space pans only over the image (elsewhere it presses buttons)
    spaceHeld = down;
    root.classList.toggle("ds-panning", down);
    if (down) brushCursor.setAttribute("visibility", "hidden");
    return true;
  },
  setMode: setMode,
  zoom: () => current(),
  setZoom: (z) => setZoom(z),
  fit: fit,
  opening: opening,
};
window.__dsSetMode = setMode;
if (!window.__dsKeys) {
  window.__dsKeys = true;
  const clickId = (id) => {
    const b = document.querySelector("#" + id + " button, button#" + id);
    if (b) b.click();
  };
  const typing = (t) => t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable);
  document.addEventListener("keydown", (evt) => {
    const t = evt.target;
    const slider = t && t.type === "range" && t.closest(".ds-canvas"); // the canvas's sliders keep their keys
    if (slider ? /^(Arrow|Page|Home|End)/.test(evt.key) : typing(t)) return;
    const c = window.__dsCanvas;
    if (evt.key === " ") {
      if (c && c.space(true)) evt.preventDefault();
      return;
    }
    const k = evt.key.toLowerCase();
    const ctrl = evt.ctrlKey || evt.metaKey;
    if (ctrl && k === "z") clickId(evt.shiftKey ? "ds-redo" : "ds-undo");
    else if (ctrl && k === "y") clickId("ds-redo");
    else if (ctrl || evt.altKey) return;
    else if (c && c.key(evt, k)) {
      /* a canvas tool, zoom or size */
    } else if (k === "arrowright" || k === "n" || k === "pagedown") clickId("ds-next");
    else if (k === "arrowleft" || k === "p" || k === "pageup") clickId("ds-prev");
    else if (k === "a") clickId("ds-accept");
    else if (k === "escape") clickId("ds-clear");
    else return;
    evt.preventDefault();
  });
  document.addEventListener("keyup", (evt) => {
    if (evt.key !== " " || !window.__dsCanvas) return;
    const held = document.querySelector(".ds-canvas.ds-panning");
    window.__dsCanvas.space(false);
    if (held) evt.preventDefault(); // the Space that panned does not also press a focused button
  });
}

setFill(pref("fillOpacity", 25));
setBrushSize(pref("brushSize", 24));
new ResizeObserver(() => view.image && (applyZoom(), drawOverlay())).observe(stage);
watch("value", onView);
setMode("box");
onView();
if (!view.image) opening(); // the page's first open is on its way
