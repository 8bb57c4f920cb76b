// facestream console: plain script over the /v1 API. The browser holds an HttpOnly
// session cookie, never the API key. Everything shown is built with DOM nodes and
// textContent (names and camera ids are user data: no innerHTML).
"use strict";

const $ = (id) => document.getElementById(id);
const LIVE_TYPES = "identity.recognized,identity.unknown";
const LIVE_KEEP = 200;

let me = null; // {name, scope}
let stream = null;
let timers = [];
const seen = new Set();
// recognitions corrected with "wrong person" in this page: event id → what was done
const corrected = new Map();

const isAdmin = () => me !== null && me.scope === "admin";

// ---- API ----------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    const message = body && body.error ? body.error.message : `HTTP ${status}`;
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, body) {
  const options = { method, headers: {}, credentials: "same-origin" };
  if (method !== "GET") options.headers["X-Facestream-Console"] = "1";
  if (body instanceof Blob) {
    options.body = body;
    options.headers["Content-Type"] = body.type || "application/octet-stream";
  } else if (body !== undefined) {
    options.body = JSON.stringify(body);
    options.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(path, options);
  let data = null;
  if (response.status !== 204) {
    const text = await response.text();
    try {
      data = text ? JSON.parse(text) : null;
    } catch (_) {
      data = text;
    }
  }
  if (response.status === 401 && !(path === "/v1/session" && method !== "GET")) {
    if (me !== null) showLogin("Your session ended: log in again.");
  }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// ---- DOM helpers --------------------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k.startsWith("data-")) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    node.append(typeof c === "string" ? document.createTextNode(c) : c);
  }
  return node;
}

function image(src, alt, cls) {
  const img = el("img", { src, alt, class: cls || "thumb", loading: "lazy" });
  img.addEventListener("error", () => img.replaceWith(el("div", { class: "thumb-none", text: "no image" })));
  return img;
}

function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

const fixed = (x, n) => (typeof x === "number" ? x.toFixed(n) : "–");

function say(target, text, kind) {
  const node = $(target);
  node.textContent = text;
  node.className = `message ${kind || ""}`;
}

// ---- login --------------------------------------------------------------------------

function showLogin(message) {
  me = null;
  if (stream) stream.close();
  stream = null;
  timers.forEach(clearInterval);
  timers = [];
  $("app").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("login-key").value = "";
  $("login-key").focus();
}

async function login(event) {
  event.preventDefault();
  $("login-error").textContent = "";
  try {
    me = await api("POST", "/v1/session", { key: $("login-key").value });
    $("login-key").value = "";
    showApp();
  } catch (e) {
    $("login-error").textContent = e.status === 401 ? "That key is not valid." : e.message;
  }
}

async function logout() {
  try {
    await api("DELETE", "/v1/session");
  } finally {
    showLogin("Logged out.");
  }
}

function showApp() {
  $("login").hidden = true;
  $("app").hidden = false;
  document.body.classList.toggle("admin", isAdmin());
  $("who").textContent = `${me.name} · ${me.scope}`;
  startLive();
  route();
}

// ---- pages --------------------------------------------------------------------------

const PAGES = {
  live: null,
  cameras: showCameras,
  library: loadLibrary,
  review: loadReview,
  search: loadSearch,
};
let pageTimer = null;

function route() {
  if (me === null) return;
  let page = location.hash.replace("#", "");
  if (!(page in PAGES)) page = "live";
  for (const name of Object.keys(PAGES)) $(`page-${name}`).hidden = name !== page;
  for (const a of document.querySelectorAll("header nav a")) {
    a.classList.toggle("active", a.dataset.page === page);
  }
  if (pageTimer) clearInterval(pageTimer);
  pageTimer = null;
  if (PAGES[page]) PAGES[page]();
}

// ---- Live ---------------------------------------------------------------------------

function startLive() {
  if (stream) return;
  const list = $("live-events");
  list.replaceChildren();
  seen.clear();
  api("GET", "/v1/events/recent?limit=200")
    .then((recent) => {
      recent.items
        .filter((e) => e.type === "identity.recognized" || e.type === "identity.unknown")
        .forEach(addEvent);
    })
    .catch(() => {});
  stream = new EventSource(`/v1/events/stream?types=${LIVE_TYPES}`);
  const status = $("live-status");
  stream.onopen = () => {
    status.textContent = "connected";
    status.className = "status live";
  };
  stream.onerror = () => {
    status.textContent = "reconnecting…";
    status.className = "status down";
    // the browser retries on its own; a session that ended sends the operator to login
    api("GET", "/v1/session").catch(() => {});
  };
  for (const type of LIVE_TYPES.split(",")) {
    stream.addEventListener(type, (m) => addEvent(JSON.parse(m.data)));
  }
}

