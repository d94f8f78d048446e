"use strict";
// Two views in one page: the grid ("#") and a camera page ("#camera/ID").
// Live public video of an H.264 camera on the camera page plays through Media Source Extensions:
// the viewer sends the camera's own verified access units as fragmented MP4 over a WebSocket
// (viewer/msestream.py), nothing re-encoded. Everything else is MJPEG in <img> tags (see
// viewer/web.py for why): JPEG cameras, unlocked views (zones composed in the viewer process),
// archive playback, the grid, and any browser without MSE or the stream's codec.
// Browsers open at most six HTTP/1.1 connections per host, so a grid of more than
// GRID_MJPEG_MAX cameras refreshes snapshots instead of holding one stream per camera; the
// camera page always gets the full-rate stream.
// Unlocking posts the credentials once; the viewer process answers with an HttpOnly cookie, and
// keys stay in that process. Data (camera ids, messages from the server) only ever reaches the
// page as text (textContent, attributes): never as HTML.
const GRID_MJPEG_MAX = 4;
const SNAPSHOT_MS = 250;
const LIVE_JUMP_S = 1.0;     // further behind the newest frame than this: jump to it
const LIVE_CATCHUP_S = 0.3;  // behind by more than this: play a little faster to catch up
const KEEP_S = 10;           // seconds of decoded video kept behind the playhead

const grid = document.getElementById("grid");
const camView = document.getElementById("camera-view");
const message = document.getElementById("message");
const cards = new Map();
let cameras = [];
let current = null;       // camera id of the camera page, or null on the grid
let playbackFrom = null;  // null: live; else the ISO time the archive plays from
let playbackStarted = 0;  // Date.now() when that playback began
let timeline = null;      // last /api/timeline answer for the current camera
let snapshotTimer = null;
let sessionUser = null;   // the unlocked user (last /api/status), or null
let player = null;        // the camera page's MSE player (startPlayer), or null

const $ = (id) => document.getElementById(id);

function say(text, ok) {
  message.textContent = text;
  message.className = ok ? "ok" : "";
}

