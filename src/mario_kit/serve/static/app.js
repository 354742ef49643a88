// mario-kit serve: the page. Keys and gamepad -> JSON messages; binary frames -> canvas.
// A frame is [u32 header length][header JSON][deflate(frame XOR previous frame)] (see player.py).
"use strict";
const W = 256, H = 240;
const canvas = document.getElementById("screen"), ctx = canvas.getContext("2d");
const statusEl = document.getElementById("status"), nameEl = document.getElementById("name");
const hudEl = document.getElementById("hud"), bannerEl = document.getElementById("banner");
const KEYS = { ArrowRight: "right", ArrowLeft: "left", ArrowDown: "down", ArrowUp: "up", x: "A", X: "A", z: "B", Z: "B" };
const COMMANDS = { Enter: "start", p: "pause", P: "pause", Backspace: "discard", n: "next", N: "next", Escape: "quit" };
const params = new URLSearchParams(location.search);
nameEl.value = params.get("name") || localStorage.getItem("mario-kit-name") || "";
let ws = null, prev = new Uint8Array(W * H * 3), image = ctx.createImageData(W, H);
const held = new Set(), padHeld = new Set();
let chain = Promise.resolve(), lastSent = "", lastClock = null, latencies = [], bytes = 0, t0 = performance.now(), last = null, note = "";
let startOnHello = false, ended = false, savedHere = 0;  // one Enter after the name starts; what the end says