function addEvent(e) {
  if (seen.has(e.id)) return;
  seen.add(e.id);
  const row = eventRow(e);
  const list = $("live-events");
  // newest first, by occurrence (the recent list and the stream may interleave)
  const at = Date.parse(e.occurred_at);
  const after = [...list.children].find((c) => Date.parse(c.querySelector("time").dateTime) < at);
  list.insertBefore(row, after || null);
  while (list.children.length > LIVE_KEEP) list.lastElementChild.remove();
  $("live-empty").hidden = list.children.length > 0;
}

// One identity event as a row: thumbnail, who, camera, similarity, quality, time, a link
// to its frame and, for a recognition, "wrong person".
function eventRow(e) {
  const recognized = e.type === "identity.recognized";
  const name = recognized && e.identity ? e.identity.name : "Unknown";
  const thumb = e.thumbnail_jpeg
    ? image(`data:image/jpeg;base64,${e.thumbnail_jpeg}`, name)
    : el("div", { class: "thumb-none", text: "no thumbnail" });
  const actions = el(
    "div",
    { class: "actions" },
    el("a", { href: `/v1/events/${e.id}/snapshot`, target: "_blank", rel: "noopener", text: "frame" }),
  );
  if (corrected.has(e.id)) {
    actions.append(el("span", { class: "corrected", text: corrected.get(e.id) }));
  } else if (recognized && e.identity && e.identity.face_id) {
    actions.append(
      el("button", {
        class: "wrong-person danger admin-only",
        type: "button",
        text: "Wrong person",
        onclick: (ev) => wrongPerson(e, ev.target),
      }),
    );
  }
  return el(
    "li",
    { class: `event ${recognized ? "recognized" : "unknown"}`, "data-id": e.id, "data-type": e.type },
    thumb,
    el(
      "div",
      {},
      el("div", { class: "who", text: name }),
      el(
        "div",
        { class: "facts" },
        el("span", { class: "camera", text: `camera ${e.camera_id || "–"}` }),
        el("span", { text: `similarity ${fixed(e.similarity, 2)}` }),
        el("span", { text: `quality ${fixed(e.quality, 2)}` }),
        el("time", { dateTime: e.occurred_at, text: when(e.occurred_at) }),
      ),
    ),
    actions,
  );
}

async function wrongPerson(e, button) {
  const question =
    `Was this not ${e.identity.name}?\n\n` +
    "The enrolled face of theirs that matched will be removed from the library.";
  if (!window.confirm(question)) return;
  button.disabled = true;
  try {
    await api("DELETE", `/v1/identities/${e.identity.id}/faces/${e.identity.face_id}`);
    corrected.set(e.id, "matching face removed");
  } catch (err) {
    if (err.status !== 404) {
      button.disabled = false;
      window.alert(err.message);
      return;
    }
    corrected.set(e.id, "face already removed");
  }
  // every row of this event (Live and the review page's matches) says so
  for (const row of document.querySelectorAll(`li.event[data-id="${e.id}"] .wrong-person`)) {
    row.replaceWith(el("span", { class: "corrected", text: corrected.get(e.id) }));
  }
}

// ---- Cameras ------------------------------------------------------------------------

const cameraCards = new Map();
let lastCameras = null;

function showCameras() {
  refreshCameras();
  pageTimer = setInterval(refreshCameras, 2000);
}

