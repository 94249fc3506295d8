// The clinician's page: the people booked with them and their bookings, in words; each record opens
// with its risk screen and the episode's discharge; attendance is recorded on each booking once it
// has begun. Everything comes from the JSON API, which checks that the patient is theirs.

import { api, focusHeading, humanise, needLabel, setLoginUrl } from "./common.js";
import { questionnairePanel } from "./questionnaires.js";

const page = document.getElementById("clinician");
const $ = (id) => document.getElementById(id);

const LABELS = {
  name: "Name", preferred_name: "Preferred name", profession: "Profession", trainee: "Trainee", grade: "Grade or role",
  gmc_number: "GMC number", gdc_number: "GDC number", practice: "Practice", phone: "Phone", phone_alt: "Other phone",
  email: "Email", ok_to_text: "Safe to text", ok_to_leave_voicemail: "Safe to leave a voicemail",
  contact_times: "Best times to contact", safe_times: "Safe times for calls and texts", needs: "Needs",
  triage: "Triage", triage_reason: "Reason for the triage", notes: "Notes", home_locality: "Lives in",
  work_locality: "Works in", workplace_agreed: "Agrees to be seen where they work",
  accessibility_needs: "Accessibility needs", language: "Language", consent_to_keep: "Consented to keeping details",
};
const WORDS = {
  profession: { doctor: "Doctor", dentist: "Dentist" },
  practice: { working_in_england: "Working in England", returning_to_practice: "Returning to practice" },
  triage: {
    urgent: "Urgent appointment", face_to_face: "Routine appointment, face to face", video: "Appointment by video",
    signposted: "Signposted to another service", self_help: "Self-help", advice_given: "Advice given",
  },
};
const RISK = { none: "No risk identified", low: "Low risk", moderate: "Moderate risk", immediate: "Immediate risk" };
const STATUS = { booked: "Booked", cancelled: "Cancelled" };
const ATTENDANCE = { attended: "Attended", did_not_attend: "Did not attend" };

const LONDON = { timeZone: "Europe/London" };
const when = (iso) => new Date(iso).toLocaleString("en-GB", {
  weekday: "short", day: "numeric", month: "short", year: "numeric", hour: "2-digit", minute: "2-digit", ...LONDON,
});
/** A calendar date (YYYY-MM-DD) in words: 8 December 2026. */
const day = (date) => new Date(`${date}T12:00:00Z`).toLocaleDateString("en-GB", { day: "numeric", month: "long", year: "numeric", timeZone: "UTC" });
/** Today's date in London, as YYYY-MM-DD. */
const today = () => new Intl.DateTimeFormat("en-CA", LONDON).format(new Date());

function shown(name, value, display) {
  if (display && display[name]) return display[name];
  if (value === true) return "Yes";
  if (value === false) return "No";
  if (name === "needs") return value.map(needLabel).join(", ");
  if (WORDS[name]) return WORDS[name][value] || humanise(value);
  return Array.isArray(value) ? value.map(humanise).join(", ") : String(value);
}

function cell(...content) {
  const td = document.createElement("td");
  td.append(...content);
  return td;
}

function hidden(text) {
  const span = document.createElement("span");
  span.className = "sr-only";
  span.textContent = text;
  return span;
}

const patientName = (patient) => (patient.preferred_name && patient.preferred_name !== patient.name
  ? `${patient.name} (${patient.preferred_name})` : patient.name || patient.preferred_name || "Name not given");

// ------------------------------------------------------------------ patients

let openContact = null;
const questionnaires = page ? questionnairePanel($("record-q"), "record-q") : null;

async function loadPatients() {
  const status = $("patients-status");
  try {
    const data = await api("GET", "/api/clinician/patients");
    const rows = data.patients.map((patient) => {
      const tr = document.createElement("tr");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "secondary";
      open.append("Open record", hidden(` of ${patientName(patient)}`));
      open.addEventListener("click", () => openRecord(patient.contact_id).catch((exc) => { status.textContent = exc.message; }));
      const episode = patient.discharged_on ? `Discharged ${day(patient.discharged_on)}` : "Open";
      tr.append(
        cell(patientName(patient)),
        cell(patient.home_locality ? patient.home_locality.name : "Not given"),
        cell(patient.work_locality ? patient.work_locality.name : "Not given"),
        cell(day(patient.first_contact)),
        cell(patient.next_appointment ? when(patient.next_appointment) : "None booked"),
        cell(episode),
        cell(open),
      );
      return tr;
    });
    $("patients").replaceChildren(...rows);
    status.textContent = rows.length ? "" : "Nobody is booked with you.";
  } catch (exc) {
    status.textContent = exc.message;
  }
}

// ------------------------------------------------------------------ the record and its discharge

function showDischarge(dischargedOn, keepUntil) {
  const input = $("discharged-on");
  input.value = dischargedOn || today();
  input.max = today();
  $("discharge-now").textContent = dischargedOn
    ? `Discharged on ${day(dischargedOn)}.${keepUntil ? ` The record is kept until ${day(keepUntil)}.` : ""}`
    : "The episode is open.";
  $("discharge-save").textContent = dischargedOn ? "Change the discharge date" : "Record discharge";
  $("discharge-reopen").hidden = !dischargedOn;
}

function fieldError(message) {
  const input = $("discharged-on");
  $("discharged-on-error").textContent = message || "";
  input.classList.toggle("invalid", Boolean(message));
  if (message) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
}

