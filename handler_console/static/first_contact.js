// The first-contact form, risk screen and booking for the call in hand (see _first_contact.html).
// It follows the call id in <section id="first-contact" data-call-id>, and the helpline:call and
// helpline:call-accepted events ({detail: {call_id}}). Each field saves itself as it is typed: only
// the changed fields are sent, and a save that fails for the network is retried until it lands.
// Unsaved changes live in this page's memory only, never in browser storage (personal data).

import { api } from "./common.js";
import { questionnairePanel } from "./questionnaires.js";

const root = document.getElementById("first-contact");
const box = document.getElementById("fc");
const SAVE_AFTER_MS = 500;
const RETRY_MAX_MS = 30000;
const BOOLEAN_RADIOS = new Set(["about_self", "trainee", "ok_to_text", "ok_to_leave_voicemail", "consent_to_keep", "workplace_agreed"]);
const PHONES = ["phone", "phone_alt"];
const LEVELS = { none: "None identified", low: "Low", moderate: "Moderate", immediate: "IMMEDIATE" };
const SMS = {
  sent: "A confirmation text was sent.",
  not_agreed: "No text sent: the caller did not agree to texts.",
  no_mobile: "No text sent: no mobile number.",
  held: "The confirmation text will be sent when the caller's safe hours begin.",
  failed: "The confirmation text could not be sent; tell the caller the details now.",
};

