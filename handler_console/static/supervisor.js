// The supervisor's live pages, on one Socket.IO connection: the live view (/supervisor: queue,
// handlers, today's figures, actions) and the wall screen (/supervisor/wallboard: huge figures).
// `queue` redraws the line and the handlers; `wallboard` redraws the figures (pushed on every
// change and every few seconds); `alert` is a risk alert, shown at once, with a sound and a flash.
// The live view has its own softphone: Listen, Coach or Barge beside a handler on a call rings it
// into that call once, then switches the same leg between the three; Stop takes it out.
import { $, ApiError, api, clock, connect, focusHeading, renderHandlers, renderQueue, setLoginUrl, startTicker } from "./common.js";
import { drawWall, expectedWait, levelWords } from "./wallboard.js";

const root = $("supervisor") || $("wallboard");
const live = Boolean($("supervisor"));
setLoginUrl(root.dataset.loginUrl);

// When the longest-waiting caller joined, in local time, so the figure ticks between updates.
let longestSince = null;
// The latest queue body and wallboard, so that either event can redraw the actions.
let lastQueue = { calls: [], handlers: [] };
let lastBoard = null;
// Alerts already shown (by call and time), so a wallboard repeat does not sound again.
const seenAlerts = new Set();

const pct = (rate) => (rate == null ? "–" : `${Math.round(rate * 100)}%`);
const seconds = (value) => (value == null ? "–" : clock(value));
const setText = (id, text) => {
  const node = $(id);
  if (node) node.textContent = text;
};

// ------------------------------------------------------------------ figures

function drawQueueFigures(body) {
  const calls = body.calls || [];
  const handlers = body.handlers || [];
  const count = (presence) => handlers.filter((h) => h.presence === presence).length;
  setText("fig-waiting", String(calls.length));
  const longest = calls.reduce((most, call) => Math.max(most, Number(call.waiting_s) || 0), 0);
  longestSince = calls.length ? Date.now() - longest * 1000 : null;
  setText("fig-longest", clock(longest));
  setText("fig-available", String(count("available")));
  setText("fig-oncall", String(count("on_call") + count("wrap_up")));
  setText("fig-online", String(handlers.filter((h) => h.presence !== "offline").length));
}

function drawBoard(board) {
  lastBoard = board;
  const today = board.today || {};
  // The live view's figures.
  // The configured service levels, as the wallboard and reports show them (helpline/reports.py).
  const levels = board.service_levels || {};
  for (const [id, key] of [["fig-sl60", "answered_in_time"], ["fig-abandoned", "abandoned_after"]]) {
    const definition = (levels.definitions || {})[key];
    if (definition) setText(`${id}-label`, `${definition.label}, today`);
    setText(id, pct((levels.today || {})[key]));
    setText(`${id}-status`, levelWords(((levels.today || {}).status || {})[key]));
  }
  setText("fig-expected", expectedWait(board.expected_wait));
  setText("fig-answer", seconds(today.avg_answer_s));
  setText("fig-handle", seconds(today.avg_handle_s));
  setText("fig-callbacks", String(board.callbacks_due));
  // The wall screen's (wallboard.js draws them, for display-only screens too).
  longestSince = drawWall(board);
  setAlertCount((board.alerts || []).length);
  for (const alert of board.alerts || []) showAlert(alert, false);
  drawAlertList(board.alerts || []);
  if (live) {
    drawActions();
    // The call we are on is over: ask where our leg is (one never answered is not heard by the softphone).
    if (supervising && !(board.on_calls || []).some((call) => call.call_id === supervising.callId)) refreshSupervision();
  }
}

startTicker((now) => {
  const text = clock(longestSince == null ? 0 : (now - longestSince) / 1000);
  setText("fig-longest", text);
  setText("wb-longest", text);
});

// ------------------------------------------------------------------ risk alerts

function setAlertCount(count) {
  setText("wb-alerts", String(count));
  const tile = $("wb-alerts")?.closest(".wb-tile");
  if (tile) tile.dataset.level = count ? "bad" : "ok";
}

function alertKey(alert) {
  return `${alert.call_id}@${alert.at}`;
}

function describeAlert(alert) {
  const when = new Date(alert.at).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
  const who = alert.handler && alert.handler.name ? alert.handler.name : "a handler";
  // A PHQ-9 answer of thoughts of death or self-harm raises the risk screen as an immediate risk does.
  const what = alert.source === "phq9" ? "Thoughts of self-harm (PHQ-9)" : "Immediate risk";
  return `${what}: call ${alert.call_id} with ${who}, ${when}`;
}

