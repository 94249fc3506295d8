// The consoles' browser softphone: Twilio's Voice JavaScript SDK (vendor/twilio.min.js), registered as
// the signed-in user's own identity, answering only the calls its page asked for.
//
// The token comes from GET /api/voice/token and is renewed before it runs out (tokenWillExpire), so a
// shift never needs a reload. With the local Twilio emulator the token names where to signal
// (`signalling`), and the SDK is pointed there; nothing is sent to Twilio's hosts (no insights, no
// sounds fetched from its CDN: the console rings with its own tone).
import { api } from "./common.js";

// The SDK's sounds, from this server: its defaults would be fetched from Twilio's CDN. The console rings
// with its own soft tone, so ringing and key tones are quiet; the end of a call has a soft cue.
const QUIET = new URL("sounds/quiet.wav", import.meta.url).href;
const SOUNDS = {
  incoming: QUIET, outgoing: QUIET, disconnect: new URL("sounds/ended.wav", import.meta.url).href,
  dtmfs: QUIET, dtmfh: QUIET,
  ...Object.fromEntries(Array.from({ length: 10 }, (_, digit) => [`dtmf${digit}`, QUIET])),
};

/** What the status says while the softphone is registered and has no call, and while it is not registered. */
export const READY = "Softphone ready: calls you accept ring here.";
export const OFFLINE = "Softphone offline; reconnecting…";

const say = (element, ...parts) => {
  if (element) element.replaceChildren(...parts);
};

export class Softphone {
  /**
   * @param {object} options
   * @param {HTMLElement} options.status where the softphone says, in words, how it is
   * @param {HTMLElement} [options.certificate] shown (with its link set) when the browser must trust the emulator's certificate
   * @param {(call: object) => boolean} [options.shouldAnswer] answer this incoming call? Otherwise it is ignored
   *   (left to ring elsewhere), never rejected, so a second tab never takes a call from the first.
   * @param {() => void} [options.onChange] called on any change of registration or call
   * @param {(call: object) => void} [options.onRing] a ring shouldAnswer did not take: the page asks its
   *   user, then calls answer(call) or ignore(call). Without it such a ring is ignored at once.
   */
  constructor({ status, certificate = null, shouldAnswer = null, onChange = () => {}, onRing = null }) {
    this.status = status;
    this.certificate = certificate;
    this.shouldAnswer = shouldAnswer || (() => this.expecting);
    this.onChange = onChange;
    this.onRing = onRing;
    this.ringing = null;
    this.device = null;
    this.call = null;
    this.identity = null;
    this.info = null;
    // The page's own "I am expecting a call" flag (the handler pressed Accept); used when no shouldAnswer is given.
    this.expecting = false;
    this.problem = null;
    // One softphone per page; named for the browser tests and for anyone diagnosing audio in devtools.
    window.helplineSoftphone = this;
  }

  get ready() {
    return Boolean(this.device && this.device.state === "registered");
  }

  get inCall() {
    return Boolean(this.call && this.call.status() === "open");
  }

  get muted() {
    return Boolean(this.call && this.call.isMuted());
  }

  mute(on) {
    if (this.call) this.call.mute(Boolean(on));
    this.onChange();
  }

  hangup() {
    if (this.call) this.call.disconnect();
  }

  /** Bytes of audio this tab has received and sent on the call in hand (for the audio indicator and tests). */
  async audioStats() {
    const pc = this.call && this.call._mediaHandler && this.call._mediaHandler.version && this.call._mediaHandler.version.pc;
    if (!pc) return null;
    const totals = { bytesReceived: 0, bytesSent: 0 };
    (await pc.getStats()).forEach((report) => {
      if (report.type === "inbound-rtp" && report.kind === "audio") totals.bytesReceived += report.bytesReceived || 0;
      if (report.type === "outbound-rtp" && report.kind === "audio") totals.bytesSent += report.bytesSent || 0;
    });
    return totals;
  }