if (root && box) {
  const form = document.getElementById("fc-form");
  const saved = document.getElementById("fc-saved");
  let callId = null;
  let pending = {};
  let inFlight = null;
  let timer = null;
  let retryMs = 2000;
  let lastSearch = null;
  let booking = null;
  let avoid = [];  // the caller's declared conflicts: [{kind, id}]
  const choices = new Map();  // "Dr A Name (psychiatrist)" -> {kind, id}, for the avoid box
  const choiceNames = new Map();  // "clinician:3" -> its words

  // The wrap-up outcome that follows from what happened on this call (console.js pre-selects it).
  const TRIAGE_OUTCOMES = { signposted: "signposted", self_help: "advice_given", advice_given: "advice_given" };
  let signposted = false;

  function suggestOutcome() {
    let outcome = "";
    if (valueOf("about_self") === false) outcome = "third_party";
    else if (booking && booking.status === "booked") outcome = "booked";
    else if (signposted) outcome = "signposted";
    else outcome = TRIAGE_OUTCOMES[valueOf("triage")] || "";
    root.dataset.outcome = outcome;
  }

  // ---------------------------------------------------------------- reading and writing fields

  function valueOf(name) {
    if (name === "avoid") return avoid.map(({ kind, id }) => ({ kind, id }));
    const inputs = form.querySelectorAll(`[name="${name}"]`);
    const first = inputs[0];
    if (first.type === "checkbox") return [...inputs].filter((input) => input.checked).map((input) => input.value);
    if (first.type === "radio") {
      const checked = [...inputs].find((input) => input.checked);
      if (!checked) return null;
      return BOOLEAN_RADIOS.has(name) ? checked.value === "true" : checked.value;
    }
    const text = first.value.trim();
    return text === "" ? null : text;
  }

  function fill(fields, shown = {}) {
    form.reset();
    avoid = Array.isArray(fields.avoid) ? fields.avoid : [];
    drawAvoid();
    for (const element of form.elements) {
      if (!element.name || element.name === "avoid" || !(element.name in fields)) continue;
      const value = fields[element.name];
      if (element.type === "checkbox") element.checked = Array.isArray(value) && value.includes(element.value);
      else if (element.type === "radio") element.checked = String(value) === element.value;
      else element.value = shown[element.name] ?? value ?? "";
    }
  }

  function showErrors(problems) {
    for (const problem of problems) {
      const field = problem.field.split(".")[0];  // needs.0 is an item of needs
      const slot = form.querySelector(`[data-error-for="${field}"]`);
      if (slot) slot.textContent = problem.problem;
      form.querySelectorAll(`[name="${field}"]`).forEach((input) => {
        input.classList.add("invalid");
        input.setAttribute("aria-invalid", "true");
      });
    }
  }

  function clearError(name) {
    const slot = form.querySelector(`[data-error-for="${name}"]`);
    if (slot) slot.textContent = "";
    form.querySelectorAll(`[name="${name}"]`).forEach((input) => {
      input.classList.remove("invalid");
      input.removeAttribute("aria-invalid");
    });
  }

  function status(text, state = "ok") {
    saved.textContent = text;
    saved.dataset.state = state;
  }

  function lockDetails(thirdParty) {
    document.getElementById("fc-details").classList.toggle("fc-details-locked", thirdParty);
    document.getElementById("fc-book").hidden = thirdParty;
  }

  // ---------------------------------------------------------------- saving as the handler types

  function queue(name) {
    if (!callId) return;
    pending[name] = valueOf(name);
    clearError(name);
    clearTimeout(timer);
    timer = setTimeout(save, SAVE_AFTER_MS);
    status("Saving…");
  }

  async function save() {
    clearTimeout(timer);
    if (inFlight) return inFlight;
    if (!callId || Object.keys(pending).length === 0) return null;
    const sending = pending;
    const forCall = callId;
    pending = {};
    inFlight = (async () => {
      try {
        const data = await api("PUT", `/api/calls/${forCall}/contact`, sending);
        retryMs = 2000;
        if (forCall === callId) {
          status(`Saved ${new Date().toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" })}`);
          lockDetails(data.contact.about_self === false);
          if (data.contact.about_self === false) fill({ about_self: false });
          // Numbers are shown as the caller would say them, once the handler has moved on from the field.
          for (const name of PHONES) {
            const input = form.elements[name];
            const shown = data.contact.display?.[name];
            if (shown && name in sending && document.activeElement !== input && !(name in pending)) input.value = shown;
          }
          suggestOutcome();
        }
      } catch (exc) {
        if ((exc.status === 400 || exc.status === 422) && Array.isArray(exc.detail)) {
          // Bad input changed nothing: show why; the field is sent again once it is edited.
          showErrors(exc.detail);
          const good = Object.fromEntries(Object.entries(sending).filter(([name]) => !exc.detail.some((p) => p.field.split(".")[0] === name)));
          pending = { ...good, ...pending };
          status("Some fields need correcting", "failed");
        } else if (exc.status === 409) {
          status(typeof exc.detail === "string" ? exc.detail : "Not saved", "failed");
        } else if (forCall === callId) {
          // The connection dropped or the service stumbled: keep the changes and try again.
          pending = { ...sending, ...pending };
          status("Not saved yet, retrying…", "failed");
          setTimeout(save, retryMs);
          retryMs = Math.min(retryMs * 2, RETRY_MAX_MS);
        }
      } finally {
        inFlight = null;
      }
      if (Object.keys(pending).length && forCall === callId) timer = setTimeout(save, SAVE_AFTER_MS);
    })();
    return inFlight;
  }

  form.addEventListener("input", (event) => {
    const { name, type } = event.target;
    if (name && name !== "avoid" && type !== "radio" && type !== "checkbox") queue(name);
  });
  form.addEventListener("change", (event) => {
    const target = event.target;
    if (!target.name || target.name === "avoid") return;
    if (target.name === "about_self" && target.value === "false" &&
        !window.confirm("The call is about someone else: delete everything typed for this call?")) {
      target.checked = false;
      return;
    }
    queue(target.name);
    if (target.name === "triage") {
      suggestOutcome();
      if (!valueOf("triage_reason")) {
        showErrors([{ field: "triage_reason", problem: "Say why, in a few words." }]);
      }
    }
  });
  window.addEventListener("beforeunload", (event) => {
    if (Object.keys(pending).length || inFlight) event.preventDefault();
  });

  // ---------------------------------------------------------------- loading a call

  const localityNames = new Map();

  async function loadLocalities() {
    const { localities } = await api("GET", "/api/localities");
    for (const select of box.querySelectorAll("select[data-localities]")) {
      for (const { code, name } of localities) select.add(new Option(name, code));
    }
    for (const { code, name } of localities) localityNames.set(code, name);
  }
  const localitiesReady = loadLocalities().catch(() => status("Could not load the localities", "failed"));

  // ---------------------------------------------------------------- people and places to avoid

  async function loadChoices() {
    const [{ clinicians }, { sites }] = await Promise.all([api("GET", "/api/clinicians"), api("GET", "/api/sites")]);
    const options = document.getElementById("fc-avoid-options");
    const add = (words, kind, id) => {
      choices.set(words.toLowerCase(), { kind, id });
      choiceNames.set(`${kind}:${id}`, words);
      options.append(new Option(words));
    };
    for (const clinician of clinicians) {
      add(`${clinician.name} (${professionLabel(clinician.profession)}, ${localityNames.get(clinician.locality) || clinician.locality})`, "clinician", clinician.id);
    }
    for (const site of sites) add(`${site.name}, ${site.town}`, "site", site.id);
    drawAvoid();
  }
  const choicesReady = localitiesReady.then(loadChoices).catch(() => status("Could not load the clinicians and sites", "failed"));

  function drawAvoid() {
    const list = document.getElementById("fc-avoid-list");
    list.replaceChildren(...avoid.map((item) => {
      const li = document.createElement("li");
      const words = choiceNames.get(`${item.kind}:${item.id}`) || `${item.kind} ${item.id}`;
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", `Remove ${words}`);
      remove.addEventListener("click", () => {
        avoid = avoid.filter((other) => other !== item);
        drawAvoid();
        queue("avoid");
        document.getElementById("fc-avoid-input").focus();
      });
      li.append(document.createTextNode(`${words} `), remove);
      return li;
    }));
  }

  function addAvoid() {
    const input = document.getElementById("fc-avoid-input");
    const typed = input.value.trim();
    clearError("avoid");
    if (!typed) {
      showErrors([{ field: "avoid", problem: "Type the name of a clinician or site, then choose it from the list." }]);
      input.focus();
      return;
    }
    const choice = choices.get(typed.toLowerCase());
    if (!choice) {
      showErrors([{ field: "avoid", problem: `No clinician or site is called "${typed}": choose one from the list.` }]);
      input.focus();
      return;
    }
    if (!avoid.some((item) => item.kind === choice.kind && item.id === choice.id)) avoid = [...avoid, choice];
    input.value = "";
    drawAvoid();
    queue("avoid");
    input.focus();
  }
  document.getElementById("fc-avoid-button").addEventListener("click", addAvoid);
  document.getElementById("fc-avoid-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addAvoid();
    }
  });

  function resetAll() {
    pending = {};
    booking = null;
    avoid = [];
    signposted = false;
    drawAvoid();
    delete root.dataset.outcome;
    document.getElementById("fc-signpost").reset();
    document.getElementById("fc-sp-list").replaceChildren();
    for (const id of ["fc-sp-note", "fc-sp-error", "fc-sp-sent"]) document.getElementById(id).textContent = "";
    document.getElementById("fc-prefilled").hidden = true;
    document.getElementById("fc-web").hidden = true;
    document.getElementById("fc-web-reply").reset();
    document.getElementById("fc-web-reply-status").textContent = "";
    form.reset();
    document.getElementById("fc-risk").reset();
    document.getElementById("fc-risk-result").hidden = true;
    document.getElementById("fc-slots").replaceChildren();
    document.getElementById("fc-booked").hidden = true;
    document.getElementById("fc-more").hidden = true;
    for (const id of ["fc-b-note", "fc-book-error", "fc-risk-error"]) document.getElementById(id).textContent = "";
    form.querySelectorAll("[data-error-for]").forEach((slot) => { slot.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((input) => {
      input.classList.remove("invalid");
      input.removeAttribute("aria-invalid");
    });
    lockDetails(false);
    status("");
  }

  // Questionnaires: a PHQ-9 answer of thoughts of self-harm sends the handler to the risk screen.
  const questionnaires = questionnairePanel(document.getElementById("fc-q-panel"), "fc-q", (result) => {
    if (result.risk_raised) document.getElementById("fc-risk-title").focus();
  });

  // A request made on the public website: what the person wrote, shown as text, and (when they asked
  // for an email) the reply form, which sends through the service's mail (POST .../email).
  function showWebRequest(request) {
    const section = document.getElementById("fc-web");
    section.hidden = !request;
    if (!request) return;
    const windows = { morning: "mornings", afternoon: "afternoons", evening: "evenings" };
    document.getElementById("fc-web-ref").textContent = request.reference || "";
    document.getElementById("fc-web-contact-by").textContent = request.contact_by === "email" ? "Email" : "Phone call";
    document.getElementById("fc-web-times").textContent =
      (request.safe_times || "").split(/,\s*/).filter(Boolean).map((w) => windows[w] || w).join(", ") || "Any time we are open";
    document.getElementById("fc-web-name").textContent = request.preferred_name || "Not given";
    document.getElementById("fc-web-message").textContent = request.message || "Nothing written";
    const reply = document.getElementById("fc-web-reply");
    reply.hidden = !request.email;
    document.getElementById("fc-web-email").textContent = request.email || "";
  }

  document.getElementById("fc-web-reply").addEventListener("submit", async (event) => {
    event.preventDefault();
    const note = document.getElementById("fc-web-reply-status");
    const body = document.getElementById("fc-web-reply-body").value.trim();
    if (!body || !callId) return;
    note.textContent = "Sending…";
    try {
      await api("POST", `/api/calls/${callId}/email`, { body });
      note.textContent = "Sent.";
      document.getElementById("fc-web-reply").reset();
    } catch (exc) {
      note.textContent = exc.message;
    }
  });

  async function setCall(id) {
    id = id ? String(id) : null;
    if (id === callId) return;
    await save();
    callId = id;
    resetAll();
    box.hidden = !id;
    if (!id) return;
    questionnaires.show(`/api/calls/${id}/questionnaires`, `/api/calls/${id}/questionnaires`);
    await localitiesReady;
    await choicesReady;
    try {
      const data = await api("GET", `/api/calls/${id}/contact`);
      if (id !== callId) return;
      if (data.contact) {
        fill({ ...data.contact.fields, about_self: data.contact.about_self }, data.contact.display || {});
        signposted = (data.contact.fields.signposts || []).some((item) => item.result === "sent");
        lockDetails(data.contact.about_self === false);
        if (data.contact.booking && data.contact.booking.status === "booked") {
          booking = await api("GET", `/api/bookings/${data.contact.booking.id}`);
          showBooking();
        }
      } else if (data.suggested && Object.keys(data.suggested).length) {
        // What the caller told the phone menu: filled in and saved, for the handler to confirm.
        const { display: shown = {}, ...fields } = data.suggested;
        fill(fields, shown);
        for (const name of Object.keys(fields)) pending[name] = fields[name];
        document.getElementById("fc-prefilled").hidden = false;
        save();
      }
      showWebRequest(data.web_request);
      suggestOutcome();
      const bookForm = document.getElementById("fc-book");
      bookForm.elements.locality.value = data.contact?.fields?.home_locality || "";
    } catch (exc) {
      status(exc.message, "failed");
    }
  }

  // ---------------------------------------------------------------- risk screen

  document.getElementById("fc-risk").addEventListener("submit", async (event) => {
    event.preventDefault();
    const riskForm = event.target;
    const error = document.getElementById("fc-risk-error");
    const answers = {};
    for (const name of ["thoughts_of_suicide_or_self_harm", "plan_or_means", "immediate_danger", "intoxicated_now",
      "recent_self_harm", "protective_factors"]) {
      const checked = riskForm.querySelector(`[name="${name}"]:checked`);
      if (!checked) {
        error.textContent = "Answer every question first.";
        return;
      }
      answers[name] = checked.value === "true";
    }
    if (riskForm.elements.handler_concern.value) answers.handler_concern = riskForm.elements.handler_concern.value;
    error.textContent = "";
    try {
      const result = await api("POST", `/api/calls/${callId}/risk`, answers);
      const panel = document.getElementById("fc-risk-result");
      panel.dataset.level = result.level;
      panel.setAttribute("role", result.level === "immediate" ? "alert" : "status");
      document.getElementById("fc-risk-level").textContent = LEVELS[result.level] || result.level;
      document.getElementById("fc-risk-alerted").textContent = result.supervisors_alerted ? "· supervisors alerted" : "";
      document.getElementById("fc-risk-steps").replaceChildren(...result.escalation.map((step) => {
        const li = document.createElement("li");
        li.textContent = step;
        return li;
      }));
      panel.hidden = false;
    } catch (exc) {
      error.textContent = exc.message;
    }
  });

  // ---------------------------------------------------------------- finding a slot and booking

  const when = (iso) => new Date(iso).toLocaleString("en-GB", {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", timeZone: "Europe/London",
  });
  const day = (iso) => new Date(iso).toLocaleDateString("en-GB", {
    weekday: "long", day: "numeric", month: "long", timeZone: "Europe/London",
  });
  const place = (slot) => (slot.site ? `${slot.site.name}, ${slot.site.town}` : "Video");
  const professionLabel = (code) => code.replace(/_/g, " ");

  function slotItems(slots, list) {
    let lastDay = list.dataset.lastDay || "";
    const items = [];
    for (const slot of slots) {
      const heading = day(slot.start);
      if (heading !== lastDay) {
        const li = document.createElement("li");
        li.className = "fc-day";
        li.textContent = heading;
        items.push(li);
        lastDay = heading;
      }
      const li = document.createElement("li");
      const text = document.createElement("span");
      const time = when(slot.start).split(", ").pop();
      const who = `${slot.clinician.name} (${professionLabel(slot.clinician.profession)})`;
      text.textContent = `${time} · ${place(slot)} · ${who}`;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Book";
      button.dataset.slotId = slot.id;
      // Heard on its own (a screen reader's list of buttons), the button says which slot it books.
      button.setAttribute("aria-label", `Book ${heading} at ${time}, ${place(slot)}, with ${who}`);
      button.addEventListener("click", () => book(slot));
      li.append(text, button);
      items.push(li);
    }
    list.dataset.lastDay = lastDay;
    return items;
  }

  async function search(after, focusAfter = null) {
    const bookForm = document.getElementById("fc-book");
    const params = new URLSearchParams();
    for (const name of ["locality", "modality", "profession", "from", "to"]) {
      if (bookForm.elements[name].value) params.set(name, bookForm.elements[name].value);
    }
    // The call's record brings the caller's workplace locality (unless they agreed to it) and the
    // people and places they asked to avoid: the search leaves those out.
    await save();
    params.set("call_id", callId);
    if (after) params.set("after", after);
    const list = document.getElementById("fc-slots");
    const note = document.getElementById("fc-b-note");
    const error = document.getElementById("fc-book-error");
    error.textContent = "";
    try {
      const data = await api("GET", `/api/clinicians/slots?${params}`);
      if (!after) {
        list.replaceChildren();
        list.dataset.lastDay = "";
      }
      const added = slotItems(data.slots, list);
      list.append(...added);
      lastSearch = data.next_after;
      document.getElementById("fc-more").hidden = !data.next_after;
      const excluded = data.excluded_workplace_locality
        ? ` Clinicians and sites in ${localityNames.get(data.excluded_workplace_locality) || "the locality where they work"} are left out.`
        : "";
      const count = list.querySelectorAll("button").length;
      const urgent = data.urgent_until ? ` Urgent: only slots up to ${when(data.urgent_until)} are shown.` : "";
      note.textContent = (count ? `${count} free slot${count === 1 ? "" : "s"} found.` : "No free slots for that search.") + excluded + urgent;
      // After "More slots", focus goes to the first slot added, so the handler carries on from there.
      if (focusAfter) added.find((item) => item.querySelector("button"))?.querySelector("button")?.focus();
    } catch (exc) {
      error.textContent = Array.isArray(exc.detail) ? exc.detail.map((p) => `${p.field}: ${p.problem}`).join("; ") : exc.message;
    }
  }

  function showBooking() {
    const text = document.getElementById("fc-booked-text");
    text.textContent = `Booked: ${when(booking.start)}, ${place(booking)}, with ${booking.clinician.name}. ${SMS[booking.sms] || ""}`;
    document.getElementById("fc-booked").hidden = false;
    suggestOutcome();
  }

  async function book(slot) {
    const error = document.getElementById("fc-book-error");
    error.textContent = "";
    await save();  // the booking needs the consent and name the handler has just typed
    try {
      booking = await api("POST", "/api/bookings", { call_id: Number(callId), slot_id: slot.id });
      showBooking();
      document.getElementById("fc-slots").replaceChildren();
      document.getElementById("fc-more").hidden = true;
      document.getElementById("fc-b-note").textContent = "";
      document.getElementById("fc-booked-text").focus();
    } catch (exc) {
      if (exc.error === "slot_taken") {
        error.textContent = "Someone else has just booked that slot. The next free ones are below.";
        const list = document.getElementById("fc-slots");
        list.dataset.lastDay = "";
        list.replaceChildren(...slotItems(exc.detail.next_slots || [], list));
        (list.querySelector("button") || error).focus();
      } else if (exc.error === "contact_incomplete") {
        const missing = exc.detail.missing || [];
        const words = {
          about_self: ["about_self", "confirm the call is about their own health"],
          consent_to_keep: ["consent_to_keep", "ask whether we may keep their details"],
          name: ["name", "their name"],
          contact_route: ["no_contact_reason", "a phone number or email, or why they give none"],
        };
        error.textContent = `Before booking, the record needs: ${missing.map((m) => (words[m] || [m, m])[1]).join("; ")}.`;
        showErrors(missing.map((m) => ({ field: (words[m] || [m])[0], problem: `Needed before booking: ${(words[m] || [m, m])[1]}.` })));
        const first = missing.length && form.querySelector(`[name="${(words[missing[0]] || [missing[0]])[0]}"]`);
        (first || error).focus();
      } else {
        error.textContent = typeof exc.detail === "string" ? exc.detail : exc.message;
        error.focus();
      }
    }
  }

  document.getElementById("fc-book").addEventListener("submit", (event) => {
    event.preventDefault();
    search(null);
  });
  document.getElementById("fc-more").addEventListener("click", () => search(lastSearch, true));
  document.getElementById("fc-cancel").addEventListener("click", async () => {
    if (!booking || !window.confirm("Cancel this booking?")) return;
    try {
      await api("DELETE", `/api/bookings/${booking.id}`);
      booking = null;
      document.getElementById("fc-booked").hidden = true;
      document.getElementById("fc-b-note").textContent = "The booking was cancelled.";
      suggestOutcome();
      document.getElementById("fc-find").focus();
    } catch (exc) {
      document.getElementById("fc-book-error").textContent = exc.message;
    }
  });

  // ---------------------------------------------------------------- partner services and signposting

  const spForm = document.getElementById("fc-signpost");
  const chosen = new Set();

  function spErrors(problems) {
    spForm.querySelectorAll("[data-sp-error-for]").forEach((slot) => { slot.textContent = ""; });
    for (const problem of problems) {
      const field = problem.field.split(".")[0];
      const slot = spForm.querySelector(`[data-sp-error-for="${field}"]`);
      if (slot) slot.textContent = problem.problem;
      else if (field in form.elements) showErrors([problem]);
      else document.getElementById("fc-sp-error").textContent = problem.problem;
    }
  }

  async function findServices() {
    const params = new URLSearchParams();
    if (spForm.elements.q.value.trim()) params.set("q", spForm.elements.q.value.trim());
    if (spForm.elements.topic.value) params.set("topic", spForm.elements.topic.value);
    const note = document.getElementById("fc-sp-note");
    try {
      const data = await api("GET", `/api/partner-services?${params}`);
      const list = document.getElementById("fc-sp-list");
      list.replaceChildren(...data.services.map((service) => {
        const li = document.createElement("li");
        const label = document.createElement("label");
        label.className = "inline";
        const box = document.createElement("input");
        box.type = "checkbox";
        box.value = service.code;
        box.checked = chosen.has(service.code);
        box.addEventListener("change", () => (box.checked ? chosen.add(service.code) : chosen.delete(service.code)));
        const name = document.createElement("strong");
        name.textContent = service.name;
        label.append(box, " ", name);
        const facts = document.createElement("p");
        facts.className = "muted";
        facts.textContent = [service.phone, service.web, service.hours].filter(Boolean).join(" · ");
        const about = document.createElement("p");
        about.textContent = service.about;
        li.append(label, about, facts);
        return li;
      }));
      note.textContent = data.services.length ? `${data.services.length} service${data.services.length === 1 ? "" : "s"} found.` : "No service matches that search.";
    } catch (exc) {
      note.textContent = exc.message;
    }
  }

  async function loadTopics() {
    const { topics } = await api("GET", "/api/partner-services");
    for (const [code, words] of Object.entries(topics)) spForm.elements.topic.add(new Option(words, code));
  }
  loadTopics().catch(() => {});

  spForm.addEventListener("submit", (event) => {
    event.preventDefault();
    findServices();
  });
  document.getElementById("fc-sp-send").addEventListener("click", async () => {
    const error = document.getElementById("fc-sp-error");
    const sent = document.getElementById("fc-sp-sent");
    error.textContent = "";
    sent.textContent = "";
    spErrors([]);
    if (!chosen.size) {
      spErrors([{ field: "services", problem: "Choose at least one service from the directory." }]);
      spForm.querySelector("#fc-sp-list input, #fc-sp-q").focus();
      return;
    }
    await save();  // the mobile number the handler has just typed
    try {
      const channel = spForm.elements.sp_channel.value || "text";
      const reply = await api("POST", `/api/calls/${callId}/signposts`, {
        services: [...chosen], consent: spForm.elements.consent.checked, channel,
        name_the_service: spForm.elements.name_the_service.checked,
      });
      const how = reply.channel === "email" ? "email" : "text";
      if (reply.result === "sent") {
        signposted = true;
        sent.textContent = `Sent by ${how}: ${reply.services.length} service${reply.services.length === 1 ? "" : "s"}.`;
      } else {
        sent.textContent = `The ${how} could not be sent: read the details to the caller now.`;
      }
      suggestOutcome();
      sent.focus();
    } catch (exc) {
      if ((exc.status === 400 || exc.status === 422) && Array.isArray(exc.detail)) {
        spErrors(exc.detail);
        const first = exc.detail[0].field.split(".")[0];
        (first === "consent" ? spForm.elements.consent : first === "phone" ? form.elements.phone
          : first === "email" ? form.elements.email : error).focus();
      } else {
        error.textContent = typeof exc.detail === "string" ? exc.detail : exc.message;
        error.focus();
      }
    }
  });

  // ---------------------------------------------------------------- following the call in hand

  const fromEvent = (event) => event.detail?.call_id ?? event.detail?.call?.id ?? null;
  document.addEventListener("helpline:call-accepted", (event) => setCall(fromEvent(event)));
  document.addEventListener("helpline:call", (event) => setCall(fromEvent(event)));
  new MutationObserver(() => setCall(root.dataset.callId)).observe(root, { attributes: true, attributeFilter: ["data-call-id"] });
  setCall(root.dataset.callId);
}
