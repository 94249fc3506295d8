// The installable app's service worker: keeps the information and self-help pages (and the files they
// need) for reading offline. It never stores anything a person typed: only GET requests for the pages
// and files listed below are ever cached, never the form's pages, never a POST, never the API.
const CACHE = "helpline-public-v1";
const PAGES = ["/", "/what-we-offer", "/confidentiality", "/self-help", "/contact-us", "/offline"];
const FILES = [
  "/public/design-system.css",
  "/public/static/vendor/nhsuk-frontend.min.js",
  "/public/static/public.css",
  "/public/static/public.js",
  "/public/static/icons/icon-192.png",
];
const KEPT = new Set([...PAGES, ...FILES]);

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll([...PAGES, ...FILES])).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches.keys()
      .then((names) => Promise.all(names.filter((name) => name !== CACHE).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin || !KEPT.has(url.pathname) || url.search) {
    // Everything else (the form, its answers, the API, the console) goes to the network only.
    if (request.mode === "navigate" && request.method === "GET" && url.origin === self.location.origin) {
      event.respondWith(fetch(request).catch(() => caches.match("/offline")));
    }
    return;
  }
  // Network first, so that pages are current; the kept copy when there is no connection.
  event.respondWith(
    fetch(request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(CACHE).then((cache) => cache.put(url.pathname, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname).then((kept) => kept || caches.match("/offline"))),
  );
});
