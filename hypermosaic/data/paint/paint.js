// hypermosaic paint: semantic brushes on a 2D canvas; masks and palette go to the server over
// one WebSocket, frames come back on it (one binary message each: a JSON head, the JPEG).
"use strict";

const state = { painting: null, layers: [], selected: 0, erasing: false, photo: null,
                frames: 0, version: 0, pending: [], latencies: [], head: null, lastUrl: null,
                socket: null, started: performance.now() };
window.paintState = state;

const $ = (id) => document.getElementById(id);
const draw = $("draw");
const view = draw.getContext("2d");

function layerFromUrl(url, w, h) {
  const layer = document.createElement("canvas");
  layer.width = w; layer.height = h;
  const img = new Image();
  img.onload = () => {  // the server's masks are grey: turn grey into alpha
    const ctx = layer.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const data = ctx.getImageData(0, 0, w, h);
    for (let i = 0; i < data.data.length; i += 4) {
      data.data[i + 3] = data.data[i]; data.data[i] = data.data[i + 1] = data.data[i + 2] = 255;
    }
    ctx.putImageData(data, 0, 0);
    redraw();
  };
  img.src = url;
  return layer;
}

function tinted(layer, colour) {
  const t = document.createElement("canvas");
  t.width = layer.width; t.height = layer.height;
  const ctx = t.getContext("2d");
  ctx.drawImage(layer, 0, 0);
  ctx.globalCompositeOperation = "source-in";
  ctx.fillStyle = colour;
  ctx.fillRect(0, 0, t.width, t.height);
  return t;
}

function redraw() {
  const p = state.painting;
  view.globalAlpha = 1;
  view.fillStyle = "#fff";
  view.fillRect(0, 0, p.width, p.height);
  if (state.photo) view.drawImage(state.photo, 0, 0, p.width, p.height);
  view.globalAlpha = 0.6;
  state.layers.forEach((layer, i) => view.drawImage(tinted(layer, p.brushes[i].colour), 0, 0));
  view.globalAlpha = 1;
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
    state.pending.push(performance.now());
  }
}

function sendPalette() {
  const p = state.painting;
  send({ type: "palette", brushes: p.brushes.map((b) => ({ prompt: b.prompt, colour: b.colour,
         blur: b.blur, strength: b.strength, negative_prompt: b.negative_prompt || "" })),
         background: p.background, seed: p.seed });
}

function sendMask(index) {
  send({ type: "mask", index, png: state.layers[index].toDataURL("image/png") });
}

function renderPalette() {
  const box = $("palette");
  box.innerHTML = "";
  state.painting.brushes.forEach((b, i) => {
    const row = document.createElement("div");
    row.className = "entry" + (i === state.selected ? " selected" : "");
    row.dataset.index = i;
    row.innerHTML = `<input type="radio" name="pick"${i === state.selected ? " checked" : ""}>
      <input type="color" value="${b.colour}"><input type="text" class="prompt">
      <div class="knobs"><label>std <input type="number" class="blur" min="0" max="256"
      step="1" value="${b.blur}"></label><label>strength <input type="number" class="strength"
      min="0" step="0.1" value="${b.strength}"></label></div>`;
    row.querySelector(".prompt").value = b.prompt;
    row.querySelector("input[type=radio]").onchange = () => { state.selected = i; renderPalette(); };
    row.onclick = (e) => { if (e.target === row) { state.selected = i; renderPalette(); } };
    row.querySelector("input[type=color]").oninput = (e) => { b.colour = e.target.value; redraw(); };
    row.querySelector("input[type=color]").onchange = sendPalette;
    row.querySelector(".prompt").onchange = (e) => { b.prompt = e.target.value; sendPalette(); };
    row.querySelector(".blur").onchange = (e) => { b.blur = +e.target.value; sendPalette(); };
    row.querySelector(".strength").onchange = (e) => { b.strength = +e.target.value; sendPalette(); };
    box.appendChild(row);
  });
}

