// Shared by the handler's console and the supervisor's view: the JSON API, the Socket.IO link,
// words for the codes the API uses, timers that tick locally, and the queue and handler lists.
// Plain ES modules, no build step; nothing here runs on import.

export const $ = (id) => document.getElementById(id);

/**
 * Start the keyboard and the screen reader at the page's heading when nothing else has the focus
 * (as after log-in, when the browser leaves it on the body): the heading says where they are.
 */
export function focusHeading() {
  if (document.activeElement && document.activeElement !== document.body) return;
  const heading = document.querySelector("main h1");
  if (!heading) return;
  if (!heading.hasAttribute("tabindex")) heading.tabIndex = -1;
  heading.focus({ preventScroll: true });
}

// ------------------------------------------------------------------ words for codes

const NEEDS = {
  mental_health: "Mental health",
  addiction: "Alcohol, drugs or other addiction",
  return_to_work: "Returning to work",
  speak_now: "Wants to speak to someone now",
};

const FLAGS = {
  self_referral_unconfirmed: "Self-referral not confirmed",
  not_safe_now: "Said on the website they are not safe now",
  eligibility_unconfirmed: "Eligibility not confirmed",
};

const PRESENCE = {
  offline: "Offline",
  available: "Available",
  offered: "Ringing",
  on_call: "On a call",
  wrap_up: "Wrapping up",
  break: "On break",
};

const SKILLS = {
  mental_health: "Mental health",
  addiction: "Addiction",
  return_to_work: "Return to work",
  dentist: "Dentists",
};

// What each IVR answer means, said the way a handler would want to read it.
const ANSWERS = {
  about: { self: "Calling about their own health", someone_else: "Calling about someone else" },
  eligible: {
    yes: "Registered with the GMC or GDC and working (or returning to practice) in England",
    no: "Said they are not eligible",
  },
};

/** "some_code" → "Some code", for codes this page has no words for yet. */
export function humanise(code) {
  const text = String(code ?? "").replace(/[_-]+/g, " ").trim();
  return text ? text[0].toUpperCase() + text.slice(1) : "";
}

export const needLabel = (need) => (need ? NEEDS[need] || humanise(need) : "Not given");
export const flagLabel = (flag) => FLAGS[flag] || humanise(flag);
export const presenceLabel = (presence) => PRESENCE[presence] || humanise(presence);
export const skillLabel = (skill) => SKILLS[skill] || humanise(skill);

/** One readable line per IVR answer; answers with no words of their own are shown as name: value. */
export function answerLines(answers) {
  return Object.entries(answers || {}).map(([name, value]) => {
    const known = ANSWERS[name] && ANSWERS[name][value];
    return known || `${humanise(name)}: ${humanise(value)}`;
  });
}

// ------------------------------------------------------------------ time

/** Seconds as m:ss, or h:mm:ss from an hour. */
export function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const rest = String(s % 60).padStart(2, "0");
  return h ? `${h}:${String(m).padStart(2, "0")}:${rest}` : `${m}:${rest}`;
}

/** An ISO 8601 instant from the server as epoch milliseconds, or null. */
export function instant(iso) {
  if (!iso) return null;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

/**
 * Make `element` show the time elapsed since `startMs` (epoch ms), updated by the shared ticker.
 * Relative durations from the server (waiting_s) are turned into a local start when they arrive,
 * so the count never depends on the two clocks agreeing.
 */
export function tickFrom(element, startMs) {
  if (startMs == null) {
    delete element.dataset.tickStart;
    element.textContent = "";
    return;
  }
  element.dataset.tickStart = String(startMs);
  element.textContent = clock((Date.now() - startMs) / 1000);
}

/** One timer for the whole page: every element marked by tickFrom is refreshed each second. */
export function startTicker(extra) {
  const tick = () => {
    const now = Date.now();
    for (const element of document.querySelectorAll("[data-tick-start]")) {
      element.textContent = clock((now - Number(element.dataset.tickStart)) / 1000);
    }
    if (extra) extra(now);
  };
  tick();
  return window.setInterval(tick, 1000);
}

// ------------------------------------------------------------------ the JSON API

export class ApiError extends Error {
  constructor(status, error, detail) {
    super(typeof detail === "string" && detail ? detail : error || `HTTP ${status}`);
    this.status = status;
    this.error = error;
    this.detail = detail;
  }
}

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

/** Where to send someone whose session has ended; set by each page from its data-login-url. */
let loginUrl = "/login";
export function setLoginUrl(url) {
  if (url) loginUrl = url;
}

// The page's Socket.IO connection, if it has one: the server closes it once it has been idle as long as
// the log-in session may be, so every answered API call (activity on this page) tells it "in use".
let liveSocket = null;
let lastBeat = 0;
const BEAT_GAP_MS = 10000;

function beat() {
  if (!liveSocket || !liveSocket.connected || Date.now() - lastBeat < BEAT_GAP_MS) return;
  lastBeat = Date.now();
  liveSocket.emit("heartbeat");
}

/** Go to the log-in page, which then says the session ended (rather than showing a bare form). */
export function sessionEnded() {
  const target = new URL(loginUrl, window.location.href);
  target.searchParams.set("expired", "1");
  window.location.assign(target.pathname + target.search);
}

/**
 * Call the API and return its JSON body; throws ApiError with the service's {error, detail}.
 * A 401 means the session has ended: go to the log-in page rather than show a broken console.
 */
export async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (method !== "GET") options.headers["X-CSRFToken"] = csrfToken();
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, options);
  } catch (exc) {
    throw new ApiError(0, "network", "The helpline cannot be reached. Check your connection.");
  }
  const data = await response.json().catch(() => ({}));
  if (response.status === 401) {
    sessionEnded();
    throw new ApiError(401, data.error || "login_required", "Your session has ended. Please log in again.");
  }
  if (!response.ok) throw new ApiError(response.status, data.error, data.detail);
  beat();
  return data;
}

