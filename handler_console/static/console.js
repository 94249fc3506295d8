// The call handler's console: presence, the live queue, offers that ring, the call in hand and
// wrap-up. State comes from GET /api/me on every (re)connect and from Socket.IO events on /console;
// actions go to the JSON API. Nothing is kept in the browser beyond what the API returned.
import {
  $, ApiError, answerLines, api, clock, connect, flagBadges, flagLabel, humanise, instant, needLabel, presenceLabel,
  keepAlive, renderHandlers, renderQueue, setLoginUrl, startTicker, tickFrom,
} from "./common.js";
import { OFFLINE, READY, Softphone } from "./softphone.js";

const root = $("console");
const config = {
  namespace: root.dataset.namespace,
  offerTimeoutS: Number(root.dataset.offerTimeoutS) || 20,
  wrapUpS: Number(root.dataset.wrapUpS) || 0,
  idleS: Number(root.dataset.idleS) || 1800,
};
setLoginUrl(root.dataset.loginUrl);

const state = {
  presence: "offline",
  presenceAt: null, // when the server made that presence (microseconds since the epoch), to order news
  offer: null, // {call_id, need, flags, waiting_s, offered_at, deadline (epoch ms)}
  accepting: false,
  // The last call offered in this tab, and the last accepted here: a tab that saw a call offered but
  // did not accept it (another tab of the same handler did) never lets its softphone take it.
  offeredHere: null,
  acceptedHere: null,
  call: null, // the accept response, plus startedAt (epoch ms)
  held: false,
  ending: false, // End call is on its way to the server
  consult: null, // {supervisor_id, name, joined} while a supervisor is asked into the call
  wrapUpOpen: false,
  wrapUpStart: null,
  busy: false, // a presence change or wrap-up is on its way to the server
  refreshing: false, // GET /api/me (and the call it names) is being read
};

// Presences in which the handler's own Available / Break / Offline choice does not apply.
const ENGAGED = new Set(["offered", "on_call", "wrap_up"]);
// On duty: waiting for or working a call. Only then does the console keep the session alive by itself;
// a handler on a break or offline who walks away is logged out after the idle limit.
const ON_DUTY = new Set(["available", "offered", "on_call", "wrap_up"]);

// What the API's error codes mean to a handler (routing.RoutingError messages included).
const ERRORS = {
  already_taken: "Another handler has already taken this call.",
  call_taken: "Another handler has already taken this call.",
  not_offered: "This call is no longer offered to you.",
  no_offer: "This call is no longer offered to you.",
  not_free: "You cannot take a call right now: your status has changed.",
  connect_failed: "We could not connect the caller to you. They are still in the queue; nobody was dropped.",
  not_your_call: "This call is no longer yours.",
  not_connected: "The caller is not connected to you (they may still be joining, or the call has ended).",
  handler_unreachable: "Your softphone did not take the call, so the caller is back at the head of the line and you are on a break.",
  no_such_supervisor: "That supervisor is not available; choose another.",
  consult_open: "A supervisor is already being asked into this call.",
  no_consult: "No supervisor is being asked into this call.",
  twilio_failed: "The phone network did not take the request; try again.",
  on_call: "Finish the call and its wrap-up first.",
  wrap_up: "Finish the wrap-up first.",
};

// Why an offer was taken back, when the handler did not do it themselves.
const WITHDRAWN = {
  abandoned: "The caller hung up before the call was answered.",
  timeout: "The offer timed out and went to the next handler; you are now on a break. Choose Available when you are ready.",
  disconnected: "The offer was passed on because your console lost its connection.",
  taken: "Another handler has already taken this call.",
};

// ------------------------------------------------------------------ notices

function notify(text) {
  $("notice-text").textContent = text;
  $("notice").hidden = false;
}

function clearNotice() {
  $("notice").hidden = true;
  $("notice-text").textContent = "";
}

function explain(exc) {
  if (exc instanceof ApiError) return ERRORS[exc.error] || exc.message;
  return String(exc);
}

// ------------------------------------------------------------------ the ring: a visual pulse and a short tone

