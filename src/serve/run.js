// A live run's page: reload it when the run's journal grows past what the
// page shows, unless the reader is typing a comment. No inline script: the
// Content-Security-Policy allows this file only.
(function () {
  var me = document.currentScript;
  var run = me.getAttribute("data-run");
  var shown = Number(me.getAttribute("data-records")) || 0;
  var seen = 0;
  var pending = false;
  var source = new EventSource("/api/runs/" + encodeURIComponent(run) + "/events");
  source.onmessage = function () {
    seen += 1;
    if (seen <= shown || pending) return;
    pending = true;
    setTimeout(function () {
      pending = false;
      var typing = document.activeElement && document.activeElement.tagName === "INPUT";
      if (!typing) location.reload();
    }, 500);
  };
  source.addEventListener("end", function () { source.close(); });
})();