function localInput(ms) {
  // a Date (ms) as the value of a datetime-local input, in local time
  const d = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function clock(ms) {
  return new Date(ms).toLocaleString();
}

function el(tag, props, ...children) {
  // a DOM element with properties and children (elements or text): no HTML parsing
  const node = document.createElement(tag);
  Object.assign(node, props || {});
  for (const child of children) node.append(child);
  return node;
}

function freshnessText(cam) {
  // capture time and age of the latest live frame, by this machine's clock
  if (cam.capture_time_us === undefined) return "";
  const age = cam.age_s < 10 ? cam.age_s.toFixed(1) : Math.round(cam.age_s);
  return `captured ${clock(cam.capture_time_us / 1000)} (${age} s ago)`;
}

// ------------------------------------------------------------------ grid
function card(camera) {
  if (cards.has(camera)) return cards.get(camera);
  const a = el("a", {className: "camera", href: `#camera/${encodeURIComponent(camera)}`},
    el("img", {alt: `camera ${camera}`}),
    el("div", {className: "info"},
      el("strong", {textContent: camera}),
      el("span", {className: "badge sig waiting", textContent: "waiting"}),
      el("span", {className: "badge fresh", hidden: true}),
      el("span", {className: "zones"}), el("span", {className: "seq"}),
      el("span", {className: "age"}), el("span", {className: "note"})));
  a.dataset.camera = camera;
  grid.appendChild(a);
  cards.set(camera, a);
  return a;
}

function paintFresh(badge, cam) {
  // STALE: the frame verifies, but it was captured too long ago to be called live
  const stale = !!(cam.live && cam.stale);
  badge.hidden = !stale;
  badge.textContent = stale ? "STALE" : "";
  badge.className = stale ? "badge fresh stale-badge" : "badge fresh";
  badge.title = stale ? `captured ${cam.age_s} s ago (live allows ${cam.max_age_s} s)` : "";
}

function gridUsesMjpeg() {
  return cards.size <= GRID_MJPEG_MAX;
}

function startGridStreams() {
  stopGridStreams();
  if (current !== null) return;
  if (gridUsesMjpeg()) {
    cards.forEach((el) => {
      el.querySelector("img").src = `/stream/${encodeURIComponent(el.dataset.camera)}.mjpg?t=${Date.now()}`;
    });
  } else {
    const tick = () => {
      cards.forEach((el) => {
        const img = el.querySelector("img");
        if (img.dataset.loading === "1") return;  // one request per camera at a time
        const next = new Image();
        img.dataset.loading = "1";
        next.onload = () => { img.src = next.src; img.dataset.loading = ""; };
        next.onerror = () => { img.dataset.loading = ""; };
        next.src = `/snapshot/${encodeURIComponent(el.dataset.camera)}.jpg?t=${Date.now()}`;
      });
    };
    tick();
    snapshotTimer = setInterval(tick, SNAPSHOT_MS);
  }
}

function stopGridStreams() {
  if (snapshotTimer) clearInterval(snapshotTimer);
  snapshotTimer = null;
  cards.forEach((el) => { el.querySelector("img").removeAttribute("src"); });
}

// a gap in an H.264 stream (a frame missing or rejected) is said, never concealed
function noteText(cam) {
  const parts = [];
  if (cam.gap) parts.push(`GAP: ${cam.gap} (a frame was missing or rejected)`);
  if (status.user && cam.unlock_problem) parts.push(cam.unlock_problem);
  return parts.join("; ");
}

function paintSig(sig, cam) {
  if (!cam.live) { sig.textContent = "no signal"; sig.className = "badge sig waiting"; sig.title = ""; }
  else if (cam.verified) { sig.textContent = "signature verified"; sig.className = "badge sig verified"; sig.title = ""; }
  else { sig.textContent = "VERIFICATION FAILED"; sig.className = "badge sig failed"; sig.title = cam.hint ? `${cam.problem}; ${cam.hint}` : cam.problem; }
}

// ------------------------------------------------------------------ camera page
function reloadCameraStream() {
  stopPlayer();
  if (!playbackFrom && !sessionUser && window.MediaSource) startPlayer();
  else showMjpeg("");
  paintMode(null);
  drawCursor();
}

function showMjpeg(note) {
  const cam = encodeURIComponent(current);
  const from = playbackFrom ? `&from=${encodeURIComponent(playbackFrom)}` : "";
  $("cam-video").hidden = true;
  $("cam-stream").hidden = false;
  $("cam-stream").src = `/stream/${cam}.mjpg?t=${Date.now()}${from}`;
  $("cam-video-note").textContent = note;
}

// ------------------------------------------------------------------ live H.264 (MSE)
// Messages (viewer/msestream.py): {"init": {codec, mime, ...}} then the init segment (binary),
// then one fragment (binary) per verified frame; {"gap"}/{"waiting"}: no picture until the next
// keyframe, which comes with a new "init"; {"mjpeg": why}: this view is MJPEG; {"error"}.
function startPlayer() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${scheme}://${location.host}/ws/live/${encodeURIComponent(current)}`);
  ws.binaryType = "arraybuffer";
  const p = {ws, source: null, buffer: null, mime: null, queue: [], started: false, fragments: 0};
  player = p;
  $("cam-video-note").textContent = "connecting…";
  ws.onmessage = (ev) => {
    if (player !== p) return;
    if (typeof ev.data === "string") control(p, JSON.parse(ev.data));
    else { p.queue.push(ev.data); pump(p); }
  };
  ws.onclose = () => {
    if (player !== p) return;
    if (!p.started) { fallBack(p, "no live H.264 stream: showing MJPEG"); return; }
    // the connection ended while playing (the viewer restarted?): connect again
    $("cam-video-note").textContent = "reconnecting…";
    setTimeout(() => { if (player === p) reloadCameraStream(); }, 1000);
  };
}

function control(p, doc) {
  const note = $("cam-video-note");
  if (doc.init) {
    if (!MediaSource.isTypeSupported(doc.init.mime)) {
      fallBack(p, `this browser cannot play ${doc.init.codec} through MSE: showing MJPEG`);
      return;
    }
    p.started = true;
    if (p.mime !== doc.init.mime) openSource(p, doc.init.mime);
    note.textContent = "";
  } else if (doc.gap) {
    note.textContent = `gap: ${doc.gap}`;
  } else if (doc.waiting) {
    note.textContent = doc.waiting;
  } else if (doc.mjpeg) {
    fallBack(p, "");  // a JPEG camera or an unlocked view: MJPEG is this view's stream
  } else if (doc.error) {
    fallBack(p, doc.error);
  }
}