const ringer = {
  context: null,
  timer: null,

  // Browsers only let a page make sound after the person has interacted with it, so the audio
  // context is created on the first click or key press (choosing Available is one).
  unlock() {
    if (this.context || !window.AudioContext) return;
    try {
      this.context = new AudioContext();
    } catch (exc) {
      this.context = null;
    }
  },

  beep() {
    const ctx = this.context;
    if (!ctx) return;
    if (ctx.state === "suspended") ctx.resume().catch(() => {});
    // Two soft notes, like a desk phone rather than an alarm: the callers are the ones in distress.
    [[660, 0], [880, 0.22]].forEach(([frequency, offset]) => {
      const start = ctx.currentTime + offset;
      const oscillator = ctx.createOscillator();
      const gain = ctx.createGain();
      oscillator.type = "sine";
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.12, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.2);
      oscillator.connect(gain).connect(ctx.destination);
      oscillator.start(start);
      oscillator.stop(start + 0.21);
    });
  },

  start() {
    if (this.timer) return;
    this.beep();
    this.timer = window.setInterval(() => this.beep(), 2500);
  },

  stop() {
    window.clearInterval(this.timer);
    this.timer = null;
  },
};

// ------------------------------------------------------------------ the softphone

// Twilio's Voice SDK in this tab (softphone.js). It answers only while `voice.expecting` is set, from
// pressing Accept until the call ends, so that a stray call, or one accepted in another tab, never rings here.
// A ring that comes before the page has first read whether it is on a call (just after a reload mid-call,
// when the service rings the handler back) waits for that read, then is answered or left to ring on.
let firstReadDone;
const firstRead = new Promise((resolve) => { firstReadDone = resolve; });
const voice = new Softphone({
  status: $("softphone-text"),
  certificate: $("softphone-link"),
  onChange: () => drawSoftphone(),
  onRing: (call) => firstRead.then(() => {
    if (voice.ringing !== call) return; // it stopped ringing meanwhile
    if (voice.expecting) voice.answer(call);
    else voice.ignore(call);
  }),
});

// ------------------------------------------------------------------ drawing

function showOnly(id) {
  for (const section of ["idle", "offer", "oncall"]) $(section).hidden = section !== id;
}

const IDLE = {
  available: ["Waiting for a call", "You are available. A call offered to you will ring here; keep this tab open."],
  break: ["On a break", "No calls will be offered to you. Choose Available when you are ready."],
  offline: ["You are offline", "Choose Available to start taking calls."],
  offered: ["A call is being offered to you", ""],
  on_call: ["On a call", "Loading the call…"],
  wrap_up: ["Wrapping up", "Loading the call…"],
};

/** The presence badge, how long it has held (from the server's time when known) and the status buttons. */
function drawPresence() {
  const badge = $("presence-now");
  badge.textContent = presenceLabel(state.presence);
  badge.dataset.presence = state.presence;
  tickFrom($("presence-for"), state.presenceAt === null ? Date.now() : Math.floor(state.presenceAt / 1000));
  for (const button of document.querySelectorAll("button[data-status]")) {
    button.setAttribute("aria-pressed", String(button.dataset.status === state.presence));
    button.disabled = state.busy || ENGAGED.has(state.presence);
  }
}

// While this tab is on a call its softphone is not yet in (just after Accept, or after a reload while the
// service rings the handler back, the caller on hold), the softphone says so rather than "ready".
const CONNECTING = "Connecting the call to this tab…";

function drawSoftphone() {
  const status = $("softphone-text");
  const settingUp = !voice.call || ["pending", "connecting"].includes(voice.call.status());
  if (state.call && state.presence === "on_call" && voice.expecting && voice.ready && settingUp) status.textContent = CONNECTING;
  else if (status.textContent === CONNECTING) status.textContent = voice.ready ? READY : OFFLINE;
}

function draw() {
  drawSoftphone();
  if (state.call) {
    drawCall();
    showOnly("oncall");
  } else if (state.offer) {
    drawOffer();
    showOnly("offer");
  } else {
    const [title, text] = IDLE[state.presence] || [presenceLabel(state.presence), ""];
    $("idle-title").textContent = title;
    $("idle-text").textContent = text;
    showOnly("idle");
  }
}

