// Dev phone: a caller and a handler softphone driving the emulator's /emulator/ control API.
// Plain JavaScript, no build step; everything is long-polling so no websocket is needed.
"use strict";

const $ = (id) => document.getElementById(id);
const KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "*", "0", "#"];

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((data.error || response.status) + ": " + (data.detail || ""));
  return data;
}

function describe(e, who) {
  switch (e.kind) {
    case "say": return `IVR: "${e.text}"` + (e.loop === 0 ? " (repeating)" : e.loop > 1 ? ` (x${e.loop})` : "");
    case "play": return e.digits ? `tones ${e.digits}` : e.hold_music ? "♪ hold music" : `♪ ${e.url}`;
    case "pause": return `(pause ${e.length}s)`;
    case "gather.started": {
      const what = (e.input || "").includes("speech") ? "keys or words: type them under the keypad and press Say" : "keys";
      return `… listening for ${what} (timeout ${e.timeout}s${e.num_digits ? ", up to " + e.num_digits + " key(s)" : ""})`;
    }
    case "gather.ended":
      if (e.speech) return `… heard "${e.speech}"`;
      return e.digits ? `… got keys ${e.digits}` : `… no keys (${e.reason})`;
    case "digits": return `${who} pressed ${e.digits}` + (e.heard_by ? "" : " (nobody listening)");
    case "enqueued": return `queued in "${e.queue}" at position ${e.position}`;
    case "queue.wait": return `in queue: position ${e.position} of ${e.size}, waited ${e.queue_time}s`;
    case "queue.left": return `left queue: ${e.result}`;
    case "dial.started": return `dialling ${e.queue || (e.to || []).join(", ")}`;
    case "dial.ended": return `dial ended: ${e.DialCallStatus}`;
    case "bridged": return `connected to ${e.party}`;
    case "unbridged": return "disconnected from the other party";
    case "heard": return `${e.party}: "${e.text}"`;
    case "spoke": return `you: "${e.text}"`;
    case "conference.joined": return `joined conference "${e.conference}" (${e.status})`;
    case "conference.left": return `left conference "${e.conference}"`;
    case "alert": return `ALERT ${e.code} ${e.message}: ${e.detail}`;
    case "redirected": return `redirected to ${e.url}`;
    case "incoming": return `incoming call from ${e.from}`;
    case "status": return `[${e.status}]`;
    case "rejected": return `rejected (${e.reason})`;
    case "ended": return `call ended: ${e.status} (${e.reason}) after ${e.duration}s`;
    case "webhook": return `→ ${e.method} ${e.url}`;
    default: return null;
  }
}

function appendLine(list, event, who) {
  const text = describe(event, who);
  if (!text) return;
  const li = document.createElement("li");
  li.textContent = text;
  li.className = "ev-" + event.kind.split(".")[0];
  list.appendChild(li);
  list.scrollTop = list.scrollHeight;
}

function speak(text) {
  if (!$("speak").checked || !("speechSynthesis" in window)) return;
  window.speechSynthesis.speak(new SpeechSynthesisUtterance(text));
}

function buildKeypad(container, onKey) {
  for (const key of KEYS) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = key;
    button.addEventListener("click", () => onKey(key));
    container.appendChild(button);
  }
}

// ---------------------------------------------------------------- caller's audio
// The caller's microphone goes to the emulator over WebRTC, and what the emulator mixes for this leg
// (the handler's softphone, a supervisor who barges in, hold tones) comes back to the speaker.

function gathered(pc, timeoutMs) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete") return;
      pc.removeEventListener("icegatheringstatechange", done);
      resolve();
    };
    pc.addEventListener("icegatheringstatechange", done);
    setTimeout(resolve, timeoutMs); // the candidates gathered so far are enough on one machine
  });
}

