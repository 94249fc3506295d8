// Reports over a period (GET /api/reports/summary), drawn as plain SVG bar charts (no chart library),
// with the period's CSV (GET /api/reports/calls.csv) one link away.
import { $, ApiError, api, clock, humanise, setLoginUrl } from "./common.js";

setLoginUrl($("reports").dataset.loginUrl);

const form = $("period");
const SVG = "http://www.w3.org/2000/svg";
const today = () => new Date().toLocaleDateString("en-CA");
const pct = (rate) => (rate == null ? "–" : `${Math.round(rate * 100)}%`);

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  if (text != null) node.textContent = text;
  return node;
}

/**
 * Draw grouped bars: `labels` along the bottom, one bar per series per label, with a title on each
 * bar for its exact value (read by screen readers and shown on hover).
 */
function barChart(container, labels, series, { labelEvery = 1 } = {}) {
  const width = 560;
  const height = 220;
  const left = 34;
  const bottom = 28;
  const top = 10;
  const max = Math.max(1, ...series.flatMap((item) => item.values));
  const band = (width - left - 4) / Math.max(1, labels.length);
  const barWidth = Math.max(1, (band * 0.8) / series.length);
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
  chart.append(svg("title", {}, series.map((item) => item.name).join(" and ")));
  for (const fraction of [0, 0.5, 1]) {
    const y = top + (height - top - bottom) * (1 - fraction);
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, stroke: "#d5dae3" }));
    chart.append(svg("text", { x: left - 4, y: y + 4, "text-anchor": "end" }, String(Math.round(max * fraction))));
  }
  labels.forEach((label, index) => {
    series.forEach((item, which) => {
      const value = item.values[index] || 0;
      const barHeight = ((height - top - bottom) * value) / max;
      const x = left + index * band + band * 0.1 + which * barWidth;
      const bar = svg("rect", { x, y: height - bottom - barHeight, width: barWidth, height: barHeight, class: which ? "bar alt" : "bar" });
      bar.append(svg("title", {}, `${label}: ${value} ${item.name.toLowerCase()}`));
      chart.append(bar);
    });
    if (index % labelEvery === 0) {
      chart.append(svg("text", { x: left + index * band + band / 2, y: height - 10, "text-anchor": "middle" }, label));
    }
  });
  container.replaceChildren(chart);
  if (series.length > 1) {
    const key = document.createElement("p");
    key.className = "muted";
    key.textContent = series.map((item, which) => `${which ? "lilac" : "blue"}: ${item.name}`).join(" · ");
    container.append(key);
  }
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

function draw(report) {
  const t = report.totals;
  $("totals").replaceChildren(
    total("Calls", String(t.calls)), total("Reached the queue", String(t.reached_queue)), total("Answered", String(t.answered)),
    total("Answered in 20 s", pct(t.service_level_20s)), total("Answered in 60 s", pct(t.service_level_60s)),
    total("Abandoned", pct(t.abandonment_rate)), total("Average wait", t.avg_answer_s == null ? "–" : clock(t.avg_answer_s)),
    total("Average handling", t.avg_handle_s == null ? "–" : clock(t.avg_handle_s)), total("Bookings", String(report.bookings.total)),
  );
  const days = report.by_day;
  const every = Math.ceil(days.length / 12);
  const dayLabel = (item) => item.date.slice(5);
  barChart($("chart-days"), days.map(dayLabel), [{ name: "Calls", values: days.map((d) => d.calls) }], { labelEvery: every });
  barChart($("chart-hours"), report.by_hour.map((h) => String(h.hour).padStart(2, "0")),
    [{ name: "Calls", values: report.by_hour.map((h) => h.calls) }], { labelEvery: 3 });
  barChart($("chart-service"), days.map(dayLabel), [
    { name: "Answered", values: days.map((d) => d.answered) },
    { name: "Abandoned", values: days.map((d) => d.abandoned) },
  ], { labelEvery: every });
  const outcomes = Object.entries(report.outcomes);
  barChart($("chart-outcomes"), outcomes.map(([name]) => humanise(name)), [{ name: "Calls", values: outcomes.map(([, n]) => n) }]);
  const places = report.bookings.by_locality;
  barChart($("chart-localities"), places.map((p) => p.code), [{ name: "Bookings", values: places.map((p) => p.bookings) }]);
  const professions = report.bookings.by_profession;
  barChart($("chart-professions"), professions.map((p) => humanise(p.profession)),
    [{ name: "Bookings", values: professions.map((p) => p.bookings) }]);
}

async function load() {
  const params = new URLSearchParams({ from: form.elements.from.value, to: form.elements.to.value });
  $("csv").href = `/api/reports/calls.csv?${params}`;
  $("period-error").textContent = "";
  try {
    draw(await api("GET", `/api/reports/summary?${params}`));
  } catch (exc) {
    $("period-error").textContent = exc instanceof ApiError ? exc.message : "Could not load the report.";
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
form.elements.from.value = today();
form.elements.to.value = today();
load();
