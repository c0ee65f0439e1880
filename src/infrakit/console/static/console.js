// The console's only script of its own (no inline script: the page's CSP forbids it).
// When a page's event stream opens, the first time or again after a drop, the page's live
// parts are fetched again: what happened while it was away is then shown, not missed.
// The word at the top says whether the page is up to date: a stream that fails, or a
// periodic refresh that cannot reach the console, makes it "reconnecting…" (a browser does
// not always notice at once that a long-lived stream was cut); the next refresh that
// succeeds, or the stream opening again, makes it "live" once more.
(function () {
  "use strict";
  function say(words) {
    var state = document.getElementById("live-state");
    if (state) { state.textContent = words; }
  }
  document.addEventListener("htmx:sseOpen", function () {
    say("live");
    document.querySelectorAll("[data-refresh]").forEach(function (part) {
      htmx.trigger(part, "refresh");
    });
  });
  document.addEventListener("htmx:sseError", function () {
    say("reconnecting…");
  });
  document.addEventListener("htmx:sendError", function () {
    say("reconnecting…");
  });
  document.addEventListener("htmx:afterRequest", function (event) {
    var part = event.detail.elt;
    if (event.detail.successful && part && part.hasAttribute("data-refresh")) {
      say("live");
    }
  });
})();