// Strokes: painted on the selected layer; its mask goes out while drawing (throttled) and
// when the stroke ends.
let last = null, timer = null;
function at(e) {
  const r = draw.getBoundingClientRect();
  return [(e.clientX - r.left) * draw.width / r.width, (e.clientY - r.top) * draw.height / r.height];
}
function stroke(from, to) {
  const ctx = state.layers[state.selected].getContext("2d");
  ctx.globalCompositeOperation = state.erasing ? "destination-out" : "source-over";
  ctx.strokeStyle = ctx.fillStyle = "#fff";
  ctx.lineWidth = +$("size").value * draw.width / draw.getBoundingClientRect().width;
  ctx.lineCap = "round";
  ctx.beginPath(); ctx.moveTo(...from); ctx.lineTo(...to); ctx.stroke();
  redraw();
  if (!timer) timer = setTimeout(() => { timer = null; sendMask(state.selected); }, 150);
}
draw.addEventListener("pointerdown", (e) => { last = at(e); stroke(last, last); draw.setPointerCapture(e.pointerId); });
draw.addEventListener("pointermove", (e) => { if (last) { const p = at(e); stroke(last, p); last = p; } });
draw.addEventListener("pointerup", () => { last = null; clearTimeout(timer); timer = null; sendMask(state.selected); });

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/paint`);
  socket.binaryType = "arraybuffer";
  state.socket = socket;
  socket.onmessage = (event) => {
    if (typeof event.data !== "string") {  // a frame: head length, JSON head, JPEG
      const n = new DataView(event.data).getUint32(0);
      state.head = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, n)));
      if (state.lastUrl) URL.revokeObjectURL(state.lastUrl);
      state.lastUrl = URL.createObjectURL(new Blob([new Uint8Array(event.data, 4 + n)],
                                                   { type: "image/jpeg" }));
      $("frame").src = state.lastUrl;
      state.frames += 1;
      const v = state.head ? state.head.version : 0;
      while (state.acks && state.acks.length && state.acks[0].version <= v) {
        state.latencies.push(performance.now() - state.acks.shift().sent);
      }
      status();
      return;
    }
    const message = JSON.parse(event.data);
    if (message.type === "ack") {
      state.version = message.version;
      (state.acks = state.acks || []).push({ version: message.version, sent: state.pending.shift() });
    } else if (message.type === "error") { state.pending.shift(); $("status").textContent = "error: " + message.message; }
  };
  socket.onclose = () => { $("status").textContent = "disconnected"; };
}

function status() {
  const s = (performance.now() - state.started) / 1000;
  const l = state.latencies.slice(-20).sort((a, b) => a - b);
  const p50 = l.length ? Math.round(l[Math.floor(l.length / 2)]) : "–";
  $("status").textContent = `frame ${state.head ? state.head.index : "–"} · ${state.frames} frames · ` +
    `${(state.frames / s).toFixed(1)} fps\nstroke → frame p50 ${p50} ms`;
}

$("add").onclick = () => {
  const p = state.painting;
  const colours = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4"];
  p.brushes.push({ prompt: "a new brush", colour: colours[p.brushes.length % colours.length], blur: 8, strength: 1 });
  const layer = document.createElement("canvas");
  layer.width = p.width; layer.height = p.height;
  state.layers.push(layer);
  state.selected = p.brushes.length - 1;
  renderPalette(); sendPalette();
};
$("background").onchange = (e) => { state.painting.background = e.target.value; sendPalette(); };
$("seed").onchange = (e) => { state.painting.seed = +e.target.value; sendPalette(); };
$("brush").onclick = () => { state.erasing = false; $("brush").className = "on"; $("eraser").className = ""; };
$("eraser").onclick = () => { state.erasing = true; $("eraser").className = "on"; $("brush").className = ""; };
$("photo").onchange = async (e) => {
  const file = e.target.files[0];
  if (!file) return;
  const answer = await fetch("/api/background", { method: "POST", body: file });
  const json = await answer.json();
  if (json.error) { $("status").textContent = "error: " + json.error; return; }
  const img = new Image(); img.onload = () => { state.photo = img; redraw(); }; img.src = json.photo;
};
$("export").onclick = async () => {
  const answer = await (await fetch("/api/export", { method: "POST" })).json();
  $("exported").textContent = `written: ${answer.path}`;
  state.exported = answer;
};

(async function start() {
  const p = await (await fetch("/api/painting")).json();
  state.painting = p;
  draw.width = p.width; draw.height = p.height;
  state.layers = p.brushes.map((b) => layerFromUrl(b.mask, p.width, p.height));
  if (p.photo) { const img = new Image(); img.onload = () => { state.photo = img; redraw(); }; img.src = p.photo; }
  $("background").value = p.background; $("seed").value = p.seed;
  renderPalette(); redraw(); connect();
})();
