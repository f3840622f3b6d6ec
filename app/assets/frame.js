// Runs inside /embed/t/{key}, framed by another site through embed.js. It tells the
// embedding page how tall the thread is (on load and whenever the thread changes size:
// live comments, the reply form, collapsing), where a permalinked comment sits, and which
// permalink was clicked. It posts only to the parent origin the server checked against
// [embed] allowed_origins; frame-ancestors guarantees the parent is one of them.
(function () {
  var root = document.querySelector("[data-moderato-embed]");
  var origin = root && root.getAttribute("data-parent-origin");
  if (!origin || window.parent === window) return;
  function send(msg) {
    msg.moderato = 1;
    window.parent.postMessage(msg, origin);
  }
  function offset(el) {
    return Math.round(el.getBoundingClientRect().top - root.getBoundingClientRect().top);
  }
  var last = -1;
  function report() {
    var h = Math.ceil(root.getBoundingClientRect().height);
    if (h !== last) {
      last = h;
      send({ type: "height", height: h });
    }
  }
  new ResizeObserver(report).observe(root);
  report();
  var wanted = root.getAttribute("data-comment");
  var el = wanted && document.getElementById("c" + wanted);
  if (el) send({ type: "scroll", id: wanted, top: offset(el) });
  // The frame never scrolls, so a permalink must move the host page instead. Capture
  // phase, so the client-side router never sees the click.
  document.addEventListener(
    "click",
    function (e) {
      var a = e.target.closest && e.target.closest("a.permalink");
      var c = a && a.closest("article.comment");
      if (!c) return;
      e.preventDefault();
      send({ type: "permalink", id: c.getAttribute("data-id"), top: offset(c) });
    },
    true
  );
})();