// ------------------------------------------------------------------ Socket.IO

/**
 * Connect to the console namespace and keep the connection banner honest.
 * `handlers` maps server events to functions; `onConnect` runs on every (re)connect, so the page
 * re-reads whatever it cannot get from the events the server re-sends.
 */
export function connect(namespace, banner, handlers, onConnect) {
  // window.io is the vendored client (static/vendor/socket.io.min.js), loaded before this module.
  const socket = window.io(namespace, { reconnectionDelayMax: 5000 });
  liveSocket = socket;
  const show = (state, text) => {
    banner.dataset.state = state;
    banner.textContent = text;
    banner.hidden = state === "connected";
  };
  socket.on("connect", () => {
    show("connected", "Connected");
    if (onConnect) onConnect();
  });
  socket.on("disconnect", (reason) => {
    // The server closing the link on purpose (e.g. logging out elsewhere) is not retried by the
    // client; everything else is, and the banner stays up until the link is back.
    show("reconnecting", "Reconnecting… the queue and offers will come back when the connection does.");
    if (reason === "io server disconnect") window.setTimeout(() => socket.connect(), 1000);
  });
  socket.on("connect_error", () => {
    show("reconnecting", "Reconnecting… the queue and offers will come back when the connection does.");
    // A refused connection (e.g. the session expired) is not retried automatically. Ask the API:
    // a 401 there sends the browser to log in; otherwise try again shortly.
    if (!socket.active) {
      api("GET", "/api/me").then(() => window.setTimeout(() => socket.connect(), 2000), () => {});
    }
  });
  // The server closes a connection left idle past the session's limit, and says so first. (If another
  // tab kept the session alive, the log-in page sends the browser straight back here.)
  socket.on("session_expired", () => {
    socket.disconnect();
    sessionEnded();
  });
  for (const [event, handler] of Object.entries(handlers)) socket.on(event, handler);
  return socket;
}

/**
 * Keep the log-in session (and the socket's lease) alive while `inUse()` says the page is being
 * used even though nobody touches it: a handler waiting on duty for the next call. Otherwise the
 * idle limit applies, and someone who walked away is logged out. `idleS` is the server's limit.
 */
export function keepAlive(socket, inUse, idleS) {
  // Three beats per idle period, at most one a minute: a beat can be lost without logging anyone out.
  const everyMs = Math.max(15, Math.min(60, Math.floor((Number(idleS) || 1800) / 3))) * 1000;
  return window.setInterval(() => {
    if (!inUse() || !socket.connected) return;
    // A 401 sends the browser to log in (see api); an answer renews the socket's lease too (beat).
    api("GET", "/api/me").catch(() => {});
  }, everyMs);
}

// ------------------------------------------------------------------ shared views

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text != null) node.textContent = text;
  return node;
}

/** Badges for a call's flags: every flag needs confirming by voice, so they stand out. */
export function flagBadges(list, flags) {
  list.replaceChildren(...(flags || []).map((flag) => element("li", "badge badge-flag", flagLabel(flag))));
  list.hidden = !(flags && flags.length);
}

/** Draw the queue table; each wait counts on from what the server said, locally. */
export function renderQueue(tbody, summary, calls) {
  const now = Date.now();
  const rows = (calls || []).map((call) => {
    const row = element("tr");
    row.dataset.callId = String(call.id);
    row.append(element("td", "num", String(call.position ?? "")));
    const wait = element("td", "timer");
    tickFrom(wait, now - (Number(call.waiting_s) || 0) * 1000);
    // A request from the website is marked so: it is rung back (or emailed), not waiting on the line.
    row.append(wait, element("td", "", needLabel(call.need) + (call.channel === "web" ? " (web request)" : "")));
    const flags = element("td");
    const list = element("ul", "flags");
    flagBadges(list, call.flags);
    flags.append(list);
    row.append(flags);
    return row;
  });
  if (!rows.length) {
    const row = element("tr", "empty");
    const cell = element("td", "muted", "No one is waiting.");
    cell.colSpan = 4;
    row.append(cell);
    rows.push(row);
  }
  tbody.replaceChildren(...rows);
  const count = (calls || []).length;
  summary.textContent = count ? `${count} waiting` : "No one waiting";
}

/** Draw the handlers list with presence and how long each has been in it. */
export function renderHandlers(list, summary, handlers) {
  const items = (handlers || []).map((handler) => {
    const item = element("li", "handler");
    item.dataset.presence = handler.presence;
    const name = element("span", "handler-name", handler.name);
    const presence = element("span", "badge", presenceLabel(handler.presence));
    presence.dataset.presence = handler.presence;
    const since = element("span", "timer muted");
    tickFrom(since, instant(handler.since));
    const skills = element("span", "skills muted", (handler.skills || []).map(skillLabel).join(" · "));
    item.append(name, presence, since, skills);
    return item;
  });
  if (!items.length) items.push(element("li", "muted", "Nobody is logged in."));
  list.replaceChildren(...items);
  const available = (handlers || []).filter((h) => h.presence === "available").length;
  summary.textContent = `${available} available`;
}