function drawOffer() {
  const offer = state.offer;
  $("offer-need").textContent = needLabel(offer.need);
  flagBadges($("offer-flags"), offer.flags);
  $("accept").disabled = state.accepting;
  $("decline").disabled = state.accepting;
  // A callback request rings the handler the same way; accepting it makes the service ring the caller.
  const callback = offer.kind === "callback";
  $("offer-title").textContent = state.accepting ? "Connecting…" : callback ? "Callback to make" : "Incoming call";
  $("offer").classList.toggle("ringing", !state.accepting);
  updateCountdown(Date.now());
}

function updateCountdown(now) {
  const offer = state.offer;
  if (!offer) return;
  const left = Math.max(0, (offer.deadline - now) / 1000);
  $("offer-countdown").textContent = String(Math.ceil(left));
  $("offer-bar").style.transform = `scaleX(${Math.min(1, left / offer.timeoutS)})`;
  // The server withdraws an expired offer; if that message is lost, do not ring forever.
  if (left <= 0 && !state.accepting && now - offer.deadline > 3000) {
    dropOffer();
    notify("The offer timed out.");
  }
}

function drawCall() {
  const call = state.call;
  const flags = call.flags || [];
  $("call-need").textContent = needLabel(call.need);
  const answers = answerLines(call.answers);
  $("call-answers").replaceChildren(...answers.map((line) => Object.assign(document.createElement("li"), { textContent: line })));
  $("call-answers").hidden = !answers.length;
  drawPrompts(flags);
  drawContacts(call.contacts);

  const wrapping = state.presence === "wrap_up" || state.wrapUpOpen;
  $("oncall-title").textContent = state.presence === "wrap_up" ? "Call ended: wrap up" : "On a call";
  $("hold").hidden = state.presence === "wrap_up";
  $("hold").disabled = state.presence !== "on_call";
  $("hold").setAttribute("aria-pressed", String(state.held));
  $("hold").firstChild.textContent = state.held ? "Resume " : "Hold ";
  $("hold-badge").hidden = !state.held || state.presence !== "on_call";
  const live = state.presence === "on_call";
  $("mute").hidden = !live;
  $("mute").setAttribute("aria-pressed", String(voice.muted));
  $("mute").firstChild.textContent = voice.muted ? "Unmute " : "Mute ";
  $("hangup").hidden = !live;
  $("hangup").disabled = state.ending;
  $("consult-open").hidden = !live;
  drawConsult(live);
  $("wrapup-open").hidden = wrapping;
  $("wrapup").hidden = !wrapping;
  if (wrapping) suggestOutcome();
  $("first-contact").dataset.callId = String(call.id);
  if (wrapping && $("wrapup-timer").dataset.tickStart === undefined) tickFrom($("wrapup-timer"), state.wrapUpStart ?? Date.now());
}

// Flags mean the phone menu could not confirm something; the handler must ask, by voice.
const PROMPTS = {
  self_referral_unconfirmed: "Confirm by voice that the caller is calling about their own health. "
    + "We can only take self-referrals; if it is about someone else, explain how that person can call us themselves.",
  eligibility_unconfirmed: "Confirm by voice that the caller is a doctor or dentist registered with the GMC or GDC "
    + "and working, or returning to practice, in England.",
};

function drawPrompts(flags) {
  const items = flags.map((flag) => {
    const item = document.createElement("p");
    item.className = "prompt";
    const title = document.createElement("strong");
    title.textContent = `${flagLabel(flag)}. `;
    item.append(title, PROMPTS[flag] || "Check this with the caller.");
    return item;
  });
  $("confirm-prompts").replaceChildren(...items);
}

const dateWords = (iso) => {
  const when = instant(iso);
  return when ? new Date(when).toLocaleDateString("en-GB", { day: "numeric", month: "short", year: "numeric" }) : "";
};

/** A returning caller's earlier contacts: dates, dispositions and booking status only, never notes. */
function drawContacts(contacts) {
  $("contacts-block").hidden = !contacts.length;
  $("call-contacts").replaceChildren(...contacts.map((contact) => {
    const parts = [dateWords(contact.date), humanise(contact.disposition)];
    const booking = contact.booking;
    if (booking) {
      parts.push(`booking ${humanise(booking.status).toLowerCase()} for ${dateWords(booking.date)}`
        + (booking.modality ? ` (${humanise(booking.modality).toLowerCase()})` : ""));
    }
    return Object.assign(document.createElement("li"), { textContent: parts.filter(Boolean).join(" · ") });
  }));
}

