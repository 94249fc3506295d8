// The clinician's page: their own bookings, each opening the caller's first-contact record and
// offering its calendar entry (.ics). Everything comes from the JSON API, which checks that the
// booking is theirs.

import { api, setLoginUrl } from "./common.js";

const page = document.getElementById("clinician");
const LABELS = {
  name: "Name", preferred_name: "Preferred name", profession: "Profession", trainee: "Trainee", grade: "Grade or role",
  gmc_number: "GMC number", gdc_number: "GDC number", practice: "Practice", phone: "Phone", phone_alt: "Other phone",
  email: "Email", ok_to_text: "Safe to text", ok_to_leave_voicemail: "Safe to leave a voicemail",
  contact_times: "Best times to contact", needs: "Needs", notes: "Notes", home_locality: "Lives in",
  work_locality: "Works in", accessibility_needs: "Accessibility needs", language: "Language",
  consent_to_keep: "Consented to keeping details",
};
const when = (iso) => new Date(iso).toLocaleString("en-GB", {
  weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", timeZone: "Europe/London",
});
const shown = (value) => (value === true ? "Yes" : value === false ? "No" : Array.isArray(value) ? value.join(", ").replace(/_/g, " ") : String(value).replace(/_/g, " "));

function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  return td;
}

async function openRecord(contactId) {
  const record = await api("GET", `/api/contacts/${contactId}`);
  const list = document.getElementById("record-fields");
  list.replaceChildren();
  for (const [name, label] of Object.entries(LABELS)) {
    if (!(name in record.fields)) continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = shown(record.fields[name]);
    list.append(dt, dd);
  }
  document.getElementById("record-risk").textContent = record.risk
    ? `${record.risk.level} (screened ${when(record.risk.at)})` : "Not screened.";
  const section = document.getElementById("record");
  section.hidden = false;
  document.getElementById("record-title").focus();
}

async function load(event) {
  event?.preventDefault();
  const range = document.getElementById("range");
  const params = new URLSearchParams();
  if (range.elements.from.value) params.set("from", range.elements.from.value);
  if (range.elements.to.value) params.set("to", range.elements.to.value);
  const status = document.getElementById("bookings-status");
  try {
    const data = await api("GET", `/api/clinician/bookings?${params}`);
    const rows = data.bookings.map((booking) => {
      const tr = document.createElement("tr");
      const actions = document.createElement("span");
      const view = document.createElement("button");
      view.type = "button";
      view.className = "secondary";
      view.textContent = "Record";
      view.disabled = booking.status !== "booked";
      view.addEventListener("click", () => openRecord(booking.contact_id).catch((exc) => { status.textContent = exc.message; }));
      const ics = document.createElement("a");
      ics.href = `/api/bookings/${booking.id}.ics`;
      ics.textContent = "Calendar (.ics)";
      actions.append(view, " ", ics);
      // A cancelled booking no longer names the patient: clinicians see only the people they treat.
      const patient = booking.patient ? booking.patient.preferred_name || booking.patient.name || "" : "";
      tr.append(cell(when(booking.start)), cell(booking.site ? `${booking.site.name}, ${booking.site.town}` : "Video"),
        cell(patient), cell(booking.status), cell(actions));
      return tr;
    });
    document.getElementById("bookings").replaceChildren(...rows);
    status.textContent = rows.length ? "" : `No bookings from ${data.from} to ${data.to}.`;
  } catch (exc) {
    status.textContent = exc.message;
  }
}

if (page) {
  setLoginUrl(page.dataset.loginUrl);
  document.getElementById("range").addEventListener("submit", load);
  load();
}