  async start() {
    if (!(window.Twilio && window.Twilio.Device)) {
      this.fail("The softphone's library did not load, so calls cannot ring here. Reload the page; if it persists, tell an administrator.");
      return;
    }
    let info;
    try {
      info = await this.fetchToken();
    } catch (exc) {
      this.fail(`The softphone is not available: ${exc.message || exc}`);
      return;
    }
    if (info.mode !== "twilio") {
      this.fail(`The browser softphone is not available: ${info.reason}.`);
      return;
    }
    this.identity = info.identity;
    const options = {
      closeProtection: "A call is in progress in this tab; leaving the page ends it.",
      publishEvents: false,
      logLevel: "warn",
      allowIncomingWhileBusy: false,
      codecPreferences: ["opus", "pcmu"],
      sounds: SOUNDS,
    };
    if (info.signalling) options.chunderw = info.signalling;
    try {
      this.device = new window.Twilio.Device(info.token, options);
    } catch (exc) {
      this.fail(`The browser softphone could not start: ${exc.message || exc}`);
      return;
    }
    this.listen(this.device);
    say(this.status, "Connecting your softphone…");
    try {
      await this.device.register();
    } catch (exc) {
      this.explainError(exc);
    }
  }

  async fetchToken() {
    const info = await api("GET", "/api/voice/token");
    this.info = info;
    return info;
  }

  listen(device) {
    device.on("registered", () => {
      this.problem = null;
      if (this.certificate) this.certificate.hidden = true;
      say(this.status, this.call ? "On a call in this tab." : READY);
      this.onChange();
    });
    device.on("unregistered", () => {
      if (!this.problem) say(this.status, OFFLINE);
      this.onChange();
    });
    device.on("error", (error) => this.explainError(error));
    device.on("tokenWillExpire", () => this.renew());
    device.on("incoming", (call) => this.incoming(call));
  }

  async renew() {
    try {
      const info = await this.fetchToken();
      if (info.mode === "twilio") this.device.updateToken(info.token);
    } catch (exc) {
      say(this.status, `Could not renew the softphone's access: ${exc.message || exc}. It will stop taking calls when the current access runs out.`);
    }
  }

  incoming(call) {
    if (this.call || this.ringing) {
      call.ignore(); // one line: busy here, so it rings on elsewhere
      return;
    }
    if (this.shouldAnswer(call)) {
      this.answer(call);
      return;
    }
    if (!this.onRing) {
      // Not for this tab: leave it ringing wherever it was meant for, and say nothing to the network.
      call.ignore();
      return;
    }
    this.ringing = call;
    const gone = () => {
      if (this.ringing !== call) return;
      this.ringing = null;
      this.onChange();
    };
    call.on("cancel", gone);
    call.on("disconnect", gone);
    this.onRing(call);
    this.onChange();
  }

  /** Leave a ring the page's user did not take: it rings on elsewhere or runs out; nothing is sent. */
  ignore(call) {
    if (this.ringing === call) this.ringing = null;
    call.ignore();
    this.onChange();
  }

  answer(call) {
    if (this.ringing === call) this.ringing = null;
    this.call = call;
    const ended = () => {
      if (this.call !== call) return;
      this.call = null;
      say(this.status, this.ready ? READY : OFFLINE);
      this.onChange();
    };
    call.on("accept", () => {
      say(this.status, "On a call in this tab.");
      this.onChange();
    });
    call.on("mute", () => this.onChange());
    call.on("reconnecting", () => {
      say(this.status, "The connection dropped; reconnecting the call…");
      this.onChange();
    });
    call.on("reconnected", () => {
      say(this.status, "On a call in this tab.");
      this.onChange();
    });
    call.on("disconnect", ended);
    call.on("cancel", ended);
    call.on("reject", ended);
    call.on("error", (error) => this.explainError(error));
    call.accept();
    this.onChange();
  }

  explainError(error) {
    const code = error && error.code;
    const text = (error && (error.message || error.description)) || String(error);
    if ([31000, 31005, 31009, 53000].includes(code) && this.info && this.info.certificate_url && !this.ready) {
      // The usual first-run problem with the local emulator: the browser does not yet trust its certificate.
      this.problem = "certificate";
      say(this.status, `Could not reach the softphone's signalling at ${this.info.signalling}.`);
      if (this.certificate) {
        const link = this.certificate.querySelector("a");
        if (link) link.href = this.info.certificate_url;
        this.certificate.hidden = false;
      }
    } else if (code === 31205 || code === 20104) {
      this.problem = "expired";
      say(this.status, "The softphone's access ran out; reload the page to get a new one.");
    } else {
      say(this.status, `Softphone problem: ${text}${code ? ` (${code})` : ""}`);
    }
    this.onChange();
  }

  fail(text) {
    this.problem = "unavailable";
    say(this.status, text);
    this.onChange();
  }
}