function openSource(p, mime) {
  // a new MediaSource for this codec; the init segment is the next binary message
  const video = $("cam-video");
  const source = new MediaSource();
  p.source = source;
  p.buffer = null;
  p.mime = mime;
  p.queue = [];  // fragments of a stream with other parameters: never appended
  video.src = URL.createObjectURL(source);
  source.addEventListener("sourceopen", () => {
    URL.revokeObjectURL(video.src);
    if (player !== p || p.source !== source) return;
    p.buffer = source.addSourceBuffer(mime);
    p.buffer.addEventListener("updateend", () => pump(p));
    pump(p);
  }, {once: true});
  video.onerror = () => {
    if (player === p) fallBack(p, `the video failed (${video.error ? video.error.message : "?"}): showing MJPEG`);
  };
  $("cam-stream").hidden = true;
  $("cam-stream").removeAttribute("src");
  video.hidden = false;
  video.dataset.mode = "mse";
}

function pump(p) {
  // keep the live edge, trim what is behind, then append the next message
  const video = $("cam-video");
  const sb = p.buffer;
  if (player !== p || !sb || sb.updating) return;
  const ranges = sb.buffered;
  if (ranges.length) {
    const start = ranges.start(ranges.length - 1), end = ranges.end(ranges.length - 1);
    const lag = end - video.currentTime;
    if (video.currentTime < start || lag > LIVE_JUMP_S) video.currentTime = Math.max(start, end - 0.1);
    else video.playbackRate = lag > LIVE_CATCHUP_S ? 1.1 : 1.0;
    if (video.currentTime - ranges.start(0) > 2 * KEEP_S) {
      sb.remove(0, video.currentTime - KEEP_S);  // updateend calls pump again
      return;
    }
    if (video.paused) video.play().catch(() => {});
  }
  if (!p.queue.length) return;
  const chunk = p.queue.shift();
  try {
    sb.appendBuffer(chunk);
    if (chunk.byteLength && p.started) video.dataset.fragments = String(++p.fragments);
  } catch (e) {
    if (e.name === "QuotaExceededError" && ranges.length && video.currentTime - ranges.start(0) > 1) {
      p.queue.unshift(chunk);
      sb.remove(0, video.currentTime - 1);
    } else {
      fallBack(p, `the video could not take the stream (${e.name}): showing MJPEG`);
    }
  }
}

function fallBack(p, reason) {
  if (player !== p) return;
  stopPlayer();
  $("cam-video").dataset.mode = "mjpeg";
  showMjpeg(reason);
}

function stopPlayer() {
  const p = player;
  player = null;
  if (!p) return;
  p.ws.onmessage = p.ws.onclose = null;
  p.ws.close();
  const video = $("cam-video");
  video.onerror = null;
  video.pause();
  video.removeAttribute("src");
  video.load();
  video.hidden = true;
  delete video.dataset.fragments;
  $("cam-video-note").textContent = "";
}

function paintMode(cam) {
  // LIVE only while the latest frame is fresh; STALE when a verified frame is old
  const mode = $("cam-mode");
  if (playbackFrom) {
    mode.textContent = `PLAYBACK from ${clock(Date.parse(playbackFrom))}`;
    mode.className = "badge playback-badge";
    mode.title = "";
  } else if (cam && cam.live && cam.stale) {
    mode.textContent = "STALE";
    mode.className = "badge stale-badge";
    mode.title = `the latest frame was captured ${cam.age_s} s ago (live allows ${cam.max_age_s} s)`;
  } else {
    mode.textContent = "LIVE";
    mode.className = "badge live-badge";
    mode.title = "";
  }
}

function playFrom(ms) {
  playbackFrom = new Date(ms).toISOString();
  playbackStarted = Date.now();
  $("from").value = localInput(ms);
  say(`playing the archive from ${clock(ms)}`, true);
  reloadCameraStream();
}

