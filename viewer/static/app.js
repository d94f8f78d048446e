"use strict";
// Two views in one page: the grid ("#") and a camera page ("#camera/ID").
// Video is MJPEG in <img> tags (see viewer/web.py for why). Browsers open at most six HTTP/1.1
// connections per host, so a grid of more than GRID_MJPEG_MAX cameras refreshes snapshots
// instead of holding one stream per camera; the camera page always gets the full-rate stream.
// Unlocking posts the credentials once; the viewer process answers with an HttpOnly cookie, and
// keys stay in that process. Data (camera ids, messages from the server) only ever reaches the
// page as text (textContent, attributes): never as HTML.
const GRID_MJPEG_MAX = 4;
const SNAPSHOT_MS = 250;

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

function paintSig(sig, cam) {
  if (!cam.live) { sig.textContent = "no signal"; sig.className = "badge sig waiting"; sig.title = ""; }
  else if (cam.verified) { sig.textContent = "signature verified"; sig.className = "badge sig verified"; sig.title = ""; }
  else { sig.textContent = "VERIFICATION FAILED"; sig.className = "badge sig failed"; sig.title = cam.hint ? `${cam.problem}; ${cam.hint}` : cam.problem; }
}

// ------------------------------------------------------------------ camera page
function reloadCameraStream() {
  const cam = encodeURIComponent(current);
  const from = playbackFrom ? `&from=${encodeURIComponent(playbackFrom)}` : "";
  $("cam-stream").src = `/stream/${cam}.mjpg?t=${Date.now()}${from}`;
  paintMode(null);
  drawCursor();
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
    c.querySelector(".note").textContent = status.user && cam.unlock_problem ? cam.unlock_problem : "";
    if (cam.camera === current) {
      paintSig($("cam-sig"), cam);
      if (!playbackFrom) paintMode(cam);
      $("cam-zones").textContent = cam.zones !== undefined ? `${cam.zones} zone(s)` : "";
      $("cam-seq").textContent = cam.seq !== undefined ? `#${cam.seq}` : "";
      $("cam-age").textContent = playbackFrom ? "" : freshnessText(cam);
      $("cam-note").textContent = status.user && cam.unlock_problem ? cam.unlock_problem : "";
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
  if (resp.ok) { say(doc.warning || `unlocked as ${doc.user}`, !doc.warning); reloadAll(); }
  else say(doc.error || "unlock failed", false);
  refresh();
});

$("lock").addEventListener("click", async () => {
  await fetch("/api/lock", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
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