async function refreshCameras() {
  let cameras;
  try {
    cameras = (await api("GET", "/v1/cameras")).cameras;
  } catch (_) {
    return;
  }
  const now = performance.now();
  const list = $("camera-list");
  $("cameras-empty").hidden = cameras.length > 0;
  for (const c of cameras) {
    let card = cameraCards.get(c.id);
    if (!card) {
      card = makeCameraCard(c.id);
      cameraCards.set(c.id, card);
      list.append(card.root);
    }
    const before = lastCameras && lastCameras.cameras.find((p) => p.id === c.id);
    const seconds = lastCameras ? (now - lastCameras.at) / 1000 : 0;
    const rate = (field) =>
      before && seconds > 0 ? `${((c[field] - before[field]) / seconds).toFixed(1)} fps` : "…";
    card.state.textContent = c.state;
    card.state.className = `state ${c.state}`;
    const dropped = c.frames_dropped + c.frames_analysed > 0
      ? (100 * c.frames_dropped) / (c.frames_dropped + c.frames_analysed)
      : 0;
    card.set("since", when(c.since));
    card.set("size", c.width ? `${c.width}×${c.height}` : "–");
    card.set("decoded", rate("frames_decoded"));
    card.set("analysed", rate("frames_analysed"));
    card.set("dropped", `${c.frames_dropped} (${dropped.toFixed(1)} %)`);
    card.set("reconnects", String(c.reconnects));
    card.set("error", c.last_error || "none");
    card.set("url", c.url);
    // why the camera does (not) recognise, from its faces: the installer's verdict
    card.set("faces", c.faces ? c.faces.text : "no face seen yet");
    card.verdict.dataset.kind = c.faces ? c.faces.kind : "none";
    if (c.frames_analysed > 0 && (!card.shownAt || now - card.shownAt > 4000)) {
      card.shownAt = now;
      card.preview.src = `/v1/cameras/${encodeURIComponent(c.id)}/snapshot?t=${Date.now()}`;
    }
  }
  lastCameras = { at: now, cameras };
}

function makeCameraCard(id) {
  const fields = {};
  const dl = el("dl");
  for (const [key, label] of [
    ["since", "since"], ["size", "frame"], ["decoded", "decoded"], ["analysed", "analysed"],
    ["dropped", "dropped"], ["reconnects", "reconnects"], ["error", "last error"], ["url", "url"],
    ["faces", "recognition"],
  ]) {
    fields[key] = el("dd");
    dl.append(el("dt", { text: label }), fields[key]);
  }
  const state = el("span", { class: "state" });
  const preview = el("img", { class: "preview", alt: `latest frame of ${id}` });
  const root = el("div", { class: "card camera", "data-camera": id }, el("h3", {}, id, state), preview, dl);
  fields.faces.className = "verdict";
  return {
    root, state, preview, verdict: fields.faces, shownAt: 0,
    set: (k, v) => (fields[k].textContent = v),
  };
}

// ---- Face library -------------------------------------------------------------------

async function loadLibrary() {
  let identities;
  try {
    identities = (await api("GET", "/v1/identities?limit=1000")).items;
  } catch (e) {
    say("library-message", e.message, "bad");
    return;
  }
  identities.sort((a, b) => a.name.localeCompare(b.name));
  const list = $("identity-list");
  list.replaceChildren(...identities.map(identityCard));
  $("library-empty").hidden = identities.length > 0;
}

function identityCard(identity) {
  const faces = el("div", { class: "faces" });
  const file = el("input", { type: "file", accept: "image/jpeg,image/png", class: "add-photo" });
  const choice = el("div", { class: "choice" });
  file.addEventListener("change", async () => {
    if (!file.files.length) return;
    const added = await addPhoto(identity, file.files[0], choice);
    file.value = "";
    if (added) loadLibrary();
  });
  const card = el(
    "div",
    { class: "identity", "data-id": identity.id, "data-name": identity.name },
    el(
      "div",
      { class: "head" },
      el("span", { class: "name", text: identity.name }),
      el("span", { class: "count", text: `${identity.faces} face${identity.faces === 1 ? "" : "s"}` }),
      el("label", { class: "admin-only" }, "add photo ", file),
      el("button", { type: "button", class: "rename admin-only", text: "Rename", onclick: () => rename(identity) }),
      el("button", {
        type: "button",
        class: "where-seen admin-only",
        text: "Where seen",
        onclick: () => searchFor({ identity: identity.id }),
      }),
      el("button", { type: "button", class: "erase danger admin-only", text: "Erase", onclick: () => erase(identity) }),
    ),
    choice,
    faces,
  );
  api("GET", `/v1/identities/${identity.id}/faces`)
    .then((r) => faces.replaceChildren(...r.items.map((f) => faceTile(identity, f))))
    .catch((e) => faces.replaceChildren(el("span", { class: "error", text: e.message })));
  return card;
}