function goLive() {
  playbackFrom = null;
  say("live", true);
  reloadCameraStream();
}

async function loadTimeline() {
  if (current === null) return;
  const camera = current;
  let doc;
  try {
    const resp = await fetch(`/api/timeline/${encodeURIComponent(camera)}?buckets=240`, {cache: "no-store"});
    doc = await resp.json();
    if (!resp.ok) { $("tl-start").textContent = `archive: ${doc.error}`; return; }
  } catch (e) {
    return;
  }
  if (camera !== current) return;
  timeline = doc;
  const bars = $("tl-bars");
  bars.textContent = "";
  if (!doc.frames) {
    $("tl-start").textContent = "archive: empty";
    $("tl-end").textContent = "";
    return;
  }
  const peak = Math.max(...doc.buckets, 1);
  for (const count of doc.buckets) {
    const bar = document.createElement("span");
    bar.className = count ? "rec" : "gap";
    bar.style.height = count ? `${30 + 70 * count / peak}%` : "100%";
    bars.appendChild(bar);
  }
  const first = doc.first_us / 1000, last = doc.last_us / 1000;
  $("tl-start").textContent = `${clock(first)}  (${doc.frames} frames archived)`;
  $("tl-end").textContent = clock(last);
  if (!$("exp-from").value) $("exp-from").value = localInput(Math.max(first, last - 30000));
  if (!$("exp-to").value) $("exp-to").value = localInput(last + 1000);
  drawCursor();
}

function drawCursor() {
  const cursor = $("tl-cursor");
  if (!timeline || !timeline.frames || !playbackFrom) { cursor.hidden = true; return; }
  const first = timeline.first_us / 1000, last = timeline.last_us / 1000;
  const at = Date.parse(playbackFrom) + (Date.now() - playbackStarted);
  const share = Math.min(1, Math.max(0, (at - first) / Math.max(1, last - first)));
  cursor.hidden = false;
  cursor.style.left = `${share * 100}%`;
}

$("timeline").addEventListener("click", (ev) => {
  if (!timeline || !timeline.frames) return;
  const box = $("timeline").getBoundingClientRect();
  const share = Math.min(1, Math.max(0, (ev.clientX - box.left) / box.width));
  const first = timeline.first_us / 1000, last = timeline.last_us / 1000;
  playFrom(first + share * (last - first));
});

$("play").addEventListener("click", () => {
  const value = $("from").value;
  if (value) playFrom(new Date(value).getTime());
  else if (timeline && timeline.frames) playFrom(timeline.first_us / 1000);
  else say("the archive of this camera is empty", false);
});

$("live").addEventListener("click", goLive);

$("export").addEventListener("click", async () => {
  const from = $("exp-from").value, to = $("exp-to").value;
  if (!from || !to) { say("choose the start and end of the export", false); return; }
  const body = {camera: current, from: new Date(from).toISOString(), to: new Date(to).toISOString()};
  $("exp-video").hidden = $("exp-bundle").hidden = true;
  const resp = await fetch("/api/export", {method: "POST", headers: {"Content-Type": "application/json"},
                                           body: JSON.stringify(body)});
  const job = await resp.json();
  if (!resp.ok) { $("exp-status").textContent = job.error || "export refused"; return; }
  const progress = $("exp-progress");
  progress.hidden = false;
  progress.value = 0;
  $("exp-status").textContent = "exporting…";
  $("export").disabled = true;
  const poll = async () => {
    let state;
    try {
      state = await (await fetch(`/api/export/${job.id}`, {cache: "no-store"})).json();
    } catch (e) {
      setTimeout(poll, 1000);
      return;
    }
    if (state.total) progress.value = state.done / state.total;
    if (state.state === "running") {
      $("exp-status").textContent = `exporting… ${state.done}/${state.total || "?"} frames`;
      setTimeout(poll, 300);
      return;
    }
    $("export").disabled = false;
    if (state.state === "done") {
      progress.value = 1;
      const who = state.unlocked_for ? `unlocked for ${state.unlocked_for}` : "redacted";
      $("exp-status").textContent = `exported ${state.frames} frames (${who}) to ${state.file}`;
      $("exp-video").href = `/exports/${job.id}/video.mp4`;
      $("exp-bundle").href = `/exports/${job.id}/bundle.zip`;
      $("exp-video").hidden = $("exp-bundle").hidden = false;
    } else {
      progress.hidden = true;
      $("exp-status").textContent = `export failed: ${state.error}`;
    }
  };
  poll();
});