/** Fetch what this handler may know of the caller's earlier contacts, and show it beside the call. */
async function loadContacts(callId) {
  try {
    const reply = await api("GET", `/api/calls/${callId}/contact`);
    if (state.call && state.call.id === callId) {
      state.call.contacts = reply.earlier_contacts || [];
      drawContacts(state.call.contacts);
    }
  } catch (exc) {
    // Nothing to show is the safe default: a 403 here means this handler may not see them.
  }
}

// ------------------------------------------------------------------ state changes

/**
 * One shape for the call in hand, whether it came from accepting ({call_id, kind, conference,
 * ivr: {...}}) or from GET /api/calls/<id>/ivr after a reload (the ivr part alone).
 */
function callFrom(reply, fallback = {}) {
  const ivr = reply.ivr || reply;
  return {
    id: reply.call_id ?? ivr.call_id ?? fallback.call_id,
    kind: reply.kind ?? fallback.kind ?? "live",
    need: ivr.need ?? fallback.need ?? null,
    flags: ivr.flags ?? fallback.flags ?? [],
    answers: ivr.answers ?? {},
    contacts: [],
  };
}

/**
 * An ISO time from the server as microseconds since the epoch (null if missing), so that two changes
 * made within one millisecond still come out in order.
 */
function micros(iso) {
  const ms = instant(iso);
  if (ms === null) return null;
  const extra = /\.\d{3}(\d{1,3})/.exec(iso);
  return ms * 1000 + (extra ? Number(extra[1].padEnd(3, "0")) : 0);
}

// Moved to a break without asking: said on screen and with the ring's two notes, as the handler
// may not be looking (an offer that timed out, perhaps while the console's events could not reach it).
const MISSED_BREAK = "You missed a call, so you are now on a break. Choose Available when you are ready.";

/**
 * The server says the handler's presence is `presence` since `sinceIso`. Replies and Socket.IO events
 * travel separately and can cross: the reply to "Available" can arrive after the offer that going
 * available brought. News older than what the console already shows is ignored, and an offer is only
 * dropped by a change made after it.
 */
function setPresence(presence, sinceIso, reason) {
  const at = micros(sinceIso);
  if (at !== null && state.presenceAt !== null && at < state.presenceAt) {
    drawPresence(); // stale: only the buttons change, as the request that brought it is over
    return;
  }
  const since = at === null ? null : Math.floor(at / 1000);
  const previous = state.presence;
  state.presence = presence;
  state.presenceAt = at;
  const offerAt = state.offer ? micros(state.offer.offered_at) : null;
  const afterOffer = at === null || offerAt === null || at >= offerAt;
  if (presence !== "offered" && state.offer && !state.accepting && afterOffer) {
    // A missed offer sends the handler to a break; say why, since they did not choose it.
    dropOffer();
  }
  const unasked = presence === "break" && !state.busy && (previous === "offered" || previous === "available");
  if (unasked && afterOffer && (reason === "offer_missed" || reason === undefined)) {
    notify(MISSED_BREAK);
    ringer.beep();
  } else if (presence === "break" && reason === "handler_unreachable") {
    notify(ERRORS.handler_unreachable);
    ringer.beep();
  } else if (presence === "on_call" && previous !== "on_call") {
    clearNotice(); // a new call: what the last notice said (a missed offer, say) is over
  }
  if (presence === "wrap_up" && previous !== "wrap_up") {
    state.wrapUpStart = since ?? Date.now();
    state.held = false;
    state.consult = null;
    // The call is over, and whatever went wrong on it with it (a hold that failed, say).
    if (previous === "on_call") clearNotice();
    // Not by their own End call: say who ended it.
    if (reason === "caller_left") notify("The caller hung up. Wrap up the call when you are ready.");
    delete $("wrapup-timer").dataset.tickStart;
    // The call is over: its timer stops at the call's length, and the wrap-up timer takes over.
    delete $("call-timer").dataset.tickStart;
  }
  if (state.call && !ENGAGED.has(presence)) {
    // Wrap-up finished (here or when routing.wrap_up_s ran out): the handler is free again.
    endCall();
  }
  if (previous === "wrap_up" && reason === "wrap_up_timed_out") {
    // The form closed by itself: say why, and that the call went without an outcome.
    notify(`The wrap-up time (${clock(config.wrapUpS)}) ran out: the call was closed without an outcome, and you are ${
      presence === "available" ? "available for calls" : "offline"} again.`);
  }
  if ((presence === "on_call" || presence === "wrap_up") && !state.call && !state.accepting && !state.refreshing) {
    // Engaged but without the call's details (a reload, or the accept reply was lost): fetch them.
    refreshMe();
  }
  drawPresence();
  draw();
}