function faceTile(identity, face) {
  const picture = face.crop_url
    ? image(face.crop_url, `a face of ${identity.name}`)
    : el("div", { class: "thumb-none", text: "no crop kept (gallery.keep_crops)" });
  return el(
    "div",
    { class: "face", "data-id": face.id },
    picture,
    el("span", { class: "source", title: face.source, text: face.source }),
    el("span", { text: `quality ${fixed(face.quality, 2)} · ${when(face.created)}` }),
    el("button", {
      type: "button",
      class: "small remove-face admin-only",
      text: "Remove",
      onclick: async () => {
        if (!window.confirm(`Remove this face of ${identity.name}?`)) return;
        try {
          await api("DELETE", `/v1/identities/${identity.id}/faces/${face.id}`);
          loadLibrary();
        } catch (e) {
          say("library-message", e.message, "bad");
        }
      },
    }),
  );
}

// Upload one photo to an identity. A photo with several faces asks which one (the API
// refuses with faces_found > 1 until told); resolves to whether a face was added.
function addPhoto(identity, photo, choiceBox, face) {
  return new Promise((resolve) => {
    const query = face ? `?face=${face}` : "";
    api("POST", `/v1/identities/${identity.id}/faces${query}`, photo)
      .then(() => {
        choiceBox.replaceChildren();
        say("library-message", `Added a face to ${identity.name}.`, "good");
        resolve(true);
      })
      .catch((e) => {
        const found = e.body && e.body.error ? e.body.error.faces_found : undefined;
        if (e.status === 422 && found > 1 && !face) {
          const pick = (how) => () => addPhoto(identity, photo, choiceBox, how).then(resolve);
          choiceBox.replaceChildren(
            el("span", { text: `${found} faces in ${photo.name}: use ` }),
            el("button", { type: "button", "data-face": "largest", text: "the largest", onclick: pick("largest") }),
            el("button", { type: "button", "data-face": "center", text: "the one nearest the centre", onclick: pick("center") }),
            el("button", { type: "button", text: "none", onclick: () => { choiceBox.replaceChildren(); resolve(false); } }),
          );
          say("library-message", e.message, "bad");
          return;
        }
        choiceBox.replaceChildren();
        say("library-message", e.message, "bad");
        resolve(false);
      });
  });
}

async function enrolNew(event) {
  event.preventDefault();
  const name = $("new-name").value.trim();
  const photo = $("new-photo").files[0];
  if (!name || !photo) return;
  let identity;
  try {
    identity = await api("POST", "/v1/identities", { name });
  } catch (e) {
    say("library-message", e.message, "bad");
    return;
  }
  // the face choice, if the photo needs one, is asked under the form
  let box = $("new-choice");
  if (!box) {
    box = el("div", { id: "new-choice", class: "choice" });
    $("new-identity").after(box);
  }
  const added = await addPhoto(identity, photo, box);
  if (!added) {
    // no face, no identity: do not leave an empty entry behind
    await api("DELETE", `/v1/identities/${identity.id}`).catch(() => {});
  } else {
    $("new-name").value = "";
    $("new-photo").value = "";
    say("library-message", `Enrolled ${name}.`, "good");
  }
  loadLibrary();
}

async function rename(identity) {
  const name = window.prompt(`New name for ${identity.name}:`, identity.name);
  if (name === null || !name.trim() || name.trim() === identity.name) return;
  try {
    await api("PATCH", `/v1/identities/${identity.id}`, { name: name.trim() });
    say("library-message", `Renamed ${identity.name} to ${name.trim()}.`, "good");
  } catch (e) {
    say("library-message", e.message, "bad");
  }
  loadLibrary();
}

async function erase(identity) {
  const question =
    `Erase ${identity.name} and their ${identity.faces} face(s)?\n\n` +
    "Their templates and crops are deleted; this cannot be undone.";
  if (!window.confirm(question)) return;
  const appearances = window.confirm(
    `Also erase where ${identity.name} was seen (their kept appearances)?\n\n` +
      "OK: erase them. Cancel: keep them, no longer naming anyone.",
  );
  const path = `/v1/identities/${identity.id}`;
  try {
    try {
      await api("DELETE", appearances ? `${path}?appearances=erase` : path);
    } catch (e) {
      // no history kept here (history.enabled = false): nothing more to erase
      if (!(appearances && e.status === 404 && /history/.test(e.message))) throw e;
      await api("DELETE", path);
    }
    say("library-message", `Erased ${identity.name}.`, "good");
  } catch (e) {
    say("library-message", e.message, "bad");
  }
  loadLibrary();
}

// ---- Review queue -------------------------------------------------------------------

