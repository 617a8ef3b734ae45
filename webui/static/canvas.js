// dermaseg canvas: the image with an SVG overlay, and the gestures that prompt and edit it.
// Runs as gr.HTML js_on_load: `element`, `props`, `trigger`, `watch` are given by Gradio.
// Coordinates are image pixels (x, y); the SVG viewBox is the image, so the overlay needs no scaling.
const NS = "http://www.w3.org/2000/svg";
const root = element.querySelector(".ds-canvas");
const stage = element.querySelector(".ds-stage");
const statusEl = element.querySelector(".ds-status");
const empty = element.querySelector(".ds-empty");
let view = { kind: "view", ack: 0 };
let mode = "box";
let seq = 0;
let pending = null; // {seq, t0}: the gesture whose answer we are timing
let drag = null; // current pointer interaction
let deferred = false; // a view arrived during a drag: draw it on release
window.__dsLatencies = window.__dsLatencies || [];

function el(tag, attrs, parent) {
  const e = document.createElementNS(NS, tag);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (parent) parent.appendChild(e);
  return e;
}

const svg = el("svg", { class: "ds-svg", preserveAspectRatio: "xMidYMid meet", viewBox: "0 0 1 1" });
const img = el("image", { class: "ds-img", x: 0, y: 0, preserveAspectRatio: "none" }, svg);
const heat = el("image", { class: "ds-heat", x: 0, y: 0, preserveAspectRatio: "none" }, svg);
const maskPath = el("path", { class: "ds-mask", "fill-rule": "evenodd", d: "" }, svg);
const axesG = el("g", { class: "ds-axes" }, svg);
const promptG = el("g", { class: "ds-prompts" }, svg);
const rulerG = el("g", { class: "ds-ruler" }, svg);
const handleG = el("g", { class: "ds-handles" }, svg);
const dragRect = el("rect", { class: "ds-dragbox", visibility: "hidden" }, svg);
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
function inside(p) {
  return view.image && p[0] >= 0 && p[1] >= 0 && p[0] <= view.image.width && p[1] <= view.image.height;
}
function round2(v) {
  return Math.round(v * 100) / 100;
}

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
}
function viaGradio(text) {
  props.value = text;
  trigger("gesture");
}
async function post(text, channel) {
  let v;
  try {
    const r = await fetch(new URL("dermaseg/gesture", document.baseURI), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: '{"channel":' + JSON.stringify(channel) + ',"gesture":' + text + "}",
    });
    if (!r.ok) throw new Error("HTTP " + r.status);
    v = await r.json();
  } catch (e) {
    viaGradio(text);
    return;
  }
  accept(v);
  trigger("measure");
}

