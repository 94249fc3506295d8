// Reports over a period (GET /api/reports/summary), drawn with Chart.js (vendored from npm, loaded
// before this module as window.Chart). Every chart has a sentence that sums it up and a table of its
// figures; series differ by pattern and point shape as well as colour; the same figures come as CSV
// (GET /api/reports/summary.csv) and the calls themselves as another (GET /api/reports/calls.csv).
import { $, ApiError, api, clock, focusHeading, humanise, setLoginUrl } from "./common.js";

setLoginUrl($("reports").dataset.loginUrl);

const { Chart } = window;
// Readable on a supervisor's screen; no animation (it would only delay reading, and respects reduced motion).
Chart.defaults.font.size = 14;
Chart.defaults.color = "#1d2330";
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;

const BLUE = "#005eb8";
const ORANGE = "#a34700";
const INK = "#1d2330";
const form = $("period");
const charts = {};

const isoDay = (date) => date.toLocaleDateString("en-CA");
const pct = (rate) => (rate == null ? "–" : `${Math.round(rate * 1000) / 10}%`);
const dayLabel = (iso) => new Date(`${iso}T12:00:00`).toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short" });
const hourLabel = (hour) => `${String(hour).padStart(2, "0")}:00`;

const OUTCOMES = {
  answered: "Answered", abandoned: "Hung up before being answered", callback_requested: "Asked for a call-back",
  out_of_hours: "Out of hours", third_party: "About someone else", ineligible: "Not eligible", in_progress: "Still in progress",
};
const CHANNELS = { phone: "Phone", web: "Web", callback: "Call-back" };
// Not colour alone: each status has a word and a symbol too.
const STATUS = {
  green: ["✓", "On target"], amber: ["▲", "Near target"], red: ["✕", "Off target"], none: ["–", "No calls yet"],
};

/** Diagonal stripes in `colour` on white, so a second series differs from the first without colour. */
function stripes(colour) {
  const tile = document.createElement("canvas");
  tile.width = tile.height = 10;
  const pen = tile.getContext("2d");
  pen.fillStyle = "#ffffff";
  pen.fillRect(0, 0, 10, 10);
  pen.strokeStyle = colour;
  pen.lineWidth = 3;
  pen.beginPath();
  for (const offset of [-10, 0, 10]) {
    pen.moveTo(offset, 10);
    pen.lineTo(offset + 10, 0);
  }
  pen.stroke();
  return pen.createPattern(tile, "repeat");
}

function table(headers, rows) {
  const node = document.createElement("table");
  node.className = "data";
  const head = node.createTHead().insertRow();
  headers.forEach((text) => {
    const cell = document.createElement("th");
    cell.scope = "col";
    cell.textContent = text;
    head.append(cell);
  });
  const body = node.createTBody();
  for (const row of rows) {
    const line = body.insertRow();
    row.forEach((value, index) => {
      const cell = index === 0 ? document.createElement("th") : document.createElement("td");
      if (index === 0) cell.scope = "row";
      cell.textContent = value == null ? "–" : String(value);
      line.append(cell);
    });
  }
  return node;
}

/** Draw (or redraw) one chart with its summary sentence and its table. */
function draw(id, config, summary, headers, rows) {
  charts[id]?.destroy();
  charts[id] = new Chart($(id), config);
  $(`${id}-summary`).textContent = summary;
  $(`${id}-table`).replaceChildren(table(headers, rows));
}

/** Bars (grouped, or stacked) of whole numbers: one solid series, the next striped. */
function bars(labels, series, { horizontal = false, stacked = false, axis = "Calls" } = {}) {
  const value = horizontal ? "x" : "y";
  const category = horizontal ? "y" : "x";
  return {
    type: "bar",
    data: {
      labels: horizontal ? labels.map((label) => wrap(label)) : labels,
      datasets: series.map((item, index) => ({
        label: item.name, data: item.values, borderWidth: 2, barPercentage: 0.9, categoryPercentage: 0.85,
        borderColor: index ? ORANGE : BLUE, backgroundColor: index ? stripes(ORANGE) : BLUE,
      })),
    },
    options: {
      indexAxis: category,
      scales: {
        // Whole numbers only: no "0, 1, 1" from rounding fractional ticks.
        [value]: { beginAtZero: true, stacked, ticks: { precision: 0 }, title: { display: true, text: axis } },
        [category]: { stacked, ticks: { autoSkip: true, maxRotation: 0 } },
      },
      plugins: { legend: { display: series.length > 1, position: "bottom" } },
    },
  };
}

/** A long category name over several lines (Chart.js draws an array as lines), so none is cut off. */
function wrap(label, width = 16) {
  const lines = [];
  for (const word of String(label).split(" ")) {
    const last = lines.length - 1;
    if (last >= 0 && lines[last].length + word.length < width) lines[last] += ` ${word}`;
    else lines.push(word);
  }
  return lines;
}

function most(labels, values) {
  let best = -1;
  values.forEach((value, index) => { if (best < 0 || value > values[best]) best = index; });
  return best >= 0 && values[best] > 0 ? `${labels[best]} (${values[best]})` : null;
}