async function startAudio(sid) {
  const note = $("caller-audio-status");
  if (!$("caller-mic").checked) {
    note.textContent = "Audio off: the call is text only.";
    return;
  }
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && window.RTCPeerConnection)) {
    note.textContent = "This browser cannot send audio from this page (it needs http://127.0.0.1 or https).";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const pc = new RTCPeerConnection({ iceServers: [] });
    caller.audio = { pc, stream };
    stream.getTracks().forEach((track) => pc.addTrack(track, stream));
    pc.addEventListener("track", (event) => {
      $("caller-speaker").srcObject = event.streams[0] || new MediaStream([event.track]);
    });
    pc.addEventListener("connectionstatechange", () => {
      note.textContent = pc.connectionState === "connected" ? "Audio: microphone and speaker connected."
        : `Audio: ${pc.connectionState}.`;
    });
    await pc.setLocalDescription(await pc.createOffer());
    await gathered(pc, 1500);
    if (caller.sid !== sid) return stopAudio();
    const reply = await api("POST", `/emulator/calls/${sid}/media`, { sdp: pc.localDescription.sdp });
    await pc.setRemoteDescription({ type: "answer", sdp: reply.sdp });
    note.textContent = "Audio: connecting…";
  } catch (err) {
    stopAudio();
    note.textContent = "No audio (" + (err.message || err) + "); the call goes on as text.";
  }
}

function stopAudio() {
  if (!caller.audio) return;
  caller.audio.pc.close();
  caller.audio.stream.getTracks().forEach((track) => track.stop());
  caller.audio = null;
  $("caller-speaker").srcObject = null;
}

// ---------------------------------------------------------------- caller

const caller = { sid: null, after: 0, generation: 0, audio: null };
// For the browser tests: the caller's peer connection, to read its statistics.
window.devphone = { caller };

function setCallerConnected(live) {
  $("dial").disabled = live;
  $("caller-hangup").disabled = !live;
  $("caller-text").disabled = !live;
  $("caller-talk").querySelector("button").disabled = !live;
}

async function followCaller(generation) {
  while (caller.generation === generation && caller.sid) {
    let page;
    try {
      page = await api("GET", `/emulator/calls/${caller.sid}/events?after=${caller.after}&wait=20`);
    } catch (err) {
      $("caller-status").textContent = "Lost the emulator: " + err.message;
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    for (const event of page.events) {
      caller.after = event.seq;
      appendLine($("caller-transcript"), event, "you");
      if (event.kind === "say") speak(event.text);
      if (event.kind === "heard") speak(event.text);
      if (event.kind === "status") $("caller-status").textContent = "Call " + event.status;
      if (event.kind === "bridged") $("caller-status").textContent = "Talking to " + event.party;
      if (event.kind === "ended") {
        $("caller-status").textContent = `Ended: ${event.status} (${event.reason})`;
        setCallerConnected(false);
        caller.sid = null;
        stopAudio();
        $("caller-audio-status").textContent = "";
        return;
      }
    }
  }
}

$("dial").addEventListener("click", async () => {
  const from = $("caller-withheld").checked ? "anonymous" : $("caller-id").value.trim();
  $("caller-transcript").innerHTML = "";
  try {
    const call = await api("POST", "/emulator/calls", { from });
    caller.sid = call.sid;
    caller.after = 0;
    caller.generation += 1;
    $("caller-status").textContent = "Calling… " + call.sid;
    setCallerConnected(true);
    followCaller(caller.generation);
    startAudio(call.sid);
  } catch (err) {
    $("caller-status").textContent = "Could not call: " + err.message;
  }
});

$("caller-hangup").addEventListener("click", async () => {
  if (caller.sid) await api("POST", `/emulator/calls/${caller.sid}/hangup`).catch(() => {});
  if ("speechSynthesis" in window) window.speechSynthesis.cancel();
});

buildKeypad($("caller-keypad"), async (key) => {
  if (!caller.sid) return;
  if ("speechSynthesis" in window) window.speechSynthesis.cancel(); // a key press barges in
  await api("POST", `/emulator/calls/${caller.sid}/digits`, { digits: key }).catch(() => {});
});

$("caller-talk").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("caller-text").value.trim();
  if (!text || !caller.sid) return;
  $("caller-text").value = "";
  await api("POST", `/emulator/calls/${caller.sid}/say`, { text }).catch(() => {});
});

// ---------------------------------------------------------------- handler device

