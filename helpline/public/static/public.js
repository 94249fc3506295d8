// Progressive enhancement only: every page works without this file.
// - the NHS design system's behaviour (conditional questions, the header's menu, error summary focus);
// - the installable app's service worker, which keeps information pages for offline reading.
import { initAll } from "./vendor/nhsuk-frontend.min.js";

document.body.classList.add("js-enabled", "nhsuk-frontend-supported");
initAll();

if ("serviceWorker" in navigator) {
  navigator.serviceWorker.register("/service-worker.js", { scope: "/" }).catch(() => {
    // No offline reading in this browser; the pages work as they are.
  });
}