function setOffer(payload) {
  if (state.call) return; // already busy with a call; the server will withdraw it
  const sameOffer = state.offer && state.offer.call_id === payload.call_id;
  if (sameOffer && state.accepting) return; // re-sent while our accept is on its way
  const timeoutS = Number(payload.timeout_s) || config.offerTimeoutS;
  // The deadline is counted from arrival with the server's timeout_s; expires_at only shortens it
  // (an offer re-sent after a reconnect), so a browser clock that runs ahead cannot cut it short.
  let deadline = Date.now() + timeoutS * 1000;
  const expires = instant(payload.expires_at);
  if (expires && expires < deadline && expires > Date.now()) deadline = expires;
  if (sameOffer) deadline = Math.min(deadline, state.offer.deadline);
  state.offer = { ...payload, timeoutS, deadline };
  state.offeredHere = payload.call_id;
  state.accepting = false;
  draw();
  if (!sameOffer) {
    tickFrom($("offer-waited"), Date.now() - (Number(payload.waiting_s) || 0) * 1000);
    const flags = (payload.flags || []).map(flagLabel).join(", ");
    const what = { callback: "Callback to make", email: "Email request to answer" }[payload.kind] || "Incoming call";
    $("offer-announce").textContent = `${what}: ${needLabel(payload.need)}.${flags ? " " + flags + "." : ""} Press A to accept or D to decline.`;
    ringer.start();
    // Put the Accept button under the handler's hand, unless they are typing somewhere.
    if (!isTyping(document.activeElement)) $("accept").focus();
  }
}

function dropOffer() {
  state.offer = null;
  state.accepting = false;
  ringer.stop();
  $("offer").classList.remove("ringing");
  $("offer-announce").textContent = "";
  delete $("offer-waited").dataset.tickStart;
}

function drawConsult(live) {
  const panel = $("consult");
  if (!live) panel.hidden = true;
  $("consult-open").setAttribute("aria-expanded", String(!panel.hidden));
  const asking = state.consult && !state.consult.joined;
  $("consult-choose").hidden = Boolean(state.consult);
  $("consult-live").hidden = !state.consult;
  $("consult-join").hidden = !asking;
  $("consult-return").textContent = asking ? "Return to caller" : "Supervisor leaves the call";
  if (state.consult) {
    const name = state.consult.name;
    $("consult-status").textContent = !asking
      ? `${name} is in the call with you and the caller.`
      : state.consult.answered
        ? `You are talking to ${name} alone: the caller is on hold, hearing music.`
        : `The caller is on hold; ringing ${name}.`;
  }
}

/** The supervisor asked into the call answered, or left it (the service's "consult" event). */
function consultChanged(payload) {
  if (!state.call || state.call.id !== payload.call_id || !state.consult) return;
  if (payload.state === "answered") state.consult.answered = true;
  if (payload.state === "left") {
    const { name, joined } = state.consult;
    state.consult = null;
    $("consult").hidden = true;
    $("consult-status").textContent = "";
    // Left before being brought in: the caller is still on the hold the consult put them on, and
    // the Hold button now says so (pressing it resumes the call).
    if (!joined) state.held = true;
    notify(joined ? `${name} has left the call.`
      : `${name} left before joining you with the caller, who is still on hold: press Hold to resume.`);
  }
  draw();
}

function startCall(details, startedAt) {
  // This tab's softphone answers the call's legs if Accept was pressed here, or if it is picking the
  // call up again after a reload; a second tab that only watched the offer go never takes it.
  const watchedOnly = state.offeredHere === details.id && state.acceptedHere !== details.id;
  dropOffer();
  state.call = details;
  state.held = false;
  state.consult = null;
  state.wrapUpOpen = false;
  voice.expecting = !watchedOnly;
  tickFrom($("call-timer"), startedAt ?? Date.now());
  draw();
  loadContacts(details.id);
  $("oncall-title").focus();
  document.dispatchEvent(new CustomEvent("helpline:call", { detail: { call: details } }));
}