function beep() {
  // A short two-tone chime; browsers may refuse sound until the page has been clicked once.
  try {
    const audio = new (window.AudioContext || window.webkitAudioContext)();
    [880, 660].forEach((frequency, index) => {
      const tone = audio.createOscillator();
      const gain = audio.createGain();
      tone.frequency.value = frequency;
      gain.gain.value = 0.2;
      tone.connect(gain).connect(audio.destination);
      tone.start(audio.currentTime + index * 0.35);
      tone.stop(audio.currentTime + index * 0.35 + 0.3);
    });
  } catch (exc) {
    // No sound available: the banner still flashes.
  }
}

function showAlert(alert, fresh) {
  const key = alertKey(alert);
  if (seenAlerts.has(key)) return;
  seenAlerts.add(key);
  // Alerts already on the wallboard when the page opened are listed, not sounded.
  if (!fresh) return;
  const banner = $("alerts");
  const item = document.createElement("div");
  item.className = "alert-item";
  const text = document.createElement("span");
  text.textContent = describeAlert(alert);
  const ok = document.createElement("button");
  ok.type = "button";
  ok.className = "secondary";
  ok.textContent = "Acknowledge";
  ok.addEventListener("click", () => {
    item.remove();
    banner.hidden = !banner.children.length;
  });
  item.append(text, ok);
  banner.append(item);
  banner.hidden = false;
  banner.classList.remove("flash");
  void banner.offsetWidth; // restart the animation
  banner.classList.add("flash");
  beep();
}

function drawAlertList(alerts) {
  const list = $("alert-list");
  if (!list) return;
  const items = alerts.map((alert) => {
    const item = document.createElement("li");
    item.textContent = describeAlert(alert);
    return item;
  });
  if (!items.length) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "None today.";
    items.push(none);
  }
  list.replaceChildren(...items);
}

// ------------------------------------------------------------------ actions (live view only)

function say(text) {
  setText("action-message", text);
}

async function act(method, path, body, done) {
  try {
    await api(method, path, body);
    say(done);
  } catch (exc) {
    say(exc instanceof ApiError ? `Not done: ${exc.message}` : "Not done.");
  }
}

function button(text, onClick, className = "secondary small") {
  const node = document.createElement("button");
  node.type = "button";
  node.className = className;
  node.textContent = text;
  node.addEventListener("click", onClick);
  return node;
}

function drawActions() {
  // The controls are rebuilt on every push (every few seconds): keep the keyboard where it was.
  const focused = document.activeElement?.dataset?.focusKey;
  const available = (lastQueue.handlers || []).filter((h) => h.presence === "available");
  for (const row of document.querySelectorAll("#queue-rows tr[data-call-id]")) {
    const callId = row.dataset.callId;
    let cell = row.querySelector("td.actions");
    if (!cell) {
      cell = document.createElement("td");
      cell.className = "actions";
      row.append(cell);
    }
    const position = row.querySelector("td.num")?.textContent;
    const up = button("Move up", () => act("POST", `/api/calls/${callId}/move-up`, undefined, `Call ${callId} moved to the front.`));
    up.disabled = position === "1";
    up.dataset.focusKey = `move-${callId}`;
    const pick = document.createElement("select");
    pick.setAttribute("aria-label", `Offer call ${callId} to`);
    pick.dataset.focusKey = `offer-${callId}`;
    pick.append(new Option("Offer to…", ""));
    for (const handler of available) pick.append(new Option(handler.name, String(handler.id)));
    pick.disabled = !available.length;
    pick.addEventListener("change", () => {
      if (!pick.value) return;
      const name = pick.selectedOptions[0].textContent;
      act("POST", `/api/calls/${callId}/offer`, { handler_id: Number(pick.value) }, `Call ${callId} offered to ${name}.`);
    });
    cell.replaceChildren(up, pick);
  }
  const empty = document.querySelector("#queue-rows tr.empty td");
  if (empty) empty.colSpan = 5;

  const onCalls = new Map(((lastBoard && lastBoard.on_calls) || []).map((item) => [item.handler_id, item]));
  const items = document.querySelectorAll("#handlers li.handler");
  (lastQueue.handlers || []).forEach((handler, index) => {
    const item = items[index];
    if (!item) return;
    const controls = document.createElement("span");
    controls.className = "handler-actions";
    const presence = document.createElement("select");
    presence.setAttribute("aria-label", `Set ${handler.name}'s status`);
    presence.dataset.focusKey = `presence-${handler.id}`;
    presence.append(new Option("Set status…", ""));
    for (const [value, words] of [["available", "Available"], ["break", "Break"], ["offline", "Offline"]]) {
      presence.append(new Option(words, value));
    }
    presence.disabled = handler.presence === "on_call" || handler.presence === "wrap_up";
    presence.addEventListener("change", () => {
      if (!presence.value) return;
      act("POST", `/api/handlers/${handler.id}/presence`, { status: presence.value }, `${handler.name} set to ${presence.value}.`);
    });
    controls.append(presence);
    const call = onCalls.get(handler.id);
    if (call && call.presence === "on_call") controls.append(...superviseControls(call.call_id, handler.name));
    item.querySelector(".handler-actions")?.remove();
    item.append(controls);
  });
  drawSupervision();
  if (focused) document.querySelector(`[data-focus-key="${focused}"]`)?.focus();
}