async function loadReview() {
  if (!pageTimer) {
    // refresh on its own, but never under someone typing a name
    pageTimer = setInterval(() => {
      const typing = document.activeElement && document.activeElement.matches("input, select");
      if (!(typing && $("page-review").contains(document.activeElement))) loadReview();
    }, 10000);
  }
  let queue;
  let identities = [];
  try {
    queue = await api("GET", "/v1/review/unknowns");
    if (isAdmin()) identities = (await api("GET", "/v1/identities?limit=1000")).items;
  } catch (e) {
    $("review-groups").replaceChildren();
    $("review-empty").hidden = true;
    $("review-count").textContent = "";
    say("review-message", e.message, e.status === 404 ? "" : "bad");
    return;
  }
  identities.sort((a, b) => a.name.localeCompare(b.name));
  $("review-count").textContent =
    `${queue.tracks_total} unknown track(s) in ${queue.groups_total} group(s).`;
  $("review-groups").replaceChildren(...queue.groups.map((g) => reviewGroup(g, identities)));
  $("review-empty").hidden = queue.groups.length > 0;
  // recent recognitions, to say "wrong person" where one was wrong
  api("GET", "/v1/events/recent?limit=200")
    .then((recent) => {
      const matches = recent.items
        .filter((e) => e.type === "identity.recognized")
        .sort((a, b) => Date.parse(b.occurred_at) - Date.parse(a.occurred_at))
        .slice(0, 20);
      $("review-matches").replaceChildren(...matches.map(eventRow));
      $("matches-empty").hidden = matches.length > 0;
    })
    .catch(() => {});
}

function reviewGroup(group, identities) {
  const tracks = group.tracks.map((t) => t.id);
  const nearest = group.nearest_identity;
  const name = el("input", { type: "text", class: "new-name", placeholder: "Name", maxLength: 200 });
  const pick = el(
    "select",
    { class: "identity-choice" },
    ...identities.map((i) =>
      el("option", { value: i.id, text: i.name, selected: nearest !== null && nearest.id === i.id }),
    ),
  );
  const act = async (path, body, done) => {
    try {
      await api("POST", path, body);
      say("review-message", done, "good");
    } catch (e) {
      say("review-message", e.message, "bad");
    }
    loadReview();
  };
  return el(
    "div",
    { class: "card group", "data-id": group.id, "data-size": group.size },
    el("div", { class: "shots" }, ...group.best_shots.map((s) => image(s.url, "best shot"))),
    el(
      "div",
      { class: "facts" },
      `${group.size} track(s) on ${group.cameras.join(", ")}, ${when(group.first_seen)} – ${when(group.last_seen)}`,
      nearest ? ` · nearest: ${nearest.name} (${fixed(nearest.similarity, 2)})` : "",
    ),
    el(
      "div",
      { class: "act admin-only" },
      name,
      el("button", {
        type: "button",
        class: "enroll-new primary",
        text: "New identity",
        onclick: () => {
          const n = name.value.trim();
          if (!n) return name.focus();
          act("/v1/review/enroll", { tracks, name: n }, `Enrolled ${n}.`);
        },
      }),
    ),
    identities.length
      ? el(
          "div",
          { class: "act admin-only" },
          pick,
          el("button", {
            type: "button",
            class: "enroll-existing",
            text: "Add to identity",
            onclick: () =>
              act(
                "/v1/review/enroll",
                { tracks, identity: pick.value },
                `Added to ${pick.selectedOptions[0].textContent}.`,
              ),
          }),
        )
      : null,
    el(
      "div",
      { class: "act admin-only" },
      el("button", {
        type: "button",
        class: "search-past",
        text: "Search the past",
        onclick: () => searchFor({ track_id: tracks[0] }),
      }),
      el("button", {
        type: "button",
        class: "dismiss danger",
        text: "Dismiss",
        onclick: () => act("/v1/review/dismiss", { tracks }, "Dismissed."),
      }),
    ),
  );
}

// ---- Search the past ----------------------------------------------------------------

// the probe of the next search, set by the other pages: {identity} or {track_id}
let searchFrom = null;

function searchFor(probe) {
  searchFrom = probe;
  location.hash = "#search";
}

async function loadSearch() {
  if (isAdmin()) {
    try {
      const people = (await api("GET", "/v1/identities?limit=1000")).items;
      people.sort((a, b) => a.name.localeCompare(b.name));
      const pick = $("search-identity");
      const chosen = searchFrom && searchFrom.identity ? searchFrom.identity : pick.value;
      pick.replaceChildren(
        ...people.map((i) => el("option", { value: i.id, text: i.name, selected: i.id === chosen })),
      );
    } catch (e) {
      say("search-message", e.message, "bad");
    }
  }
  if (searchFrom) {
    const probe = searchFrom;
    searchFrom = null;
    runSearch(probe);
  }
}