function sentence(what, labels, values, unit) {
  const sum = values.reduce((a, b) => a + (b || 0), 0);
  const top = most(labels, values);
  return `${sum} ${unit} ${what}.${top ? ` Most: ${top}.` : ""}`;
}

function total(label, value) {
  const card = document.createElement("div");
  card.className = "figure card";
  const name = document.createElement("span");
  name.className = "figure-label";
  name.textContent = label;
  const number = document.createElement("span");
  number.className = "figure-value";
  number.textContent = value;
  card.append(name, number);
  return card;
}

function drawLevels(report) {
  const service = report.totals.service;
  // In a fixed order (JSON objects come with their keys sorted).
  const order = ["answered_in_time", "answered_in_time_all", "abandoned_after", "callbacks_in_time"];
  const rows = order.filter((key) => report.definitions[key]).map((key) => {
    const definition = report.definitions[key];
    const row = document.createElement("tr");
    const state = service.status[key];
    const [symbol, words] = STATUS[state];
    const target = definition.higher_is_better ? `at least ${pct(definition.target)}` : `under ${pct(definition.target)}`;
    const cells = [definition.label, pct(service[key]), target, `${symbol} ${words}`, definition.definition];
    cells.forEach((text, index) => {
      const cell = document.createElement(index === 0 ? "th" : "td");
      if (index === 0) cell.scope = "row";
      cell.textContent = text;
      if (index === 3) cell.className = `level level-${state}`;
      row.append(cell);
    });
    row.dataset.level = key;
    return row;
  });
  $("level-rows").replaceChildren(...rows);
}

function drawReport(report) {
  const t = report.totals;
  drawLevels(report);
  $("totals").replaceChildren(
    total("Calls", String(t.calls)), total("Reached the line", String(t.reached_line)), total("Answered", String(t.answered)),
    total("Abandoned", pct(t.abandonment_rate)), total("Average wait", t.avg_answer_s == null ? "–" : clock(t.avg_answer_s)),
    total("Average handling", t.avg_handle_s == null ? "–" : clock(t.avg_handle_s)), total("Bookings", String(report.bookings.total)),
  );
  const days = report.by_day;
  const dayNames = days.map((d) => dayLabel(d.date));
  draw("chart-days", bars(dayNames, [
    { name: "Calls", values: days.map((d) => d.calls) }, { name: "Answered", values: days.map((d) => d.answered) },
  ]), sentence("over the period", dayNames, days.map((d) => d.calls), "calls"),
  ["Day", "Calls", "Answered", "Abandoned"], days.map((d) => [dayNames[days.indexOf(d)], d.calls, d.answered, d.abandoned]));

  const hours = report.by_hour;
  const hourNames = hours.map((h) => hourLabel(h.hour));
  draw("chart-hours", bars(hourNames, [
    { name: "Calls", values: hours.map((h) => h.calls) }, { name: "Answered", values: hours.map((h) => h.answered) },
  ]), sentence("by the hour they started", hourNames, hours.map((h) => h.calls), "calls"),
  ["Hour", "Calls", "Answered", "Abandoned"], hours.map((h, i) => [hourNames[i], h.calls, h.answered, h.abandoned]));

  // Over a single day, service level by hour; over longer, by day.
  const byHour = days.length === 1;
  const points = byHour ? hours : days;
  const names = byHour ? hourNames : dayNames;
  const defs = report.definitions;
  const target = defs.answered_in_time.target * 100;
  const asPercent = (rate) => (rate == null ? null : Math.round(rate * 1000) / 10);
  draw("chart-service", {
    type: "line",
    data: {
      labels: names,
      datasets: [
        { label: defs.answered_in_time.label, data: points.map((p) => asPercent(p.service.answered_in_time)),
          borderColor: BLUE, backgroundColor: BLUE, pointStyle: "circle", pointRadius: 4, borderWidth: 3 },
        { label: defs.answered_in_time_all.label, data: points.map((p) => asPercent(p.service.answered_in_time_all)),
          borderColor: ORANGE, backgroundColor: ORANGE, pointStyle: "triangle", pointRadius: 5, borderWidth: 3, borderDash: [8, 4] },
        { label: `Target (${target}%)`, data: points.map(() => target), borderColor: INK, backgroundColor: INK,
          pointRadius: 0, pointStyle: "line", borderWidth: 2, borderDash: [3, 3] },
      ],
    },
    options: {
      scales: {
        y: { min: 0, max: 100, ticks: { stepSize: 20, callback: (value) => `${value}%` }, title: { display: true, text: "Share of calls" } },
        x: { ticks: { autoSkip: true, maxRotation: 0 } },
      },
      plugins: { legend: { position: "bottom", labels: { usePointStyle: true, boxHeight: 8, pointStyleWidth: 22 } } },
    },
  }, `${defs.answered_in_time.label}: ${pct(t.service.answered_in_time)} over the period, against a target of ${target}%; `
     + `${defs.answered_in_time_all.label}: ${pct(t.service.answered_in_time_all)}. Hours or days with no answered call have no point.`,
  [byHour ? "Hour" : "Day", defs.answered_in_time.label, defs.answered_in_time_all.label, "Against target"],
  points.map((p, i) => [names[i], pct(p.service.answered_in_time), pct(p.service.answered_in_time_all),
    STATUS[p.service.status.answered_in_time][1]]));

  const threshold = report.targets.abandon_after_s;
  draw("chart-abandon", bars(names, [
    { name: `Within ${threshold} s (short)`, values: points.map((p) => p.service.abandoned_short) },
    { name: `After ${threshold} s`, values: points.map((p) => p.service.abandoned_after_threshold) },
  ], { stacked: true }),
  `Hung up after waiting more than ${threshold} s: ${t.service.abandoned_after_threshold} `
    + `(${pct(t.service.abandoned_after)} of those who left the line; target under ${pct(defs.abandoned_after.target)}). `
    + `Hung up within ${threshold} s: ${t.service.abandoned_short}.`,
  [byHour ? "Hour" : "Day", `Within ${threshold} s`, `After ${threshold} s`, "Rate after"],
  points.map((p, i) => [names[i], p.service.abandoned_short, p.service.abandoned_after_threshold, pct(p.service.abandoned_after)]));

  const outcomes = Object.entries(report.outcomes);
  const outcomeNames = outcomes.map(([code]) => OUTCOMES[code] || humanise(code));
  draw("chart-outcomes", bars(outcomeNames, [{ name: "Calls", values: outcomes.map(([, n]) => n) }], { horizontal: true }),
    sentence("by how they ended", outcomeNames, outcomes.map(([, n]) => n), "calls"),
    ["Outcome", "Calls"], outcomes.map(([, n], i) => [outcomeNames[i], n]));

  const channels = Object.entries(report.channels);
  const channelNames = channels.map(([code]) => CHANNELS[code] || humanise(code));
  draw("chart-channels", bars(channelNames, [{ name: "Calls", values: channels.map(([, n]) => n) }], { horizontal: true }),
    sentence("that reached the line, by channel", channelNames, channels.map(([, n]) => n), "calls"),
    ["Channel", "Calls"], channels.map(([, n], i) => [channelNames[i], n]));

  const places = report.bookings.by_locality;
  const placeNames = places.map((p) => p.name);
  draw("chart-localities", bars(placeNames, [{ name: "Bookings", values: places.map((p) => p.bookings) }], { horizontal: true, axis: "Bookings" }),
    sentence("booked, by locality", placeNames, places.map((p) => p.bookings), "appointments"),
    ["Locality", "Bookings"], places.map((p) => [p.name, p.bookings]));

  const professions = report.bookings.by_profession;
  const professionNames = professions.map((p) => humanise(p.profession));
  draw("chart-professions", bars(professionNames, [{ name: "Bookings", values: professions.map((p) => p.bookings) }], { horizontal: true, axis: "Bookings" }),
    sentence("booked, by profession", professionNames, professions.map((p) => p.bookings), "appointments"),
    ["Profession", "Bookings"], professions.map((p, i) => [professionNames[i], p.bookings]));
}