function setMode(m) {
  mode = m;
  root.dataset.mode = m;
  for (const b of element.querySelectorAll(".ds-toolbar button")) b.classList.toggle("active", b.dataset.mode === m);
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

// The draw* helpers take u = screen px per image px; draw() reads it once, before its DOM writes, as
// each getScreenCTM() after a write forces the browser to lay the page out again.
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

function draw() {
  if (!view.image) {
    svg.style.display = "none";
    empty.style.display = "";
    statusEl.textContent = view.message || "";
    return;
  }
  empty.style.display = "none";
  svg.style.display = "";
  const { src, width, height } = view.image;
  if (img.getAttribute("href") !== src) {
    img.setAttribute("href", src);
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    for (const im of [img, heat]) {
      im.setAttribute("width", width);
      im.setAttribute("height", height);
    }
  }
  const u = pxPerUnit();
  if (view.heatmap) heat.setAttribute("href", view.heatmap);
  heat.style.display = view.heatmap ? "" : "none";
  maskPath.setAttribute("d", ringsPath(view.polygons || []));
  maskPath.setAttribute("stroke-width", 2 / u);
  drawPrompts(u);
  drawRuler(u);
  drawAxes(u);
  drawHandles(u);
  statusEl.textContent = view.message || "";
  root.dataset.ack = String(view.ack);
  if (view.axes || !(view.polygons || []).length) root.dataset.measured = String(view.ack);
}

function onView() {
  let v;
  try {
    v = JSON.parse(props.value);
  } catch (e) {
    return;
  }
  accept(v);
}

// Draw a view from the server unless a newer one of the same session is drawn already (answers arrive by
// two paths; a restarted server starts a new session, whose views all count).
function accept(v) {
  if (!v || v.kind !== "view" || (v.channel === view.channel && v.ack < view.ack)) return;
  view = v;
  if (drag) {
    deferred = true;
    return;
  }
  draw();
  if (pending && v.ack >= pending.seq) {
    const p = pending;
    pending = null;
    root.classList.remove("ds-busy");
    requestAnimationFrame(() => {
      window.__dsLatencies.push(performance.now() - p.t0);
      root.dataset.rendered = String(v.ack);
    });
  }
}

// ---- pointer gestures

svg.addEventListener("pointerdown", (evt) => {
  if (evt.button !== 0 || !view.image) return;
  const p = toImage(evt);
  const t = evt.target;
  if (mode === "edit" && t.classList.contains("ds-handle")) {
    const ref = t.dataset.ref.split(",").map(Number);
    if (evt.shiftKey) {
      const ring = ringOf(ref);
      if (ring.length <= 3) {
        statusEl.textContent = "a ring needs at least 3 vertices";
        return;
      }
      ring.splice(ref[2], 1);
      send({ type: "edit", polygons: view.polygons });
      draw();
      return;
    }
    drag = { kind: "vertex", ref: ref, handle: t, moved: false };
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

svg.addEventListener("pointermove", (evt) => {
  if (!drag) return;
  const p = toImage(evt);
  if (drag.kind === "box") {
    const [x0, y0] = drag.start;
    dragRect.setAttribute("x", Math.min(x0, p[0]));
    dragRect.setAttribute("y", Math.min(y0, p[1]));
    dragRect.setAttribute("width", Math.abs(p[0] - x0));
    dragRect.setAttribute("height", Math.abs(p[1] - y0));
    dragRect.setAttribute("stroke-width", 2 / pxPerUnit());
    dragRect.setAttribute("visibility", "visible");
  } else if (drag.kind === "vertex") {
    const w = view.image.width, h = view.image.height;
    const q = [round2(Math.min(Math.max(p[0], 0), w)), round2(Math.min(Math.max(p[1], 0), h))];
    const ring = ringOf(drag.ref);
    ring[drag.ref[2]] = q;
    drag.handle.setAttribute("cx", q[0]);
    drag.handle.setAttribute("cy", q[1]);
    maskPath.setAttribute("d", ringsPath(view.polygons));
    drag.moved = true;
  }
});

function endDrag(evt) {
  if (!drag) return;
  const d = drag;
  drag = null;
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
  } else if (d.kind === "vertex" && d.moved) {
    send({ type: "edit", polygons: view.polygons });
  }
  if (deferred) {
    deferred = false;
    draw();
  }
}
svg.addEventListener("pointerup", endDrag);
svg.addEventListener("pointercancel", endDrag);

svg.addEventListener("click", (evt) => {
  if (!view.image || (mode !== "pos" && mode !== "neg" && mode !== "ruler")) return;
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

for (const b of element.querySelectorAll(".ds-toolbar button")) b.addEventListener("click", () => setMode(b.dataset.mode));

// ---- keyboard shortcuts (ignored while typing in a field)
if (!window.__dsKeys) {
  window.__dsKeys = true;
  const clickId = (id) => {
    const b = document.querySelector("#" + id + " button, button#" + id);
    if (b) b.click();
  };
  document.addEventListener("keydown", (evt) => {
    const t = evt.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "TEXTAREA" || t.tagName === "SELECT" || t.isContentEditable)) return;
    const k = evt.key.toLowerCase();
    const ctrl = evt.ctrlKey || evt.metaKey;
    const modes = { b: "box", c: "pos", x: "neg", e: "edit", r: "ruler" };
    if (ctrl && k === "z") clickId(evt.shiftKey ? "ds-redo" : "ds-undo");
    else if (ctrl && k === "y") clickId("ds-redo");
    else if (ctrl || evt.altKey) return;
    else if (k in modes) window.__dsSetMode && window.__dsSetMode(modes[k]);
    else if (k === "arrowright" || k === "n" || k === "pagedown") clickId("ds-next");
    else if (k === "arrowleft" || k === "p" || k === "pageup") clickId("ds-prev");
    else if (k === "a") clickId("ds-accept");
    else if (k === "escape") clickId("ds-clear");
    else return;
    evt.preventDefault();
  });
}
window.__dsSetMode = setMode;

new ResizeObserver(() => view.image && draw()).observe(stage);
watch("value", onView);
setMode("box");
onView();
