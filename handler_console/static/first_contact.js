// The first-contact form, risk screen and booking for the call in hand (see _first_contact.html).
// It follows the call id in <section id="first-contact" data-call-id>, and the helpline:call and
// helpline:call-accepted events ({detail: {call_id}}). Each field saves itself as it is typed: only
// the changed fields are sent, and a save that fails for the network is retried until it lands.
// Unsaved changes live in this page's memory only, never in browser storage (personal data).

import { api } from "./common.js";

const root = document.getElementById("first-contact");
const box = document.getElementById("fc");
const SAVE_AFTER_MS = 500;
const RETRY_MAX_MS = 30000;
const BOOLEAN_RADIOS = new Set(["about_self", "trainee", "ok_to_text", "ok_to_leave_voicemail", "consent_to_keep"]);
const LEVELS = { none: "None identified", low: "Low", moderate: "Moderate", immediate: "IMMEDIATE" };
const SMS = {
  sent: "A confirmation text was sent.",
  not_agreed: "No text sent: the caller did not agree to texts.",
  no_mobile: "No text sent: no mobile number.",
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

  // ---------------------------------------------------------------- reading and writing fields

  function valueOf(name) {
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

  function fill(fields) {
    form.reset();
    for (const element of form.elements) {
      if (!element.name || !(element.name in fields)) continue;
      const value = fields[element.name];
      if (element.type === "checkbox") element.checked = Array.isArray(value) && value.includes(element.value);
      else if (element.type === "radio") element.checked = String(value) === element.value;
      else element.value = value ?? "";
    }
  }

  function showErrors(problems) {
    for (const problem of problems) {
      const field = problem.field.split(".")[0];  // needs.0 is an item of needs
      const slot = form.querySelector(`[data-error-for="${field}"]`);
      if (slot) slot.textContent = problem.problem;
      form.querySelectorAll(`[name="${field}"]`).forEach((input) => input.classList.add("invalid"));
    }
  }

  function clearError(name) {
    const slot = form.querySelector(`[data-error-for="${name}"]`);
    if (slot) slot.textContent = "";
    form.querySelectorAll(`[name="${name}"]`).forEach((input) => input.classList.remove("invalid"));
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
        }
      } catch (exc) {
        if (exc.status === 400 && Array.isArray(exc.detail)) {
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
    if (name && type !== "radio" && type !== "checkbox") queue(name);
  });
  form.addEventListener("change", (event) => {
    const target = event.target;
    if (!target.name) return;
    if (target.name === "about_self" && target.value === "false" &&
        !window.confirm("The call is about someone else: delete everything typed for this call?")) {
      target.checked = false;
      return;
    }
    queue(target.name);
  });
  window.addEventListener("beforeunload", (event) => {
    if (Object.keys(pending).length || inFlight) event.preventDefault();
  });

  // ---------------------------------------------------------------- loading a call

  async function loadLocalities() {
    const { localities } = await api("GET", "/api/localities");
    for (const select of box.querySelectorAll("select[data-localities]")) {
      for (const { code, name } of localities) select.add(new Option(name, code));
    }
  }
  const localitiesReady = loadLocalities().catch(() => status("Could not load the localities", "failed"));

  function showEarlier(earlier) {
    const list = document.getElementById("fc-earlier-list");
    list.replaceChildren(...earlier.map((item) => {
      const li = document.createElement("li");
      const bookingText = item.booking ? `; booking ${item.booking.status} for ${item.booking.date}` : "";
      li.textContent = `${item.date}: ${item.disposition.replace(/_/g, " ")}${bookingText}`;
      return li;
    }));
    document.getElementById("fc-earlier").hidden = earlier.length === 0;
  }

  function resetAll() {
    pending = {};
    booking = null;
    form.reset();
    document.getElementById("fc-risk").reset();
    document.getElementById("fc-risk-result").hidden = true;
    document.getElementById("fc-slots").replaceChildren();
    document.getElementById("fc-booked").hidden = true;
    document.getElementById("fc-more").hidden = true;
    for (const id of ["fc-b-note", "fc-book-error", "fc-risk-error"]) document.getElementById(id).textContent = "";
    form.querySelectorAll("[data-error-for]").forEach((slot) => { slot.textContent = ""; });
    form.querySelectorAll(".invalid").forEach((input) => input.classList.remove("invalid"));
    lockDetails(false);
    showEarlier([]);
    status("");
  }

  async function setCall(id) {
    id = id ? String(id) : null;
    if (id === callId) return;
    await save();
    callId = id;
    resetAll();
    box.hidden = !id;
    if (!id) return;
    await localitiesReady;
    try {
      const data = await api("GET", `/api/calls/${id}/contact`);
      if (id !== callId) return;
      showEarlier(data.earlier_contacts || []);
      if (data.contact) {
        fill({ ...data.contact.fields, about_self: data.contact.about_self });
        lockDetails(data.contact.about_self === false);
        if (data.contact.booking && data.contact.booking.status === "booked") {
          booking = await api("GET", `/api/bookings/${data.contact.booking.id}`);
          showBooking();
        }
      }
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
      text.textContent = `${when(slot.start).split(", ").pop()} · ${place(slot)} · ${slot.clinician.name} (${professionLabel(slot.clinician.profession)})`;
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = "Book";
      button.addEventListener("click", () => book(slot));
      li.append(text, button);
      items.push(li);
    }
    list.dataset.lastDay = lastDay;
    return items;
  }

  async function search(after) {
    const bookForm = document.getElementById("fc-book");
    const params = new URLSearchParams();
    for (const name of ["locality", "modality", "profession", "from", "to"]) {
      if (bookForm.elements[name].value) params.set(name, bookForm.elements[name].value);
    }
    const work = valueOf("work_locality");
    if (work) params.set("workplace_locality", work);
    if (bookForm.elements.include_workplace.checked) params.set("include_workplace", "1");
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
      list.append(...slotItems(data.slots, list));
      lastSearch = data.next_after;
      document.getElementById("fc-more").hidden = !data.next_after;
      const excluded = data.excluded_workplace_locality
        ? ` Sites where they work (${bookForm.elements.locality.querySelector(`option[value="${data.excluded_workplace_locality}"]`)?.textContent || data.excluded_workplace_locality}) are left out.`
        : "";
      note.textContent = (list.querySelector("button") ? "" : "No free slots for that search.") + excluded;
    } catch (exc) {
      error.textContent = Array.isArray(exc.detail) ? exc.detail.map((p) => p.problem).join("; ") : exc.message;
    }
  }

  function showBooking() {
    const text = document.getElementById("fc-booked-text");
    text.textContent = `Booked: ${when(booking.start)}, ${place(booking)}, with ${booking.clinician.name}. ${SMS[booking.sms] || ""}`;
    document.getElementById("fc-booked").hidden = false;
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
    } catch (exc) {
      if (exc.error === "slot_taken") {
        error.textContent = "Someone else has just booked that slot. The next free ones are below.";
        const list = document.getElementById("fc-slots");
        list.dataset.lastDay = "";
        list.replaceChildren(...slotItems(exc.detail.next_slots || [], list));
      } else if (exc.error === "contact_incomplete") {
        const words = { about_self: "that the call is about themselves", consent_to_keep: "consent to keep details", name: "their name" };
        error.textContent = `Before booking, record ${(exc.detail.missing || []).map((m) => words[m] || m).join(", ")}.`;
      } else {
        error.textContent = exc.message;
      }
    }
  }

  document.getElementById("fc-book").addEventListener("submit", (event) => {
    event.preventDefault();
    search(null);
  });
  document.getElementById("fc-more").addEventListener("click", () => search(lastSearch));
  document.getElementById("fc-cancel").addEventListener("click", async () => {
    if (!booking || !window.confirm("Cancel this booking?")) return;
    try {
      await api("DELETE", `/api/bookings/${booking.id}`);
      booking = null;
      document.getElementById("fc-booked").hidden = true;
    } catch (exc) {
      document.getElementById("fc-book-error").textContent = exc.message;
    }
  });

  // ---------------------------------------------------------------- following the call in hand

  const fromEvent = (event) => event.detail?.call_id ?? event.detail?.call?.id ?? null;
  document.addEventListener("helpline:call-accepted", (event) => setCall(fromEvent(event)));
  document.addEventListener("helpline:call", (event) => setCall(fromEvent(event)));
  new MutationObserver(() => setCall(root.dataset.callId)).observe(root, { attributes: true, attributeFilter: ["data-call-id"] });
  setCall(root.dataset.callId);
}