function endCall() {
  state.call = null;
  state.held = false;
  state.consult = null;
  state.ending = false;
  $("consult").hidden = true;
  $("consult-status").textContent = "";
  // Whatever went wrong during the call is over with it.
  clearNotice();
  state.wrapUpOpen = false;
  state.wrapUpStart = null;
  voice.expecting = false;
  $("wrapup").reset();
  $("wrapup-error").textContent = "";
  delete $("call-timer").dataset.tickStart;
  delete $("wrapup-timer").dataset.tickStart;
  $("first-contact").dataset.callId = "";
  document.dispatchEvent(new CustomEvent("helpline:call", { detail: { call: null } }));
  // Focus goes back to the status line so keyboard users are not left on a hidden button.
  window.setTimeout(() => $("idle-title").focus(), 0);
}

/** Re-read who I am, my presence, and any offer or call in hand: on load and every reconnect. */
async function refreshMe() {
  if (state.refreshing) return;
  state.refreshing = true;
  try {
    await readMe();
  } finally {
    state.refreshing = false;
    firstReadDone();
  }
}

async function readMe() {
  let me;
  try {
    me = await api("GET", "/api/me");
  } catch (exc) {
    notify(`Could not load your status: ${explain(exc)}`);
    return;
  }
  const since = instant(me.since);
  if (me.call_id && (!state.call || state.call.id !== me.call_id)) {
    // A reload (or a reconnect after the accept reply was lost) mid-call: fetch what the caller said.
    try {
      const ivr = await api("GET", `/api/calls/${me.call_id}/ivr`);
      // On a call, presence changed to on_call when the handler accepted: that is when the call began.
      startCall(callFrom(ivr), me.presence === "on_call" ? since : null);
      if (me.presence === "wrap_up") {
        // The call's length is not known after a reload during wrap-up; say so rather than show 0:00.
        delete $("call-timer").dataset.tickStart;
        $("call-timer").textContent = "–";
      }
    } catch (exc) {
      notify(`Could not load the call: ${explain(exc)}`);
    }
  } else if (!me.call_id && state.call && !ENGAGED.has(me.presence)) {
    endCall();
  }
  if (me.offer && !state.call) setOffer(me.offer);
  setPresence(me.presence, me.since);
}

// ------------------------------------------------------------------ actions

async function choosePresence(status) {
  if (state.busy || ENGAGED.has(state.presence) || status === state.presence) return;
  state.busy = true;
  drawPresence();
  try {
    const reply = await api("POST", "/api/me/status", { status });
    state.busy = false;
    clearNotice(); // chosen: a notice about the status the service set for them is over
    setPresence(reply.presence, reply.since, "chosen");
  } catch (exc) {
    state.busy = false;
    drawPresence();
    notify(`Could not change your status: ${explain(exc)}`);
  }
}

async function accept() {
  const offer = state.offer;
  if (!offer || state.accepting) return;
  state.accepting = true;
  state.acceptedHere = offer.call_id;
  voice.expecting = offer.kind !== "email"; // an email request rings nobody

  ringer.stop();
  draw();
  try {
    startCall(callFrom(await api("POST", `/api/calls/${offer.call_id}/accept`), offer));
  } catch (exc) {
    voice.expecting = false;
    if (exc instanceof ApiError && exc.status === 409) {
      dropOffer();
    } else {
      state.accepting = false;
      ringer.start();
    }
    notify(explain(exc));
    draw();
  }
}

async function decline() {
  const offer = state.offer;
  if (!offer || state.accepting) return;
  dropOffer();
  draw();
  try {
    await api("POST", `/api/calls/${offer.call_id}/decline`);
  } catch (exc) {
    // A 409 means the offer had already gone; nothing for the handler to do.
    if (!(exc instanceof ApiError && exc.status === 409)) notify(`Could not decline: ${explain(exc)}`);
  }
}

async function toggleHold() {
  if (!state.call || state.presence !== "on_call") return;
  const hold = !state.held;
  $("hold").disabled = true;
  try {
    await api("POST", `/api/calls/${state.call.id}/hold`, { hold });
    state.held = hold;
  } catch (exc) {
    notify(`Could not ${hold ? "hold" : "resume"} the call: ${explain(exc)}`);
  }
  draw();
}

