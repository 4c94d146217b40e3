// jetrelay console: progressive enhancements. Every page works without
// this file except Live, which needs it to follow the event stream.
// No markup is built from data: values are set with textContent.
(function () {
  "use strict";

  // Forms that ask before they act (deletes).
  document.querySelectorAll("form.confirm").forEach(function (f) {
    f.addEventListener("submit", function (ev) {
      if (!window.confirm(f.dataset.confirm || "Are you sure?")) {
        ev.preventDefault();
      }
    });
  });

  var table = document.getElementById("live");
  if (!table) {
    return;
  }
  var body = table.tBodies[0];
  var state = document.getElementById("live-state");
  var pauseBtn = document.getElementById("live-pause");
  var paused = false;
  var held = [];
  var maxRows = 500;

  function cell(tr, text, cls) {
    var td = document.createElement("td");
    if (cls) {
      var span = document.createElement("span");
      span.className = "st " + cls;
      span.textContent = text;
      td.appendChild(span);
    } else {
      td.textContent = text || "";
    }
    tr.appendChild(td);
    return td;
  }

  function show(row) {
    var tr = document.createElement("tr");
    tr.className = "live-row";
    cell(tr, row.time);
    cell(tr, row.event + (row.status ? " " + row.status : ""), row["class"]);
    var idCell = cell(tr, "");
    if (row.queue_id) {
      var a = document.createElement("a");
      a.href = "/console/messages/" + encodeURIComponent(row.queue_id);
      a.textContent = row.queue_id;
      idCell.appendChild(a);
    }
    cell(tr, row.rcpt || row.domain);
    cell(tr, row.mx);
    var r = cell(tr, row.reply + (row.actor ? " (by " + row.actor + ")" : ""));
    r.className = "reply";
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > maxRows) {
      body.deleteRow(body.rows.length - 1);
    }
  }

  pauseBtn.hidden = false;
  pauseBtn.addEventListener("click", function () {
    paused = !paused;
    pauseBtn.textContent = paused ? "Resume" : "Pause";
    state.textContent = paused ? "Paused: new events are kept and shown on resume." : "Following.";
    if (!paused) {
      held.forEach(show);
      held = [];
    }
  });

  var src = new EventSource(table.dataset.src);
  src.onopen = function () {
    state.textContent = paused ? "Paused." : "Following.";
  };
  src.onmessage = function (ev) {
    var row = JSON.parse(ev.data);
    if (paused) {
      if (held.length < maxRows) {
        held.push(row);
      }
      return;
    }
    show(row);
  };
  src.addEventListener("end", function () {
    state.textContent = "The stream ended; reload to follow again.";
    src.close();
  });
  src.onerror = function () {
    state.textContent = "Connection lost; reconnecting…";
  };
})();