async function openRecord(contactId) {
  const record = await api("GET", `/api/contacts/${contactId}`);
  openContact = contactId;
  const fields = { ...record.fields };
  if (fields.safe_from || fields.safe_until) fields.safe_times = `${fields.safe_from || "any time"} to ${fields.safe_until || "any time"}`;
  const list = $("record-fields");
  list.replaceChildren();
  for (const [name, label] of Object.entries(LABELS)) {
    if (!(name in fields) || fields[name] === null || fields[name] === "") continue;
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = shown(name, fields[name], record.display);
    list.append(dt, dd);
  }
  $("record-title").textContent = `First-contact record: ${patientName(record.fields)}`;
  $("record-risk").textContent = record.risk
    ? `${RISK[record.risk.level] || humanise(record.risk.level)} (screened ${when(record.risk.at)})` : "Not screened.";
  fieldError("");
  showDischarge(record.discharged_on, null);
  questionnaires.show(`/api/contacts/${contactId}/questionnaires`, `/api/contacts/${contactId}/questionnaires`);
  $("record").hidden = false;
  $("record-title").focus();
}

async function discharge(dischargedOn) {
  fieldError("");
  try {
    const saved = await api("PUT", `/api/contacts/${openContact}/discharge`, { discharged_on: dischargedOn });
    showDischarge(saved.discharged_on, saved.keep_until);
    await loadPatients();
  } catch (exc) {
    const problem = Array.isArray(exc.detail) ? exc.detail.find((item) => item.field === "discharged_on") || exc.detail[0] : null;
    fieldError(problem ? problem.problem.replace(/^Input should be a valid date.*$/i, "Give the date as day, month and year") : exc.message);
    $("discharged-on").focus();
  }
}

// ------------------------------------------------------------------ bookings and attendance

function attendanceCell(booking, name) {
  if (booking.status !== "booked") return cell("Not applicable");
  if (new Date(booking.start) > new Date()) return cell("Not yet");
  const group = document.createElement("div");
  group.className = "attendance";
  group.setAttribute("role", "group");
  group.setAttribute("aria-label", `Attendance, ${name}, ${when(booking.start)}`);
  const note = document.createElement("span");
  note.className = "fc-error";
  const buttons = Object.entries(ATTENDANCE).map(([value, label]) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = label;
    button.setAttribute("aria-pressed", String(booking.attendance === value));
    button.addEventListener("click", async () => {
      note.textContent = "";
      try {
        const saved = await api("PUT", `/api/bookings/${booking.id}/attendance`, { attendance: value });
        for (const other of buttons) other.setAttribute("aria-pressed", String(other === button && saved.attendance === value));
        await loadPatients();
      } catch (exc) {
        note.textContent = exc.message;
      }
    });
    return button;
  });
  group.append(...buttons, note);
  return cell(group);
}

function rangeError(message) {
  $("range-error").textContent = message || "";
  for (const input of [$("range-from"), $("range-to")]) {
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
}

async function loadBookings(event) {
  event?.preventDefault();
  const range = $("range");
  const params = new URLSearchParams();
  if (range.elements.from.value) params.set("from", range.elements.from.value);
  if (range.elements.to.value) params.set("to", range.elements.to.value);
  const status = $("bookings-status");
  rangeError("");
  try {
    const data = await api("GET", `/api/clinician/bookings?${params}`);
    // The inputs show the range that applies, the default one included.
    range.elements.from.value = data.from;
    range.elements.to.value = data.to;
    const span = `from ${day(data.from)} to ${day(data.to)}`;
    $("bookings-caption").textContent = `Your bookings ${span}`;
    const rows = data.bookings.map((booking) => {
      const tr = document.createElement("tr");
      // A cancelled booking no longer names the patient: clinicians see only the people they treat.
      const name = booking.patient ? patientName(booking.patient) : "";
      const ics = document.createElement("a");
      ics.href = `/api/bookings/${booking.id}.ics`;
      ics.append("Calendar entry (.ics)", hidden(` for ${when(booking.start)}`));
      tr.append(
        cell(when(booking.start)),
        cell(booking.site ? `${booking.site.name}, ${booking.site.town}` : "Video call"),
        cell(name || "Not shown (cancelled)"),
        cell(STATUS[booking.status] || humanise(booking.status)),
        attendanceCell(booking, name),
        cell(ics),
      );
      return tr;
    });
    $("bookings").replaceChildren(...rows);
    status.textContent = rows.length ? "" : `No bookings ${span}.`;
  } catch (exc) {
    if ((exc.status === 400 || exc.status === 422) && Array.isArray(exc.detail)) rangeError(exc.detail.map((item) => item.problem).join("; "));
    else status.textContent = exc.message;
  }
}

if (page) {
  setLoginUrl(page.dataset.loginUrl);
  $("range").addEventListener("submit", loadBookings);
  $("discharge").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("discharged-on").value;
    // Said here, before asking the server (which checks it too).
    const problem = !value ? "Give the date treatment ended" : value > today() ? "the discharge date cannot be in the future" : "";
    if (problem) {
      fieldError(problem);
      $("discharged-on").focus();
      return;
    }
    discharge(value);
  });
  $("discharge-reopen").addEventListener("click", () => discharge(null));
  loadPatients();
  loadBookings();
}
focusHeading();
