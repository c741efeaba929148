/* linger-sched dashboard: live updates without a full reload.
 *
 * Every few seconds (body[data-refresh], 0 = off) the page asks the server again for its own
 * URL with the header "X-Linger-Fragment: live" and swaps the returned fragment into #live.
 * The fragment is the same server-rendered, escaped HTML as the full page's #live element;
 * it carries its own "data read at HH:MM:SS (zone)" line. Nothing runs while the tab is hidden
 * or when the user pauses the updates. No inline script, no eval: the page's CSP allows
 * scripts from the dashboard itself only. */
(function () {
  "use strict";
  var every = parseFloat(document.body.getAttribute("data-refresh") || "0");
  var live = document.getElementById("live");
  var status = document.getElementById("live-status");
  var toggle = document.getElementById("live-toggle");
  if (!live || !(every > 0) || !window.fetch) {
    return;
  }
  var paused = false;
  var busy = false;

  function say(text, bad) {
    if (status) {
      status.textContent = text;
      status.className = bad ? "bad" : "";
    }
  }

  function refresh() {
    if (paused || busy || document.hidden) {
      return;
    }
    busy = true;
    window.fetch(window.location.href, {
      headers: {"X-Linger-Fragment": "live"},
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) {
      if (!response.ok) {
        throw new Error("HTTP " + response.status);
      }
      return response.text();
    }).then(function (html) {
      live.innerHTML = html;
      say("live", false);
    }).catch(function (error) {
      say("update failed (" + error.message + "): showing older data", true);
    }).then(function () {
      busy = false;
    });
  }

  if (toggle) {
    toggle.hidden = false;
    toggle.addEventListener("click", function () {
      paused = !paused;
      toggle.textContent = paused ? "Resume updates" : "Pause updates";
      say(paused ? "updates paused" : "live", false);
      if (!paused) {
        refresh();
      }
    });
  }
  say("live", false);
  window.setInterval(refresh, every * 1000);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
}());
