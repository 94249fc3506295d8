// The wall screen's figures, drawn from the `wallboard` body: by supervisor.js for a signed-in
// supervisor (pushed over Socket.IO), and by display.js for a display-only screen (polled with its
// token). Service levels show today's figure large, the last hour's beside it, the target, and how
// it stands against the target in words and a symbol as well as the tile's colour.
import { $, clock } from "./common.js";

const pct = (rate) => (rate == null ? "–" : `${Math.round(rate * 100)}%`);
const STATUS = {
  green: ["✓", "On target"], amber: ["▲", "Near target"], red: ["✕", "Off target"], none: ["–", "No calls yet"],
};
// The tiles and the service levels they show, in the order of the definitions underneath.
const LEVELS = [
  ["wb-sl-answered", "answered_in_time"],
  ["wb-sl-all", "answered_in_time_all"],
  ["wb-abandoned", "abandoned_after"],
  ["wb-sl-callbacks", "callbacks_in_time"],
];

const setText = (id, text) => {
  const node = $(id);
  if (node) node.textContent = text;
};

function drawLevels(levels) {
  if (!levels) return;
  const definitions = levels.definitions || {};
  const list = [];
  for (const [id, key] of LEVELS) {
    const definition = definitions[key];
    const today = levels.today || {};
    const state = (today.status || {})[key] || "none";
    const [symbol, words] = STATUS[state];
    if (definition) {
      setText(`${id}-label`, definition.label);
      setText(`${id}-target`, `${definition.higher_is_better ? "≥" : "<"} ${pct(definition.target)}`);
      const pair = document.createElement("div");
      const term = document.createElement("dt");
      term.textContent = definition.label;
      const text = document.createElement("dd");
      text.textContent = definition.definition;
      pair.append(term, text);
      list.push(pair);
    }
    setText(id, pct(today[key]));
    setText(`${id}-status`, `${symbol} ${words}`);
    setText(`${id}-now`, pct((levels.now || {})[key]));
    const tile = $(id)?.closest(".wb-tile");
    if (tile) tile.dataset.level = state;
  }
  $("wb-definitions")?.replaceChildren(...list);
}

/** A service level's standing against its target, in a symbol and words (never colour alone). */
export function levelWords(state) {
  const [symbol, words] = STATUS[state || "none"];
  return `${symbol} ${words}`;
}

/** The wait a caller joining now can expect, as the wall says it (wait_estimate.py). */
export function expectedWait(estimate) {
  if (!estimate) return "–";
  if (estimate.seconds == null) return "nobody on duty";
  if (estimate.seconds < 60) return "under 1 min";
  return `about ${Math.ceil(estimate.seconds / 60)} min`;
}

/** Draw every figure of the wall screen; returns when the longest-waiting caller joined (ms), or null. */
export function drawWall(board) {
  const today = board.today || {};
  const presence = board.handlers || {};
  setText("wb-waiting", String(board.waiting));
  setText("wb-available", String(presence.available || 0));
  setText("wb-oncall", String((presence.on_call || 0) + (presence.wrap_up || 0) + (presence.offered || 0)));
  setText("wb-away", `${presence.break || 0} · ${presence.offline || 0}`);
  setText("wb-callbacks", String(board.callbacks_due));
  setText("wb-callbacks-later", String(board.callbacks_later || 0));
  setText("wb-answered", String(today.answered || 0));
  setText("wb-calls", String(today.calls || 0));
  setText("wb-updated", new Date(board.at).toLocaleTimeString("en-GB"));
  const alerts = board.alerts || [];
  setText("wb-alerts", String(alerts.length));
  setText("wb-alert-latest", alerts.length
    ? new Date(alerts[0].at).toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" }) : "none");
  const alertTile = $("wb-alerts")?.closest(".wb-tile");
  if (alertTile) alertTile.dataset.level = alerts.length ? "bad" : "ok";
  drawLevels(board.service_levels);
  setText("wb-expected", expectedWait(board.expected_wait));
  const waitingTile = $("wb-waiting")?.closest(".wb-tile");
  if (waitingTile) waitingTile.dataset.level = board.waiting === 0 ? "ok" : board.longest_wait_s > 60 ? "bad" : "warn";
  const longestTile = $("wb-longest")?.closest(".wb-tile");
  if (longestTile) longestTile.dataset.level = board.longest_wait_s > 60 ? "bad" : board.longest_wait_s > 20 ? "warn" : "ok";
  return board.waiting ? Date.now() - board.longest_wait_s * 1000 : null;
}