// ------------------------------------------------------------------ listen, coach and barge (live view only)

const MODES = [
  ["listen", "Listen"],
  ["coach", "Coach"],
  ["barge", "Barge"],
];
// How long after a click an incoming call is taken to be the one asked for (Twilio rings for 30 s).
const ANSWER_WITHIN_MS = 40_000;

// The call this page supervises: {callId, mode, name}, or null. One at a time: the softphone has one line.
let supervising = null;
// When a ring was last asked for (0: none outstanding), so that only that call is answered.
let askedAt = 0;
// A request under way: the buttons wait for it rather than sending a second.
let busy = false;
let phone = null;
let phoneWasInCall = false;
// On a call a handler asked this supervisor into (a warm hand-over), answered from the ring prompt;
// and whether the handler has brought them in to the caller (the service's "consult" event).
let consulting = false;
let consultJoined = false;

function modeWords() {
  if (!supervising) return "Not on a call. Choose Listen, Coach or Barge beside a handler on a call.";
  const { callId, mode, name } = supervising;
  if (!phone || !phone.inCall) return `Ringing your softphone into call ${callId} with ${name}…`;
  if (mode === "listen") return `Listening to call ${callId} with ${name}: you are muted, nobody hears you.`;
  if (mode === "coach") return `Coaching ${name} on call ${callId}: ${name} hears you, the caller does not.`;
  return `Barged into call ${callId} with ${name}: the caller and ${name} both hear you.`;
}

function drawSupervision() {
  if (!consulting) setText("supervise-mode", modeWords());
  const stop = $("supervise-stop");
  if (stop) {
    stop.hidden = !supervising;
    stop.textContent = supervising ? `Stop (call ${supervising.callId})` : "Stop";
  }
  for (const group of document.querySelectorAll(".supervise-modes")) {
    const mine = supervising && String(supervising.callId) === group.dataset.callId;
    for (const choice of group.querySelectorAll("button[data-mode]")) {
      choice.setAttribute("aria-pressed", String(Boolean(mine && supervising.mode === choice.dataset.mode)));
    }
    // Not disabled while a request is under way (a disabled button drops the keyboard's focus): a
    // second press then is ignored, and the group says it is busy.
    group.setAttribute("aria-busy", String(busy));
  }
}

function superviseControls(callId, name) {
  const group = document.createElement("span");
  group.className = "supervise-modes";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Supervise ${name}'s call ${callId}`);
  group.dataset.callId = String(callId);
  for (const [mode, words] of MODES) {
    const choice = button(words, () => choose(callId, name, mode));
    choice.dataset.mode = mode;
    choice.dataset.focusKey = `supervise-${callId}-${mode}`;
    group.append(choice);
  }
  const parts = [group];
  if (supervising && supervising.callId === callId) {
    const stop = button("Stop", () => stopSupervising(), "danger small");
    stop.dataset.focusKey = `supervise-${callId}-stop`;
    stop.setAttribute("aria-label", `Stop supervising call ${callId}`);
    parts.push(stop);
  }
  // aria-pressed and disabled follow the state: drawSupervision runs after every redraw.
  return parts;
}

async function choose(callId, name, mode) {
  if (busy) return;
  if (!phone || !phone.ready) {
    say("Your softphone is not connected, so you would not hear the call. See its status above.");
    return;
  }
  if (supervising && supervising.callId === callId && supervising.mode === mode) return;
  busy = true;
  drawSupervision();
  try {
    if (supervising && supervising.callId !== callId) await leave();
    // Only a ring asked for now is answered; a switch of the leg already up rings nothing.
    askedAt = Date.now();
    const joined = await api("POST", `/api/calls/${callId}/listen`, { mode });
    if (!joined.rang) askedAt = 0;
    supervising = { callId, mode: joined.mode, name };
    say(joined.rang ? `Ringing your softphone into call ${callId}.` : `Now ${MODE_DONE[mode]} on call ${callId}.`);
  } catch (exc) {
    askedAt = 0;
    say(exc instanceof ApiError ? `Not done: ${exc.message}` : "Not done.");
  } finally {
    busy = false;
    drawActions();
    drawSupervision();
  }
}

const MODE_DONE = { listen: "listening", coach: "coaching", barge: "barged in" };