// ------------------------------------------------------------------ routing and status
function route() {
  const match = location.hash.match(/^#camera\/(.+)$/);
  const wanted = match ? decodeURIComponent(match[1]) : null;
  if (wanted === current && (wanted !== null || !grid.hidden)) return;
  current = wanted;
  playbackFrom = null;
  timeline = null;
  if (current === null) {
    stopPlayer();
    $("cam-stream").removeAttribute("src");
    camView.hidden = true;
    grid.hidden = false;
    startGridStreams();
  } else {
    stopGridStreams();
    grid.hidden = true;
    camView.hidden = false;
    $("cam-title").textContent = current;
    $("tl-bars").textContent = "";
    $("tl-start").textContent = "archive: loading…";
    $("tl-end").textContent = "";
    $("exp-from").value = $("exp-to").value = $("from").value = "";
    $("exp-status").textContent = "";
    $("exp-progress").hidden = $("exp-video").hidden = $("exp-bundle").hidden = true;
    reloadCameraStream();
    loadTimeline();
  }
}

function reloadAll() {
  // a new request carries the current session cookie, so the streams switch mode
  if (current === null) startGridStreams();
  else reloadCameraStream();
}

async function refresh() {
  let status;
  try {
    status = await (await fetch("/api/status", {cache: "no-store"})).json();
  } catch (e) {
    return;
  }
  if (status.user !== sessionUser) {
    // unlocked or locked elsewhere, or the session expired: the camera page changes stream
    sessionUser = status.user;
    if (current !== null && !playbackFrom) reloadCameraStream();
  }
  const mode = $("mode");
  mode.textContent = status.user ? `unlocked as ${status.user}` : "public view";
  mode.className = "badge " + (status.user ? "unlocked" : "public");
  $("unlock-form").hidden = !!status.user;
  $("lock").hidden = !status.user;
  const before = cards.size;
  cameras = status.cameras;
  for (const cam of cameras) {
    const c = card(cam.camera);
    paintSig(c.querySelector(".sig"), cam);
    paintFresh(c.querySelector(".fresh"), cam);
    c.querySelector(".zones").textContent = cam.zones !== undefined ? `${cam.zones} zone(s)` : "";
    c.querySelector(".seq").textContent = cam.seq !== undefined ? `#${cam.seq}` : "";
    c.querySelector(".age").textContent = freshnessText(cam);
    c.querySelector(".note").textContent = noteText(cam);
    if (cam.camera === current) {
      paintSig($("cam-sig"), cam);
      if (!playbackFrom) paintMode(cam);
      $("cam-zones").textContent = cam.zones !== undefined ? `${cam.zones} zone(s)` : "";
      $("cam-seq").textContent = cam.seq !== undefined ? `#${cam.seq}` : "";
      $("cam-age").textContent = playbackFrom ? "" : freshnessText(cam);
      $("cam-note").textContent = noteText(cam);
    }
  }
  if (cards.size !== before && current === null) startGridStreams();
  drawCursor();
}

$("unlock-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = $("user").value;
  const pw = $("password");
  say("unlocking…", true);
  const resp = await fetch("/api/unlock", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({user: user, password: pw.value}),
  });
  pw.value = "";
  const doc = await resp.json();
  if (resp.ok) {
    sessionUser = doc.user;
    say(doc.warning || `unlocked as ${doc.user}`, !doc.warning);
    reloadAll();
  }
  else say(doc.error || "unlock failed", false);
  refresh();
});

$("lock").addEventListener("click", async () => {
  await fetch("/api/lock", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  sessionUser = null;
  say("locked", true);
  // an unlocked export's downloads belong to the session that just ended
  $("exp-video").hidden = $("exp-bundle").hidden = true;
  reloadAll();
  refresh();
});

window.addEventListener("hashchange", route);
route();
refresh().then(() => { if (current === null) startGridStreams(); });
setInterval(refresh, 1000);
setInterval(loadTimeline, 5000);
