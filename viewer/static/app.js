"use strict";
// The page shows MJPEG streams in <img> tags and polls /api/status for the badges.
// Unlocking posts the credentials once; the viewer process answers with an HttpOnly cookie.
const grid = document.getElementById("grid");
const message = document.getElementById("message");
const cards = new Map();

function say(text, ok) {
  message.textContent = text;
  message.className = ok ? "ok" : "";
}

function card(camera) {
  if (cards.has(camera)) return cards.get(camera);
  const el = document.createElement("section");
  el.className = "camera";
  el.innerHTML = `<img alt="camera ${camera}"><div class="info"><strong></strong>
    <span class="badge sig waiting">waiting</span><span class="zones"></span>
    <span class="seq"></span><span class="note"></span></div>`;
  el.querySelector("strong").textContent = camera;
  el.dataset.camera = camera;
  grid.appendChild(el);
  cards.set(camera, el);
  reloadStream(el);
  return el;
}

let playbackFrom = null;  // null: live; else an ISO time to play the archive from

function reloadStream(el) {
  // a new request carries the current session cookie, so the stream switches mode
  const cam = encodeURIComponent(el.dataset.camera);
  const from = playbackFrom ? `&from=${encodeURIComponent(playbackFrom)}` : "";
  el.querySelector("img").src = `/stream/${cam}.mjpg?t=${Date.now()}${from}`;
}

document.getElementById("play").addEventListener("click", () => {
  const value = document.getElementById("from").value;
  playbackFrom = value ? new Date(value).toISOString() : "start";
  say(`playing the archive from ${value || "its start"}`, true);
  cards.forEach(reloadStream);
});

document.getElementById("live").addEventListener("click", () => {
  playbackFrom = null;
  say("live", true);
  cards.forEach(reloadStream);
});

async function refresh() {
  let status;
  try {
    status = await (await fetch("/api/status", {cache: "no-store"})).json();
  } catch (e) {
    return;
  }
  const mode = document.getElementById("mode");
  mode.textContent = status.user ? `unlocked as ${status.user}` : "public view";
  mode.className = "badge " + (status.user ? "unlocked" : "public");
  document.getElementById("unlock-form").hidden = !!status.user;
  document.getElementById("lock").hidden = !status.user;
  for (const cam of status.cameras) {
    const el = card(cam.camera);
    const sig = el.querySelector(".sig");
    if (!cam.live) { sig.textContent = "no signal"; sig.className = "badge sig waiting"; }
    else if (cam.verified) { sig.textContent = "signature verified"; sig.className = "badge sig verified"; }
    else { sig.textContent = "VERIFICATION FAILED"; sig.className = "badge sig failed"; sig.title = cam.problem; }
    el.querySelector(".zones").textContent = cam.zones !== undefined ? `${cam.zones} zone(s)` : "";
    el.querySelector(".seq").textContent = cam.seq !== undefined ? `#${cam.seq}` : "";
    el.querySelector(".note").textContent = status.user && cam.unlock_problem ? cam.unlock_problem : "";
  }
}

document.getElementById("unlock-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const user = document.getElementById("user").value;
  const pw = document.getElementById("password");
  say("unlocking…", true);
  const resp = await fetch("/api/unlock", {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({user: user, password: pw.value}),
  });
  pw.value = "";
  const doc = await resp.json();
  if (resp.ok) { say(`unlocked as ${doc.user}`, true); cards.forEach(reloadStream); }
  else say(doc.error || "unlock failed", false);
  refresh();
});

document.getElementById("lock").addEventListener("click", async () => {
  await fetch("/api/lock", {method: "POST", headers: {"Content-Type": "application/json"}, body: "{}"});
  say("locked", true);
  cards.forEach(reloadStream);
  refresh();
});

refresh();
setInterval(refresh, 1000);
