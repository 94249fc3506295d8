// The supervisor's live pages, on one Socket.IO connection: the live view (/supervisor: queue,
// handlers, today's figures, actions) and the wall screen (/supervisor/wallboard: huge figures).
// `queue` redraws the line and the handlers; `wallboard` redraws the figures (pushed on every
// change and every few seconds); `alert` is a risk alert, shown at once, with a sound and a flash.
import { $, ApiError, api, clock, connect, renderHandlers, renderQueue, setLoginUrl, startTicker } from "./common.js";

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
  const presence = board.handlers || {};
  // The live view's figures.
  setText("fig-sl20", pct(today.service_level_20s));
  setText("fig-sl60", pct(today.service_level_60s));
  setText("fig-abandoned", pct(today.abandonment_rate));
  setText("fig-answer", seconds(today.avg_answer_s));
  setText("fig-handle", seconds(today.avg_handle_s));
  setText("fig-callbacks", String(board.callbacks_due));
  // The wall screen's.
  setText("wb-waiting", String(board.waiting));
  longestSince = board.waiting ? Date.now() - board.longest_wait_s * 1000 : null;
  setText("wb-available", String(presence.available || 0));
  setText("wb-oncall", String((presence.on_call || 0) + (presence.wrap_up || 0) + (presence.offered || 0)));
  setText("wb-away", `${presence.break || 0} · ${presence.offline || 0}`);
  setText("wb-sl20", pct(today.service_level_20s));
  setText("wb-sl60", pct(today.service_level_60s));
  setText("wb-abandoned", pct(today.abandonment_rate));
  setText("wb-answer", seconds(today.avg_answer_s));
  setText("wb-handle", seconds(today.avg_handle_s));
  setText("wb-callbacks", String(board.callbacks_due));
  setText("wb-answered", `${today.answered || 0} · ${today.calls || 0}`);
  setAlertCount((board.alerts || []).length);
  setText("wb-updated", new Date(board.at).toLocaleTimeString("en-GB"));
  const waitingTile = $("wb-waiting")?.closest(".wb-tile");
  if (waitingTile) waitingTile.dataset.level = board.waiting === 0 ? "ok" : board.longest_wait_s > 60 ? "bad" : "warn";
  const longestTile = $("wb-longest")?.closest(".wb-tile");
  if (longestTile) longestTile.dataset.level = board.longest_wait_s > 60 ? "bad" : board.longest_wait_s > 20 ? "warn" : "ok";
  for (const alert of board.alerts || []) showAlert(alert, false);
  drawAlertList(board.alerts || []);
  if (live) drawActions();
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
  return `Immediate risk: call ${alert.call_id} with ${who}, ${when}`;
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
    const pick = document.createElement("select");
    pick.setAttribute("aria-label", `Offer call ${callId} to`);
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
    if (call && call.presence === "on_call") {
      controls.append(
        button("Listen", () => act("POST", `/api/calls/${call.call_id}/listen`, { mode: "listen" }, `Ringing your softphone to listen to call ${call.call_id}.`)),
        button("Coach", () => act("POST", `/api/calls/${call.call_id}/listen`, { mode: "coach" }, `Ringing your softphone to coach ${handler.name}.`)),
      );
    }
    item.querySelector(".handler-actions")?.remove();
    item.append(controls);
  });
}

// ------------------------------------------------------------------ the connection

const events = {
  wallboard: drawBoard,
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

// On every (re)connect the figures are fetched at once rather than waiting for the next push.
connect(root.dataset.namespace, $("connection"), events, () => {
  api("GET", "/api/supervisor/wallboard").then(drawBoard, () => {});
});
