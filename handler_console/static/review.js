// Call review: every call in a period, filtered and paged (GET /api/calls), and the timeline of the
// one chosen (GET /api/calls/<id>). Calls are described by codes, times and staff names only.
import { $, ApiError, api, clock, focusHeading, humanise, needLabel, setLoginUrl } from "./common.js";

setLoginUrl($("review").dataset.loginUrl);

const form = $("filters");
let page = 1;
let lastPage = 1;

const today = () => new Date().toLocaleDateString("en-CA"); // YYYY-MM-DD in local time
const time = (iso) => (iso ? new Date(iso).toLocaleString("en-GB", { dateStyle: "short", timeStyle: "medium" }) : "");

function cell(text) {
  const node = document.createElement("td");
  node.textContent = text == null ? "" : String(text);
  return node;
}

function query() {
  const params = new URLSearchParams();
  for (const name of ["from", "to", "outcome", "need", "handler"]) {
    const value = form.elements[name].value;
    if (value) params.set(name, value);
  }
  params.set("page", String(page));
  return params;
}

async function load() {
  $("filter-error").textContent = "";
  let body;
  try {
    body = await api("GET", `/api/calls?${query()}`);
  } catch (exc) {
    $("filter-error").textContent = exc instanceof ApiError ? exc.message : "Could not load the calls.";
    return;
  }
  lastPage = Math.max(1, Math.ceil(body.total / body.per_page));
  $("page").textContent = `Page ${body.page} of ${lastPage} · ${body.total} calls`;
  $("prev").disabled = page <= 1;
  $("next").disabled = page >= lastPage;
  $("counts").textContent = Object.entries(body.counts).map(([outcome, count]) => `${humanise(outcome)}: ${count}`).join(" · ");
  const rows = body.calls.map((call) => {
    const row = document.createElement("tr");
    row.dataset.callId = String(call.call_id);
    // Rows of a grid (the table's role), each opened with Enter or Space like a button.
    row.setAttribute("role", "row");
    row.setAttribute("aria-selected", "false");
    row.tabIndex = 0;
    row.append(cell(call.call_id), cell(time(call.started_at)), cell(call.need ? needLabel(call.need) : ""),
      cell(humanise(call.outcome)), cell(call.wait_s == null ? "" : clock(call.wait_s)),
      cell(call.handler ? call.handler.name : ""), cell(call.booked === "yes" ? "Yes" : ""));
    const open = () => show(call.call_id, row);
    row.addEventListener("click", open);
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault(); // Space would scroll the page
        open();
      } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        const next = event.key === "ArrowDown" ? row.nextElementSibling : row.previousElementSibling;
        if (next && next.tabIndex === 0) next.focus();
      }
    });
    return row;
  });
  if (!rows.length) {
    const row = document.createElement("tr");
    const empty = cell("No calls match.");
    empty.colSpan = 7;
    row.append(empty);
    rows.push(row);
  }
  $("call-rows").replaceChildren(...rows);
}

function fact(list, term, value) {
  if (value == null || value === "") return;
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = String(value);
  list.append(dt, dd);
}

function eventWords(event) {
  const detail = event.detail || {};
  if (event.kind === "wait_estimate") {
    // What the caller was told while waiting (helpline/wait_estimate.py).
    const told = detail.estimate_s == null ? "no time (nobody on duty)" : clock(detail.estimate_s);
    return `Told: number ${detail.place} in line, wait ${told}`;
  }
  const parts = [humanise(event.kind)];
  if (event.step) parts.push(`at ${humanise(event.step)}`);
  if (detail.key) parts.push(`key ${detail.key}`);
  if (detail.handler) parts.push(`· ${detail.handler}`);
  if (detail.supervisor_name) parts.push(`· by ${detail.supervisor_name}`);
  for (const name of ["status", "outcome", "level", "result", "presence", "reason", "action"]) {
    if (detail[name]) parts.push(`· ${humanise(detail[name])}`);
  }
  return parts.join(" ");
}

async function show(callId, row) {
  for (const other of document.querySelectorAll("#call-rows tr[data-call-id]")) other.setAttribute("aria-selected", "false");
  row.setAttribute("aria-selected", "true");
  const story = $("story");
  let call;
  try {
    call = await api("GET", `/api/calls/${callId}`);
  } catch (exc) {
    story.textContent = exc instanceof ApiError ? exc.message : "Could not load the call.";
    return;
  }
  const facts = document.createElement("dl");
  fact(facts, "Call", call.call_id);
  fact(facts, "Outcome", `${humanise(call.outcome)}${call.outcome_step ? ` (at ${humanise(call.outcome_step)})` : ""}`);
  fact(facts, "Need", call.need ? needLabel(call.need) : "");
  fact(facts, "Waited", call.wait_s == null ? "" : clock(call.wait_s));
  fact(facts, "Answered by", call.handler ? call.handler.name : "");
  fact(facts, "Missed by", call.missed_by.join(", "));
  fact(facts, "Risk", call.risk.map(humanise).join(", "));
  fact(facts, "Bookings", call.bookings.map((b) => `${humanise(b.profession)}, ${b.locality} (${humanise(b.status)})`).join("; "));
  const path = document.createElement("p");
  path.textContent = "Path: " + call.path.map((step) => (step.key ? `${humanise(step.step)} [${step.key}]` : humanise(step.step))).join(" → ");
  const list = document.createElement("ol");
  list.className = "timeline";
  for (const event of call.events) {
    const item = document.createElement("li");
    const when = document.createElement("time");
    when.dateTime = event.at;
    when.textContent = new Date(event.at).toLocaleTimeString("en-GB");
    const words = document.createElement("span");
    words.textContent = eventWords(event);
    item.append(when, words);
    list.append(item);
  }
  story.replaceChildren(facts, path, list);
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  page = 1;
  load();
});
$("prev").addEventListener("click", () => { page = Math.max(1, page - 1); load(); });
$("next").addEventListener("click", () => { page = Math.min(lastPage, page + 1); load(); });

form.elements.from.value = today();
form.elements.to.value = today();
api("GET", "/api/queue").then((body) => {
  for (const handler of body.handlers || []) form.elements.handler.append(new Option(handler.name, String(handler.id)));
}, () => {});
load();
focusHeading();
