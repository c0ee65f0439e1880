// The console's only script of its own (no inline script: the page's CSP forbids it).
// When a page's event stream opens, the first time or again after a drop, the page's live
// parts are fetched again: what happened while it was away is then shown, not missed.
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
})();
