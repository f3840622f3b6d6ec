// Moderato's comment counts: fills every <span data-moderato-count="KEY"> on the page with
// that thread's number of published comments, in one request per 100 threads.
(function () {
  var me = document.currentScript;
  if (!me) return;
  var base = new URL(me.src).origin;

  function label(el, n) {
    if (el.getAttribute("data-moderato-count-format") === "number") return String(n);
    return n === 0 ? "No comments" : n === 1 ? "1 comment" : n + " comments";
  }

  function run() {
    var spans = document.querySelectorAll("[data-moderato-count]");
    var keys = [];
    for (var i = 0; i < spans.length; i++) {
      var k = spans[i].getAttribute("data-moderato-count");
      if (k && keys.indexOf(k) < 0) keys.push(k);
    }
    for (var s = 0; s < keys.length; s += 100) {
      fetch(base + "/api/counts?threads=" + keys.slice(s, s + 100).map(encodeURIComponent).join(","))
        .then(function (r) {
          return r.ok ? r.json() : null;
        })
        .then(function (d) {
          if (!d || !d.counts) return;
          for (var j = 0; j < spans.length; j++) {
            var n = d.counts[spans[j].getAttribute("data-moderato-count")];
            if (typeof n === "number") spans[j].textContent = label(spans[j], n);
          }
        })
        .catch(function () {});
    }
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
})();