/** Mute or unmute this tab's microphone on the call (the caller's side is not touched). */
function toggleMute() {
  if (!state.call || state.presence !== "on_call") return;
  voice.mute(!voice.muted);
  draw();
}

/** End the call for everyone: the service completes it at Twilio, then the wrap-up form opens. */
async function endCallNow() {
  if (!state.call || state.presence !== "on_call" || state.ending) return;
  state.ending = true;
  draw();
  try {
    const reply = await api("POST", `/api/calls/${state.call.id}/hangup`);
    clearNotice();
    voice.hangup();
    setPresence(reply.presence, reply.since, "chosen");
    state.ending = false;
    openWrapUp();
  } catch (exc) {
    state.ending = false;
    notify(`Could not end the call: ${explain(exc)}`);
    draw();
  }
}

async function openConsult() {
  if (!state.call || state.presence !== "on_call") return;
  const panel = $("consult");
  panel.hidden = !panel.hidden;
  draw();
  if (panel.hidden || state.consult) return;
  const select = $("consult-supervisor");
  select.replaceChildren();
  $("consult-status").textContent = "Finding the supervisors on duty…";
  try {
    const { supervisors } = await api("GET", "/api/supervisors/available");
    for (const person of supervisors) select.append(new Option(person.name, String(person.id)));
    $("consult-start").disabled = supervisors.length === 0;
    $("consult-status").textContent = supervisors.length ? "" : "No supervisor is on duty.";
    if (supervisors.length) select.focus();
  } catch (exc) {
    $("consult-status").textContent = `Could not list the supervisors: ${explain(exc)}`;
  }
}

async function startConsult() {
  const select = $("consult-supervisor");
  if (!state.call || !select.value) return;
  $("consult-start").disabled = true;
  try {
    await api("POST", `/api/calls/${state.call.id}/consult`, { supervisor_id: Number(select.value) });
    state.consult = { supervisor_id: Number(select.value), name: select.selectedOptions[0].textContent, joined: false };
    state.held = false; // the consult holds the caller by itself; Resume is not theirs to press meanwhile
    draw();
    $("consult-join").focus();
  } catch (exc) {
    notify(`Could not ask the supervisor: ${explain(exc)}`);
  } finally {
    $("consult-start").disabled = false;
  }
}

async function finishConsult(join) {
  if (!state.call || !state.consult) return;
  const button = join ? $("consult-join") : $("consult-return");
  button.disabled = true;
  try {
    await api("POST", `/api/calls/${state.call.id}/consult/${join ? "join" : "return"}`);
    if (join) {
      state.consult.joined = true;
    } else {
      state.consult = null;
      $("consult").hidden = true;
      $("consult-status").textContent = "";
    }
    draw();
  } catch (exc) {
    notify(`Could not ${join ? "bring the supervisor into the call" : "return to the caller"}: ${explain(exc)}`);
  } finally {
    button.disabled = false;
  }
}

/**
 * Pre-select the outcome that follows from what happened (booked, about someone else...), as the
 * first-contact form reports it in data-outcome; the handler confirms or changes it.
 */
function suggestOutcome() {
  const form = $("wrapup");
  const suggested = $("first-contact").dataset.outcome;
  if (!suggested || form.querySelector("input[name=outcome]:checked")) return;
  const input = form.querySelector(`input[name=outcome][value="${suggested}"]`);
  if (input) input.checked = true;
}

function openWrapUp() {
  if (!state.call) return;
  if (!state.wrapUpOpen && state.presence !== "wrap_up") {
    state.wrapUpOpen = true;
    state.wrapUpStart = Date.now();
    draw();
  }
  const form = $("wrapup");
  form.scrollIntoView({ block: "nearest" });
  (form.querySelector("input[name=outcome]:checked") || form.querySelector("input[name=outcome]")).focus();
}

