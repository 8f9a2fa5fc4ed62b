// Engram live page: WebSocket /ws updates, frames from /api/frame.jpg, questions to
// /api/ask, the map from /api/map. No external libraries.
"use strict";

const $ = (sel) => document.querySelector(sel);
const ui = {
  frameSeq: 0,        // seq of the frame on the canvas
  wantedSeq: 0,       // newest seq announced by the server
  loading: false,     // a frame request is in flight
  frame: null,        // frame info of the newest update
  detections: null,   // latest percept's objects
  image: new Image(),
  mapVersion: -1,
  mapFetchedAt: 0,
  mapLoading: false,
  transcriptCount: 0,
  timelineCount: 0,
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function fmtTime(tMs) {
  if (!tMs) return "";
  const d = new Date(tMs);
  return d.toLocaleTimeString([], { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0").slice(0, 1);
}

function fmtPos(p) {
  return p ? `(${p.map((v) => v.toFixed(2)).join(", ")}) m` : "";
}

// ---- connection ---------------------------------------------------------------
function connect() {
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  ws.onopen = () => setConn(true);
  ws.onmessage = (ev) => {
    try { onUpdate(JSON.parse(ev.data)); } catch (err) { console.error(err); }
  };
  ws.onclose = () => { setConn(false); setTimeout(connect, 1000); };
  ws.onerror = () => ws.close();
}

function setConn(ok) {
  const c = $("#conn");
  c.dataset.ok = String(ok);
  c.textContent = ok ? "live" : "reconnecting…";
}

function onUpdate(u) {
  if (u.type !== "update") return;
  if (u.detections) ui.detections = u.detections;
  if (u.frame) {
    ui.frame = u.frame;
    ui.wantedSeq = u.frame.seq;
    loadFrame();
  }
  renderDetections();
  if (u.transcript && u.transcript.length) addTranscript(u.transcript);
  if (u.events && u.events.length) addEvents(u.events);
  if (u.stats) renderStats(u.stats);
  if (u.health) renderHealth(u.health);
  if (u.map_version !== ui.mapVersion) maybeFetchMap(u.map_version);
}

// ---- video with detections ----------------------------------------------------
function loadFrame() {
  if (ui.loading || ui.wantedSeq === ui.frameSeq) return;
  ui.loading = true;
  const seq = ui.wantedSeq;
  ui.image.onload = () => {
    ui.loading = false;
    ui.frameSeq = seq;
    drawFrame();
    loadFrame();
  };
  ui.image.onerror = () => { ui.loading = false; setTimeout(loadFrame, 200); };
  ui.image.src = `/api/frame.jpg?seq=${seq}`;
}

function drawFrame() {
  // The canvas has the resolution it is shown at (crisp labels whatever the frame size);
  // the frame is scaled into it and the boxes with it.
  const canvas = $("#video");
  const img = ui.image;
  const dpr = window.devicePixelRatio || 1;
  const W = Math.max(1, Math.round(canvas.clientWidth * dpr));
  const H = Math.max(1, Math.round((W * img.naturalHeight) / Math.max(1, img.naturalWidth)));
  if (canvas.width !== W || canvas.height !== H) {
    canvas.width = W;
    canvas.height = H;
  }
  const ctx = canvas.getContext("2d");
  ctx.imageSmoothingEnabled = true;
  ctx.drawImage(img, 0, 0, W, H);
  const s = W / Math.max(1, img.naturalWidth);
  const det = ui.detections;
  if (det && det.objects) {
    ctx.lineWidth = 2 * dpr;
    ctx.font = `${Math.round(12 * dpr)}px system-ui, sans-serif`;
    det.objects.forEach((o) => {
      const [x0, y0, x1, y1] = o.box.map((v) => v * s);
      const colour = `hsl(${(o.id * 137.5) % 360}, 85%, 60%)`;
      ctx.strokeStyle = colour;
      ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
      const label = `${o.label} ${(o.confidence * 100).toFixed(0)}%`;
      const w = ctx.measureText(label).width + 8 * dpr;
      const h = Math.round(17 * dpr);
      const ty = y0 >= h ? y0 - h : y0;
      ctx.fillStyle = colour;
      ctx.fillRect(x0, ty, w, h);
      ctx.fillStyle = "#000";
      ctx.fillText(label, x0 + 4 * dpr, ty + h - 5 * dpr);
    });
  }
  canvas.dataset.seq = String(ui.frameSeq);
  canvas.dataset.frameWidth = String(img.naturalWidth);
  canvas.dataset.frameHeight = String(img.naturalHeight);
  $("#no-video").style.display = "none";
  const f = ui.frame;
  const boxes = det ? ` · boxes of frame ${det.frame_seq}` : "";
  if (f) $("#frame-info").textContent = `${f.camera} · ${f.width}×${f.height} · frame ${ui.frameSeq}${boxes}`;
}

function renderDetections() {
  const box = $("#detections");
  const det = ui.detections;
  const objs = det && det.objects ? det.objects : [];
  const key = objs.map((o) => `${o.id}:${o.label}`).join(",") + (det ? det.frame_seq : "");
  if (box.dataset.key === key) return;
  box.dataset.key = key;
  box.replaceChildren(...objs.map((o) => el("span", { class: "chip", text: `${o.label} · ${(o.confidence * 100).toFixed(0)}%` })));
}

// ---- transcript and timeline --------------------------------------------------
function addTranscript(entries) {
  const list = $("#transcript");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  for (const e of entries) {
    list.append(el("li", { class: "entry", "data-id": e.id },
      el("span", { class: "t", text: fmtTime(e.t_ms) }),
      el("span", { class: "text", text: e.text, title: e.text })));
    ui.transcriptCount += 1;
  }
  while (list.children.length > 200) list.firstChild.remove();
  list.scrollTop = list.scrollHeight;
  $("#transcript-count").textContent = `${ui.transcriptCount} utterance${ui.transcriptCount === 1 ? "" : "s"}`;
}

function addEvents(events) {
  const list = $("#timeline");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  for (const e of events) {
    let icon, text;
    if (e.kind === "keyframe") {
      icon = e.thumb ? el("img", { src: e.thumb, alt: "keyframe" }) : el("span", { class: "icon", text: "frame" });
      text = e.labels && e.labels.length ? `saw ${e.labels.slice(0, 4).join(", ")}` : "keyframe";
    } else if (e.kind === "transcript") {
      icon = el("span", { class: "icon", text: "speech" });
      text = `“${e.text}”`;
    } else {
      icon = el("span", { class: "icon", text: "sound" });
      text = `${e.label} (${e.duration_s} s, ${e.peak_hz} Hz)`;
    }
    list.prepend(el("li", { class: `event ${e.kind}`, "data-id": e.id }, icon,
      el("div", { class: "body" }, el("div", { class: "text", text, title: text }), el("div", { class: "meta", text: fmtTime(e.t_ms) + (e.position ? " · " + fmtPos(e.position) : "") }))));
    ui.timelineCount += 1;
  }
  while (list.children.length > 300) list.lastChild.remove();
}

// ---- stats and health ---------------------------------------------------------
function renderStats(s) {
  $("#camera-fps").textContent = s.camera_fps != null ? Number(s.camera_fps).toFixed(1) : "–";
  $("#percept-fps").textContent = Number(s.percept_fps).toFixed(1);
  const lat = s.percept_latency_ms || {};
  $("#latency").textContent = lat.p50 != null ? `${Math.round(lat.p50)} / ${Math.round(lat.p95)}` : "–";
  $("#drops").textContent = s.dropped;
  $("#errors").textContent = s.errors;
  $("#memories").textContent = s.keyframes + s.transcripts + s.sound_events;
  const warning = $("#model-warning");  // random weights: say the labels mean nothing
  warning.hidden = !s.model_warning;
  warning.textContent = s.model_warning || "";
  $("#mic-button").hidden = !s.browser_mic;  // engram live --mic browser
}

function latencyText(lat) {
  const parts = [];
  for (const [k, v] of Object.entries(lat)) {
    if (k.endsWith("_p50")) {
      const stage = k.slice(0, -4);
      const p95 = lat[`${stage}_p95`];
      parts.push(`${stage} ${v.toFixed(1)}${p95 != null ? " / " + p95.toFixed(1) : ""}`);
    } else if (!k.endsWith("_p95")) {
      parts.push(`${k} ${Number(v).toFixed(1)}`);
    }
  }
  return parts.join(" · ");
}

function renderHealth(rows) {
  const body = $("#health tbody");
  body.replaceChildren(...rows.map((r) => {
    const stale = r.age_s > 5;
    const state = stale ? "stale" : r.state;
    const fps = r.info && r.info.fps != null ? ` · ${r.info.fps} fps` : "";
    return el("tr", { "data-node": r.node },
      el("td", { text: r.node + fps }),
      el("td", { class: `state-${state}`, text: state }),
      el("td", { text: r.received }),
      el("td", { text: r.published }),
      el("td", { text: r.dropped }),
      el("td", { text: r.errors }),
      el("td", { class: "lat", text: latencyText(r.latency_ms) || "–" }));
  }));
}

// ---- questions ----------------------------------------------------------------
async function ask(ev) {
  ev.preventDefault();
  const q = $("#question").value.trim();
  if (!q) return;
  const status = $("#answer-status");
  const button = $("#ask-button");
  button.disabled = true;
  status.className = "";
  status.textContent = "asking the memory…";
  try {
    const res = await fetch(`/api/ask?q=${encodeURIComponent(q)}`);
    const answer = await res.json();
    renderAnswer(answer);
    ui.mapFetchedAt = 0;
  } catch (err) {
    status.className = "error";
    status.textContent = `request failed: ${err}`;
  } finally {
    button.disabled = false;
  }
}

function renderAnswer(a) {
  const status = $("#answer-status");
  const list = $("#answers");
  const said = $("#answer-text");
  const ans = a.answer;  // the memory's answer first, its evidence below
  said.hidden = !ans;
  if (ans) {
    said.className = ans.abstained ? "abstained" : "answered";
    said.textContent = ans.abstained ? (ans.text || "I have not seen that.") : ans.text;
    said.title = `confidence ${ans.confidence}`;
  }
  if (a.error) {
    status.className = "error";
    status.textContent = a.error;
  } else if (ans) {
    status.className = "";
    const n = ans.evidence.length;
    status.textContent = ans.abstained
      ? `no good match for “${a.question}” (${a.latency_ms} ms)`
      : `${n} piece${n === 1 ? "" : "s"} of evidence · confidence ${ans.confidence.toFixed(2)} · ${a.latency_ms} ms`;
  } else {
    status.className = "";
    status.textContent = `${a.hits.length} recall${a.hits.length === 1 ? "" : "s"} for “${a.question}” in ${a.latency_ms} ms`;
  }
  const shown = ans ? ans.evidence : a.hits;
  list.replaceChildren(...shown.map((h) => el("li", { class: "hit" },
    h.thumb ? el("img", { src: h.thumb, alt: "what was seen then" }) : el("div", { class: "nothumb" }),
    el("div", { class: "body" },
      el("div", { class: "text", text: h.text || "(no text)", title: h.text || "" }),
      el("div", { class: "meta" },
        el("span", { class: `tag ${h.memory}`, text: h.memory + (h.kind ? ` · ${h.kind}` : "") }),
        `${fmtTime(h.t_ms)}${h.position ? " · " + fmtPos(h.position) : ""} · score ${h.score.toFixed(3)}`)))));
}

// ---- map ----------------------------------------------------------------------
function maybeFetchMap(version) {
  const now = performance.now();
  if (ui.mapLoading || now - ui.mapFetchedAt < 1000) return;
  ui.mapLoading = true;
  ui.mapFetchedAt = now;
  fetch("/api/map").then((r) => r.json()).then((m) => {
    ui.mapVersion = version;
    drawMap(m);
  }).catch((err) => console.error(err)).finally(() => { ui.mapLoading = false; });
}

function drawMap(m) {
  const canvas = $("#map");
  const ctx = canvas.getContext("2d");
  const W = canvas.width, H = canvas.height;
  ctx.clearRect(0, 0, W, H);
  const pts = [];
  const cell = m.cell_m;
  m.cells.forEach(([ix, iy]) => pts.push([(ix + 0.5) * cell, (iy + 0.5) * cell]));
  m.trail.forEach((p) => pts.push(p));
  m.objects.forEach((o) => pts.push(o.position));
  m.places.forEach((p) => pts.push(p.position));
  m.recalled.forEach((r) => pts.push(r.position));
  if (m.camera) pts.push(m.camera);
  if (!pts.length) {
    ctx.fillStyle = "#8b95a5";
    ctx.font = "14px system-ui, sans-serif";
    ctx.fillText("the spatial memory is empty", 20, 30);
    return;
  }
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
  for (const [x, y] of pts) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  const span = Math.max(x1 - x0, y1 - y0, 4.0) * 1.15;
  const cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
  const scale = Math.min(W, H) / span;
  const px = (x) => W / 2 + (x - cx) * scale;
  const py = (y) => H / 2 - (y - cy) * scale;
  // 1 m grid
  ctx.strokeStyle = "#1e2430";
  ctx.lineWidth = 1;
  for (let gx = Math.floor(cx - span); gx <= cx + span; gx += 1) {
    ctx.beginPath(); ctx.moveTo(px(gx), 0); ctx.lineTo(px(gx), H); ctx.stroke();
  }
  for (let gy = Math.floor(cy - span); gy <= cy + span; gy += 1) {
    ctx.beginPath(); ctx.moveTo(0, py(gy)); ctx.lineTo(W, py(gy)); ctx.stroke();
  }
  // occupied cells
  ctx.fillStyle = "#59606d";
  const c = Math.max(1.5, cell * scale);
  m.cells.forEach(([ix, iy]) => ctx.fillRect(px(ix * cell), py((iy + 1) * cell), c, c));
  // camera trail
  if (m.trail.length) {
    ctx.strokeStyle = "#4cc38a";
    ctx.lineWidth = 2;
    ctx.beginPath();
    m.trail.forEach(([x, y], i) => (i ? ctx.lineTo(px(x), py(y)) : ctx.moveTo(px(x), py(y))));
    ctx.stroke();
  }
  // places graph
  ctx.strokeStyle = "#5aa9ff";
  ctx.lineWidth = 2;
  m.edges.forEach(([a, b]) => {
    const pa = m.places[a].position, pb = m.places[b].position;
    ctx.beginPath(); ctx.moveTo(px(pa[0]), py(pa[1])); ctx.lineTo(px(pb[0]), py(pb[1])); ctx.stroke();
  });
  ctx.font = "11px system-ui, sans-serif";
  m.places.forEach((p) => {
    ctx.fillStyle = "#5aa9ff";
    ctx.beginPath(); ctx.arc(px(p.position[0]), py(p.position[1]), 7, 0, 2 * Math.PI); ctx.fill();
    ctx.fillStyle = "#cfe4ff";
    ctx.fillText(`place ${p.id}`, px(p.position[0]) + 9, py(p.position[1]) + 14);
  });
  // objects (labels stacked when they share a spot)
  const stacks = new Map();
  m.objects.forEach((o) => {
    const x = px(o.position[0]), y = py(o.position[1]);
    const key = `${Math.round(x / 6)},${Math.round(y / 6)}`;
    const n = stacks.get(key) || 0;
    stacks.set(key, n + 1);
    ctx.fillStyle = o.present === false ? "#8b6a4a" : "#ff9f43";
    ctx.beginPath(); ctx.arc(x, y, 4, 0, 2 * Math.PI); ctx.fill();
    if (n < 6) ctx.fillText(o.label || `object ${o.id}`, x + 7, y - 6 - 12 * n);
  });
  // recalled positions
  ctx.strokeStyle = "#ffd43b";
  ctx.lineWidth = 2;
  m.recalled.forEach((r) => {
    ctx.beginPath(); ctx.arc(px(r.position[0]), py(r.position[1]), 11, 0, 2 * Math.PI); ctx.stroke();
  });
  // camera
  if (m.camera) {
    const x = px(m.camera[0]), y = py(m.camera[1]);
    ctx.fillStyle = "#4cc38a";
    ctx.beginPath(); ctx.moveTo(x + 9, y); ctx.lineTo(x - 6, y - 6); ctx.lineTo(x - 6, y + 6); ctx.closePath(); ctx.fill();
  }
  // scale bar
  ctx.fillStyle = "#8b95a5";
  ctx.fillRect(12, H - 14, scale, 2);
  ctx.fillText("1 m", 12, H - 18);
  $("#map-info").textContent = `${m.cells.length} cells · ${m.objects.length} objects (${m.objects_from}) · ${m.places.length} places · ${m.edges.length} edges` + (m.error ? ` · ${m.error}` : "") + (!m.cells.length && m.objects.length ? " · map is 2D-only (no depth: objects placed by direction)" : "");
  canvas.dataset.places = String(m.places.length);
  canvas.dataset.objects = String(m.objects.length);
}

// ---- microphone (engram live --mic browser) ---------------------------------------
// getUserMedia -> an AudioContext at 16 kHz (the browser resamples) -> an AudioWorklet
// that posts 100 ms blocks -> 16-bit PCM on /ws/audio (protocol: web/app.py's doc).
const mic = { ws: null, ctx: null, stream: null };

function setMic(state, why = "") {
  const b = $("#mic-button");
  b.dataset.state = state;
  b.textContent = { off: "🎤 talk", starting: "🎤 starting…", on: "🎤 listening · stop", error: "🎤 error" }[state];
  b.title = why || (state === "on" ? "streaming this browser's microphone; click to stop" : "talk to Engram: stream this browser's microphone to it");
}

async function startMic() {
  setMic("starting");
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
    mic.ctx = new AudioContext({ sampleRate: 16000 });
    await mic.ctx.audioWorklet.addModule("/static/mic-worklet.js");
    const node = new AudioWorkletNode(mic.ctx, "mic-blocks", { processorOptions: { blockSamples: 1600 } });
    const proto = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${proto}://${location.host}/ws/audio`);
    ws.binaryType = "arraybuffer";
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = () => reject(new Error("the audio socket did not open")); });
    ws.send(JSON.stringify({ type: "start", sample_rate_hz: mic.ctx.sampleRate }));
    ws.onclose = (ev) => { if (mic.ws === ws) { stopMic(); if (ev.code !== 1000) setMic("error", `the server closed the audio socket: ${ev.reason || ev.code}`); } };
    mic.ws = ws;
    node.port.onmessage = (ev) => {
      if (ws.readyState !== WebSocket.OPEN) return;
      const f = ev.data;
      const pcm = new Int16Array(f.length);
      for (let i = 0; i < f.length; i++) pcm[i] = Math.max(-32768, Math.min(32767, Math.round(f[i] * 32767)));
      ws.send(pcm.buffer);
      $("#mic-button").dataset.sent = String(Number($("#mic-button").dataset.sent || 0) + 1);
    };
    mic.ctx.createMediaStreamSource(mic.stream).connect(node);
    await mic.ctx.resume();
    setMic("on");
  } catch (err) {
    stopMic();
    setMic("error", `microphone: ${err.message || err}`);
    console.error(err);
  }
}

function stopMic() {
  const ws = mic.ws;
  mic.ws = null;
  if (ws && ws.readyState === WebSocket.OPEN) { ws.send(JSON.stringify({ type: "stop" })); ws.close(1000); }
  if (mic.ctx) mic.ctx.close();
  if (mic.stream) mic.stream.getTracks().forEach((t) => t.stop());
  mic.ctx = mic.stream = null;
  setMic("off");
}

$("#mic-button").addEventListener("click", () => (mic.ws || mic.ctx ? stopMic() : startMic()));
$("#ask-form").addEventListener("submit", ask);
connect();