const device = { kind: null, name: null, after: 0, generation: 0, callSid: null };

function devicePath() {
  return `/emulator/${device.kind}/${encodeURIComponent(device.name)}`;
}

function setDeviceState(state, text) {
  $("device-status").textContent = text;
  $("ringing").hidden = state !== "ringing";
  const live = state === "connected";
  $("device-hangup").disabled = !(live || state === "ringing");
  $("device-text").disabled = !live;
  $("device-talk").querySelector("button").disabled = !live;
}

async function followDevice(generation) {
  while (device.generation === generation) {
    let page;
    try {
      page = await api("GET", `${devicePath()}/events?after=${device.after}&wait=20`);
    } catch (err) {
      setDeviceState("offline", "Lost the emulator: " + err.message);
      await new Promise((r) => setTimeout(r, 1000));
      continue;
    }
    for (const event of page.events) {
      device.after = event.seq;
      appendLine($("device-transcript"), event, "you");
      if (event.kind === "incoming") {
        device.callSid = event.call_sid;
        $("ringing-text").textContent = `Incoming call from ${event.from}`;
        setDeviceState("ringing", "Ringing…");
      } else if (event.kind === "answered" || event.kind === "bridged") {
        setDeviceState("connected", event.party ? "Talking to " + event.party : "Connected");
      } else if (event.kind === "say" || event.kind === "heard") {
        speak(event.text);
      } else if (event.kind === "ended") {
        device.callSid = null;
        setDeviceState("idle", `Online as ${device.name} — last call ${event.status}`);
      }
    }
  }
}

$("register").addEventListener("click", async () => {
  device.kind = $("device-kind").value;
  device.name = $("device-name").value.trim();
  if (!device.name) return;
  try {
    const state = await api("POST", `${devicePath()}/register`, {});
    device.after = state.last_seq;
    device.generation += 1;
    $("device-transcript").innerHTML = "";
    setDeviceState("idle", `Online as ${state.key}`);
    followDevice(device.generation);
  } catch (err) {
    setDeviceState("offline", "Could not register: " + err.message);
  }
});

$("answer").addEventListener("click", () => api("POST", `${devicePath()}/answer`).catch((err) => {
  $("device-status").textContent = err.message;
}));
$("reject").addEventListener("click", () => api("POST", `${devicePath()}/reject`).catch(() => {}));
$("device-hangup").addEventListener("click", () => api("POST", `${devicePath()}/hangup`).catch(() => {}));

buildKeypad($("device-keypad"), async (key) => {
  if (!device.name) return;
  await api("POST", `${devicePath()}/digits`, { digits: key }).catch(() => {});
});

$("device-talk").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("device-text").value.trim();
  if (!text || !device.name) return;
  $("device-text").value = "";
  await api("POST", `${devicePath()}/say`, { text }).catch(() => {});
});

// ---------------------------------------------------------------- outbox and alerts

async function followList(path, key, list, render) {
  let after = 0;
  for (;;) {
    try {
      const page = await api("GET", `${path}?after=${after}&wait=20`);
      for (const item of page[key]) {
        after = item.seq;
        const li = document.createElement("li");
        render(li, item);
        list.appendChild(li);
        list.scrollTop = list.scrollHeight;
      }
    } catch (err) {
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
}

followList("/emulator/messages", "messages", $("outbox"), (li, m) => {
  li.textContent = `To ${m.to} from ${m.from}: ${m.body}`;
});
followList("/emulator/mail", "mail", $("mailbox"), (li, m) => {
  const head = document.createElement("strong");
  head.textContent = `To ${m.to.join(", ")}: ${m.subject}`;
  const text = document.createElement("pre");
  text.className = "mail-body";
  text.textContent = m.body;
  li.append(head, text);
});
followList("/emulator/alerts", "alerts", $("alerts"), (li, a) => {
  li.textContent = `${a.code} ${a.message}: ${a.detail}` + (a.call_sid ? ` [${a.call_sid.slice(0, 10)}…]` : "");
  li.className = "level-" + a.level;
});

setCallerConnected(false);
setDeviceState("offline", "Offline — go online to take calls");