async function leave() {
  const { callId } = supervising;
  try {
    await api("DELETE", `/api/calls/${callId}/listen`);
  } catch (exc) {
    // Already gone (the call ended, or the leg dropped): nothing is left to take out.
    if (!(exc instanceof ApiError) || exc.status !== 409) throw exc;
  }
  supervising = null;
  askedAt = 0;
  if (phone && phone.inCall) phone.hangup();
}

async function stopSupervising() {
  if (busy || !supervising) return;
  busy = true;
  drawSupervision();
  const callId = supervising.callId;
  try {
    await leave();
    say(`Stopped supervising call ${callId}.`);
  } catch (exc) {
    say(exc instanceof ApiError ? `Not stopped: ${exc.message}` : "Not stopped.");
  } finally {
    busy = false;
    drawActions();
    drawSupervision();
  }
}

// Asks the service where our leg is (after the softphone's call ends, or the call itself does).
async function refreshSupervision() {
  if (!supervising || busy) return;
  const { callId } = supervising;
  try {
    const state = await api("GET", `/api/calls/${callId}/listen`);
    if (supervising && supervising.callId === callId && !state.mode) {
      supervising = null;
      say(`Your softphone has left call ${callId}.`);
    }
  } catch (exc) {
    // The page's connection banner says when the service cannot be reached; try again on the next change.
  }
  drawActions();
  drawSupervision();
}

function phoneChanged() {
  if (phone) {
    if (phoneWasInCall && !phone.inCall) refreshSupervision();
    phoneWasInCall = phone.inCall;
  }
  drawConsult();
  drawSupervision();
}

// A handler's request to join their call rings here; the supervisor answers or leaves it to ring out.

function drawConsult() {
  const ring = $("consult-ring");
  if (!ring) return; // the wallboard shares this script and has no softphone
  const ringing = Boolean(phone && phone.ringing);
  if (ring.hidden === ringing) {
    ring.hidden = !ringing;
    if (ringing) $("consult-answer").focus();
  }
  if (consulting && phone && !phone.call && !phone.ringing) consulting = false;
  if (!consulting) consultJoined = false;
  $("consult-hangup").hidden = !consulting;
  if (consulting) {
    setText("supervise-mode", consultJoined
      ? "In the call with the handler and the caller: the caller hears you."
      : "On a call a handler asked you into. The caller is on hold and does not hear you; you will be told here when the handler brings you in.");
  }
}

/** The handler brought this supervisor in to the caller, or sent them back (the service's "consult" event). */
function consultChanged(payload) {
  if (payload.state === "joined") consultJoined = true;
  if (payload.state === "returned" || payload.state === "left") consultJoined = false;
  drawConsult();
}

$("consult-answer")?.addEventListener("click", () => {
  if (!phone || !phone.ringing) return;
  consulting = true;
  phone.answer(phone.ringing);
});
$("consult-ignore")?.addEventListener("click", () => {
  if (phone && phone.ringing) phone.ignore(phone.ringing);
});
$("consult-hangup")?.addEventListener("click", () => {
  if (phone) phone.hangup();
});

$("supervise-stop")?.addEventListener("click", () => stopSupervising());

async function startSoftphone() {
  const status = $("softphone-status");
  try {
    const { Softphone } = await import("./softphone.js");
    phone = new Softphone({
      status,
      certificate: $("softphone-certificate"),
      // Only the call this page has just asked for: anything else is left ringing, never rejected.
      shouldAnswer: () => {
        const wanted = askedAt !== 0 && Date.now() - askedAt < ANSWER_WITHIN_MS && !phone.inCall;
        if (wanted) askedAt = 0;
        return wanted;
      },
      onChange: phoneChanged,
      onRing: () => drawConsult(),
    });
    await phone.start();
  } catch (exc) {
    if (status && !phone) status.textContent = "Your softphone could not be loaded; reload the page to try again.";
  }
  drawSupervision();
}

// ------------------------------------------------------------------ the connection

const events = {
  wallboard: drawBoard,
  consult: consultChanged,
  alert: (alert) => {
    showAlert(alert, true);
    if (lastBoard) {
      lastBoard.alerts = [alert, ...(lastBoard.alerts || [])];
      drawAlertList(lastBoard.alerts);
      setAlertCount(lastBoard.alerts.length);
    }
  },
};
if (live) {
  events.queue = (body) => {
    lastQueue = body;
    renderQueue($("queue-rows"), $("queue-summary"), body.calls);
    renderHandlers($("handlers"), $("handlers-summary"), body.handlers);
    drawQueueFigures(body);
    drawActions();
  };
}

if (live) startSoftphone();

// On every (re)connect the figures are fetched at once rather than waiting for the next push.
connect(root.dataset.namespace, $("connection"), events, () => {
  api("GET", "/api/supervisor/wallboard").then(drawBoard, () => {});
});
focusHeading();
