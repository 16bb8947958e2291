// The admin page's live table of security events: new rows arrive from
// /admin/events as they are kept. Without JavaScript the page still shows
// the latest events when loaded.
(function () {
  "use strict";
  var body = document.getElementById("audit-events");
  if (!body || !window.EventSource) {
    return;
  }
  var es = new EventSource("/admin/events");
  es.addEventListener("audit", function (msg) {
    var e;
    try {
      e = JSON.parse(msg.data);
    } catch (err) {
      return;
    }
    var row = document.createElement("tr");
    row.className = "new";
    var kind = e.kind + (e.reason ? " (" + e.reason + ")" : "");
    [e.time, kind, e.user, e.handle, e.ip, e.forwarded_for].forEach(function (text) {
      var cell = document.createElement("td");
      cell.textContent = text || "";
      row.appendChild(cell);
    });
    var empty = body.querySelector(".empty");
    if (empty) {
      empty.remove();
    }
    body.insertBefore(row, body.firstChild);
    while (body.rows.length > 100) {
      body.deleteRow(body.rows.length - 1);
    }
  });
})();