function connect() {
  const q = new URLSearchParams({ name: nameEl.value });
  if (params.get("token")) q.set("token", params.get("token"));
  ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws?${q}`);
  ws.binaryType = "arraybuffer";
  ws.onmessage = (e) => {  // in order: each frame is XORed onto the one before
    chain = chain.then(() => (typeof e.data === "string" ? onEvent(JSON.parse(e.data)) : onFrame(e.data)));
  };
  ws.onclose = (e) => {  // after a refusal or the session's end the page already says why
    if (!ended) statusEl.textContent = `disconnected (${e.code}${e.code === 1006 ? ": the server is gone or the network dropped" : ""}): reload the page to play again`;
  };
}

function send(msg) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(msg)); }

function sendKeys() {
  const all = [...new Set([...held, ...padHeld])].sort();
  const key = all.join(",");
  if (key !== lastSent) { lastSent = key; send({ t: "keys", held: all, c: performance.now() }); }
}

function onEvent(m) {
  if (m.t === "hello") {
    statusEl.textContent = `playing as ${m.player || "(no name)"} on ${m.level}: press Enter to start`;
    if (startOnHello) { startOnHello = false; send({ t: "cmd", cmd: "start" }); }
  } else if (m.t === "saved") { savedHere++; note = `saved ${m.file} (${m.steps} steps, ${m.end})`; statusEl.textContent = note; }
  else if (m.t === "discarded") note = "episode discarded";
  else if (m.t === "error") note = `server: ${m.msg}`;
  else if (m.t === "refused") { ended = true; statusEl.textContent = m.why; }
  else if (m.t === "bye") {
    ended = true;
    statusEl.textContent = `session ended: ${savedHere} episode${savedHere === 1 ? "" : "s"} saved${note && savedHere ? ` (last: ${note.slice(6)})` : ""}; reload the page to play again`;
  }
  window.marioKitEvents = (window.marioKitEvents || []).concat([m]);  // for tests
}

async function onFrame(buf) {
  bytes += buf.byteLength;
  const n = new DataView(buf).getUint32(0, true);
  const head = JSON.parse(new TextDecoder().decode(new Uint8Array(buf, 4, n)));
  const stream = new Blob([new Uint8Array(buf, 4 + n)]).stream().pipeThrough(new DecompressionStream("deflate"));
  const body = new Uint8Array(await new Response(stream).arrayBuffer());
  if (!head.key) for (let i = 0; i < body.length; i++) body[i] ^= prev[i];
  prev = body;
  for (let i = 0, j = 0; i < body.length; i += 3, j += 4) {
    image.data[j] = body[i]; image.data[j + 1] = body[i + 1]; image.data[j + 2] = body[i + 2]; image.data[j + 3] = 255;
  }
  ctx.putImageData(image, 0, 0);
  if (head.c !== null && head.c !== lastClock) {  // the first frame after a key change: keypress-to-frame latency
    lastClock = head.c;
    const ms = performance.now() - head.c;
    latencies.push(ms); latencies = latencies.slice(-50);
    (window.marioKitLatencies = window.marioKitLatencies || []).push(ms);  // for tests and bench/serve.py
  }
  if (head.rec !== (last && last.rec)) statusEl.textContent = head.rec ? "recording: P pause, Backspace discard, N next level, Esc quit" : "press Enter to start";
  last = head;
  overlay(head);
}

// The recording's state goes beside the picture, never over it (the game's own HUD is at its top).
function overlay(h) {
  const lat = latencies.length ? [...latencies].sort((a, b) => a - b)[latencies.length >> 1].toFixed(0) : "-";
  const secs = (performance.now() - t0) / 1000;
  hudEl.textContent = `${h.rec ? "\u25cf REC" : "\u25cb ---"}  episode ${h.ep}  step ${h.step}  saved ${h.saved}  |  ${h.act}  ` +
    `${h.fps.toFixed(1)} fps  ${lat} ms  ${(bytes / secs / 1024).toFixed(0)} KB/s`;
  hudEl.className = h.rec ? "rec" : "";
  bannerEl.textContent = h.banner || note || h.msg || "";
  window.marioKitLast = h;  // for tests
}

window.addEventListener("keydown", (e) => {
  if (e.target === nameEl) {
    if (e.key === "Enter") {  // one Enter: connect and start recording
      localStorage.setItem("mario-kit-name", nameEl.value); nameEl.blur();
      if (!ws) { startOnHello = true; connect(); } else send({ t: "cmd", cmd: "start" });
    }
    return;
  }
  if (KEYS[e.key]) { held.add(KEYS[e.key]); sendKeys(); e.preventDefault(); }
  else if (COMMANDS[e.key] && !e.repeat) { send({ t: "cmd", cmd: COMMANDS[e.key] }); e.preventDefault(); }
});
window.addEventListener("keyup", (e) => { if (KEYS[e.key]) { held.delete(KEYS[e.key]); sendKeys(); } });

// Gamepad API (standard mapping): A 0, B 1 (and 2/3), start 9, d-pad 12-15, left stick.
let padStart = false;
function pollPad() {
  const pad = [...(navigator.getGamepads ? navigator.getGamepads() : [])].find((p) => p);
  if (pad) {
    const b = (i) => pad.buttons[i] && pad.buttons[i].pressed, ax = pad.axes[0] || 0, ay = pad.axes[1] || 0;
    const now = new Set();
    if (b(0) || b(3)) now.add("A");
    if (b(1) || b(2)) now.add("B");
    if (b(15) || ax > 0.5) now.add("right");
    if (b(14) || ax < -0.5) now.add("left");
    if (b(13) || ay > 0.5) now.add("down");
    if (b(12) || ay < -0.5) now.add("up");
    if ([...now].sort().join() !== [...padHeld].sort().join()) { padHeld.clear(); now.forEach((x) => padHeld.add(x)); sendKeys(); }
    if (b(9) && !padStart) send({ t: "cmd", cmd: "start" });
    padStart = b(9);
  }
  requestAnimationFrame(pollPad);
}
requestAnimationFrame(pollPad);
fetch("/config.json").then((r) => r.json()).then((c) => {
  if (c.invites) {  // the invite's name is the player's
    nameEl.disabled = true; nameEl.placeholder = "from your invite";
    if (params.get("token")) connect();
    else { ended = true; statusEl.textContent = "this server plays by invitation: open the invite link its host gave you (it ends in ?token=...)"; }
  } else if (nameEl.value) connect();
  else { statusEl.textContent = "type your player name and press Enter"; nameEl.focus(); }
});