async function finishWrapUp(event) {
  event.preventDefault();
  if (!state.call || state.busy) return;
  const form = $("wrapup");
  const outcome = form.elements.outcome.value;
  if (!outcome) {
    $("wrapup-error").textContent = "Choose the outcome of the call.";
    form.querySelector("input[name=outcome]").focus();
    return;
  }
  state.busy = true;
  $("wrapup-submit").disabled = true;
  $("wrapup-error").textContent = "";
  try {
    const reply = await api("POST", `/api/calls/${state.call.id}/wrap-up`, { outcome });
    state.busy = false;
    endCall();
    setPresence(reply.presence, reply.since, "chosen");
  } catch (exc) {
    state.busy = false;
    $("wrapup-error").textContent = `Could not finish wrap-up: ${explain(exc)}`;
  } finally {
    $("wrapup-submit").disabled = false;
  }
}

// ------------------------------------------------------------------ keyboard

/** Whether a key pressed on `target` belongs to what the handler is filling in: any field, and
 * anything inside a form (the record, the risk screen, a booking, the wrap-up). A handler who has
 * just chosen a radio button and types on is writing down what the caller said: a letter there
 * must never hold, mute or end the call. */
function isFillingIn(target) {
  if (!target || !target.closest) return false;
  if (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return true;
  return Boolean(target.closest("form"));
}

/** Whether `target` takes typed text (where moving the focus away would lose what is being typed). */
function isTyping(target) {
  if (!target) return false;
  if (target.isContentEditable || target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
  return target.tagName === "INPUT" && !["radio", "checkbox", "button", "submit", "reset"].includes(target.type);
}

/** End the call from the keyboard only once the handler has said so: a stray E must not cut off a caller. */
function endCallAsked() {
  if (!state.call || state.presence !== "on_call" || state.ending) return;
  if (window.confirm("End the call with the caller?")) endCallNow();
}

const SHORTCUTS = { a: accept, d: decline, e: endCallAsked, h: toggleHold, m: toggleMute, w: openWrapUp };

function onKey(event) {
  if (event.ctrlKey || event.metaKey || event.altKey || event.repeat || isFillingIn(event.target)) return;
  const action = SHORTCUTS[event.key.toLowerCase()];
  if (!action) return;
  event.preventDefault();
  action();
}

// ------------------------------------------------------------------ start

function start() {
  for (const button of document.querySelectorAll("button[data-status]")) {
    button.addEventListener("click", () => choosePresence(button.dataset.status));
  }
  $("accept").addEventListener("click", accept);
  $("decline").addEventListener("click", decline);
  $("hold").addEventListener("click", toggleHold);
  $("mute").addEventListener("click", toggleMute);
  $("hangup").addEventListener("click", endCallNow);
  $("consult-open").addEventListener("click", openConsult);
  $("consult-start").addEventListener("click", startConsult);
  $("consult-join").addEventListener("click", () => finishConsult(true));
  $("consult-return").addEventListener("click", () => finishConsult(false));
  $("wrapup-open").addEventListener("click", openWrapUp);
  $("wrapup").addEventListener("submit", finishWrapUp);
  $("notice-close").addEventListener("click", clearNotice);
  document.addEventListener("keydown", onKey);
  for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, () => ringer.unlock(), { capture: true });
  if (config.wrapUpS) $("wrapup-limit").textContent = `(limit ${clock(config.wrapUpS)})`;

  startTicker(updateCountdown);
  const socket = connect(config.namespace, $("connection"), {
    queue: (body) => {
      renderQueue($("queue-rows"), $("queue-summary"), body.calls);
      renderHandlers($("handlers"), $("handlers-summary"), body.handlers);
    },
    offer: setOffer,
    offer_withdrawn: (payload) => {
      if (!state.offer || state.offer.call_id !== payload.call_id || state.accepting) return;
      dropOffer();
      if (WITHDRAWN[payload.reason]) notify(WITHDRAWN[payload.reason]);
      draw();
    },
    presence: (payload) => setPresence(payload.presence, payload.since, payload.reason),
    consult: consultChanged,
    connect_failed: (payload) => {
      if (state.offer && state.offer.call_id === payload.call_id) dropOffer();
      if (state.call && state.call.id === payload.call_id) endCall();
      voice.expecting = false;
      notify(ERRORS.connect_failed + (payload.detail ? ` (${payload.detail})` : ""));
      draw();
    },
  }, refreshMe);
  keepAlive(socket, () => ON_DUTY.has(state.presence), config.idleS);
  voice.start();
}

start();
