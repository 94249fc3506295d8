// A display-only wall screen: the wallboard's figures, read every few seconds with the screen's token
// (from the address after `#token=`, which browsers never send to a server), with no log-in to time
// out. A revoked token stops the screen at its next read and says so.
import { $, clock, startTicker } from "./common.js";
import { drawWall } from "./wallboard.js";

const EVERY_MS = 5000;
const token = new URLSearchParams(window.location.hash.slice(1)).get("token") || "";
const banner = $("connection");
let longestSince = null;

function say(state, text) {
  banner.dataset.state = state;
  banner.textContent = text;
  banner.hidden = state === "connected";
}

async function read() {
  if (!token) {
    say("error", "This screen has no display token: open the address that \"helpline display create\" printed.");
    return;
  }
  try {
    const response = await fetch("/api/display/wallboard", {
      headers: { Authorization: `Bearer ${token}`, Accept: "application/json" }, cache: "no-store", credentials: "omit",
    });
    if (response.status === 401) {
      say("error", "This screen's display token is not valid or has been revoked.");
      longestSince = null;
      return;
    }
    if (!response.ok) throw new Error(String(response.status));
    longestSince = drawWall(await response.json());
    say("connected", "");
  } catch (exc) {
    say("error", "Cannot reach the helpline; trying again…");
  } finally {
    setTimeout(read, EVERY_MS);
  }
}

startTicker((now) => {
  $("wb-longest").textContent = clock(longestSince == null ? 0 : (now - longestSince) / 1000);
});
read();