async function load() {
  const params = new URLSearchParams({ from: form.elements.from.value, to: form.elements.to.value });
  $("csv").href = `/api/reports/calls.csv?${params}`;
  $("figures-csv").href = `/api/reports/summary.csv?${params}`;
  $("period-error").textContent = "";
  try {
    const report = await api("GET", `/api/reports/summary?${params}`);
    drawReport(report);
    $("shown").textContent = report.from === report.to ? `Showing ${dayLabel(report.from)} (London time).`
      : `Showing ${dayLabel(report.from)} to ${dayLabel(report.to)} (London time).`;
  } catch (exc) {
    $("period-error").textContent = exc instanceof ApiError ? exc.message : "Could not load the report.";
  }
}

/** The first and last day of a preset, in the browser's calendar. */
function preset(name) {
  const now = new Date();
  const back = (days) => new Date(now.getFullYear(), now.getMonth(), now.getDate() - days);
  if (name === "today") return [now, now];
  if (name === "month") return [new Date(now.getFullYear(), now.getMonth(), 1), now];
  if (name === "last-month") return [new Date(now.getFullYear(), now.getMonth() - 1, 1), new Date(now.getFullYear(), now.getMonth(), 0)];
  return [back(Number(name) - 1), now];
}

form.querySelectorAll("[data-preset]").forEach((button) => {
  button.addEventListener("click", () => {
    const [first, last] = preset(button.dataset.preset);
    form.elements.from.value = isoDay(first);
    form.elements.to.value = isoDay(last);
    form.querySelectorAll("[data-preset]").forEach((other) => other.setAttribute("aria-pressed", String(other === button)));
    load();
  });
});
form.addEventListener("submit", (event) => {
  event.preventDefault();
  form.querySelectorAll("[data-preset]").forEach((other) => other.setAttribute("aria-pressed", "false"));
  load();
});
const initial = new URLSearchParams(window.location.search);
form.elements.from.value = initial.get("from") || isoDay(new Date());
form.elements.to.value = initial.get("to") || form.elements.from.value;
load();
focusHeading();
