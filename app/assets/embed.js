// Moderato's embed script: every #moderato-thread or [data-moderato-thread] element on the
// page becomes an iframe of that thread, served by the Moderato site this script came from.
// The frame reports its height, so it never scrolls inside; a server-rendered fragment
// already in the element stays until the frame is ready, then the frame replaces it.
(function () {
  var me = document.currentScript;
  if (!me) return;
  var base = new URL(me.src).origin;
  var frames = [];
  // What a site owner may restyle with CSS custom properties on the element.
  var vars = ["accent", "fg", "bg", "muted", "line", "soft", "font"];

  function pageUrl(el) {
    var canon = document.querySelector("link[rel=canonical]");
    var u;
    try {
      u = new URL(el.getAttribute("data-url") || (canon && canon.href) || location.href, location.href);
    } catch (e) {
      u = new URL(location.href);
    }
    u.search = "";
    u.hash = "";
    return u.href;
  }

  // Without data-thread the page's path is the key: "/2026/my-post/" -> "2026-my-post".
  function keyOf(url) {
    var k = new URL(url).pathname.replace(/[^A-Za-z0-9._~-]+/g, "-").replace(/^-+|-+$/g, "");
    return k || "index";
  }

  function mount(el) {
    if (el.moderatoFrame) return;
    var url = pageUrl(el);
    var q = new URLSearchParams();
    q.set("origin", location.origin);
    q.set("url", url);
    q.set("title", el.getAttribute("data-title") || document.title);
    q.set("theme", el.getAttribute("data-theme") || "light");
    var style = getComputedStyle(el);
    for (var i = 0; i < vars.length; i++) {
      var v = style.getPropertyValue("--moderato-" + vars[i]).trim();
      if (v) q.set("css-" + vars[i], v);
    }
    var m = /^#comment-(\d+)$/.exec(location.hash);
    if (m) q.set("comment", m[1]);
    var f = document.createElement("iframe");
    var waiting = el.children.length > 0;
    f.src = base + "/embed/t/" + encodeURIComponent(el.getAttribute("data-thread") || keyOf(url)) + "?" + q;
    f.title = "Comments";
    f.setAttribute("scrolling", "no");
    // In the flow at full width (so the frame lays out at its real width) but invisible
    // while an included fragment is shown instead.
    f.style.cssText =
      "display:block;width:100%;border:0;overflow:hidden;" +
      (waiting ? "height:0;visibility:hidden" : "height:150px");
    el.moderatoFrame = f;
    el.appendChild(f);
    frames.push({ el: el, f: f, waiting: waiting });
  }

  function receive(r, d) {
    if (d.type === "height" && d.height >= 0 && d.height < 1e6) {
      r.f.style.height = Math.ceil(d.height) + "px";
      if (r.waiting) {
        r.waiting = false;
        for (var n = r.el.firstChild; n; ) {
          var next = n.nextSibling;
          if (n !== r.f) r.el.removeChild(n);
          n = next;
        }
        r.f.style.visibility = "";
      }
    } else if ((d.type === "scroll" || d.type === "permalink") && d.top >= 0) {
      if (d.type === "permalink") history.replaceState(null, "", "#comment-" + parseInt(d.id, 10));
      scrollTo({ top: r.f.getBoundingClientRect().top + pageYOffset + d.top - 16 });
    }
  }

  addEventListener("message", function (e) {
    var d = e.data;
    // Only the Moderato origin speaks to us, and each frame only for itself.
    if (e.origin !== base || !d || d.moderato !== 1) return;
    for (var i = 0; i < frames.length; i++) {
      if (frames[i].f.contentWindow === e.source) receive(frames[i], d);
    }
  });

  function all() {
    var els = document.querySelectorAll("#moderato-thread,[data-moderato-thread]");
    for (var i = 0; i < els.length; i++) mount(els[i]);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", all);
  else all();
})();