function searchFilters() {
  const params = new URLSearchParams();
  const camera = $("search-camera").value.trim();
  if (camera) params.set("camera", camera);
  for (const [id, key] of [["search-from", "from"], ["search-to", "to"]]) {
    const v = $(id).value;
    if (v) params.set(key, new Date(v).toISOString());
  }
  const min = $("search-min").value;
  if (min !== "") params.set("min_similarity", min);
  params.set("limit", "200");
  return params.toString();
}

async function runSearch(probe) {
  say("search-message", "Searching…", "");
  let result;
  try {
    const query = searchFilters();
    if (probe.identity) {
      result = await api("GET", `/v1/identities/${probe.identity}/appearances?${query}`);
    } else if (probe.photo) {
      result = await api("POST", `/v1/search/faces?face=largest&${query}`, probe.photo);
    } else {
      result = await api("POST", `/v1/search/faces?${query}`, probe);
    }
  } catch (e) {
    $("search-results").replaceChildren();
    $("search-empty").hidden = true;
    say("search-message", e.message, "bad");
    return;
  }
  const n = result.items.length;
  say(
    "search-message",
    `${n}${result.more ? "+" : ""} appearance(s) at similarity ≥ ${fixed(result.min_similarity, 2)}.`,
    "good",
  );
  $("search-empty").hidden = n > 0;
  // a timeline per camera, newest first
  const cameras = new Map();
  for (const a of result.items) {
    if (!cameras.has(a.camera)) cameras.set(a.camera, []);
    cameras.get(a.camera).push(a);
  }
  $("search-results").replaceChildren(
    ...[...cameras.entries()].map(([camera, items]) =>
      el(
        "section",
        { class: "timeline", "data-camera": camera },
        el("h3", { text: `${camera} · ${items.length}` }),
        el("ol", { class: "events" }, ...items.map((a) => appearanceRow(a, probe))),
      ),
    ),
  );
}

function appearanceRow(a, probe) {
  const who = a.identity ? a.identity.name || "(erased name)" : "unknown";
  return el(
    "li",
    { class: `event appearance ${a.decision}`, "data-track": a.track_id },
    a.shot_url ? image(a.shot_url, `best shot of ${who}`) : el("div", { class: "thumb-none", text: "no shot" }),
    el(
      "div",
      {},
      el("div", { class: "who", text: `${when(a.first_seen)} – ${when(a.last_seen)}` }),
      el(
        "div",
        { class: "facts" },
        el("span", { text: `similarity ${fixed(a.similarity, 2)}` }),
        el("span", { text: `decided: ${who}` }),
        el("span", { text: `node ${a.node}` }),
      ),
    ),
    el(
      "div",
      { class: "actions" },
      a.event_id
        ? el("a", {
            class: "event-link",
            href: `/v1/events/${a.event_id}/snapshot`,
            target: "_blank",
            rel: "noopener",
            text: "Event",
            title: "the frame the event was decided on (with events.snapshots)",
          })
        : null,
      el("button", {
        type: "button",
        class: "small",
        text: "More like this",
        onclick: () => runSearch({ track_id: a.track_id }),
      }),
      el("button", {
        type: "button",
        class: "small danger delete-appearance",
        text: "Delete",
        onclick: async () => {
          if (!window.confirm("Delete this appearance (its face and template)?")) return;
          try {
            await api("DELETE", `/v1/search/appearances?track_id=${a.track_id}`);
            runSearch(probe);
          } catch (e) {
            say("search-message", e.message, "bad");
          }
        },
      }),
    ),
  );
}

// ---- start --------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", login);
  $("logout").addEventListener("click", logout);
  $("new-identity").addEventListener("submit", enrolNew);
  $("review-refresh").addEventListener("click", loadReview);
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const photo = $("search-photo").files[0];
    if (photo) runSearch({ photo });
    else say("search-message", "Choose a photo first.", "bad");
  });
  $("search-timeline").addEventListener("click", () => {
    const id = $("search-identity").value;
    if (id) runSearch({ identity: id });
  });
  window.addEventListener("hashchange", route);
  api("GET", "/v1/session")
    .then((who) => {
      me = who;
      showApp();
    })
    .catch((e) => showLogin(e.status === 401 ? "" : e.message));
});
