// The live page: polls the console's JSON endpoint and redraws the two tables in place.
// Data goes in with textContent only, never as markup.
(function () {
  "use strict";
  var script = document.getElementById("console-js");
  if (!script) { return; }
  var liveUrl = script.getAttribute("data-live");
  var transferBase = script.getAttribute("data-transfer-base");
  var loginUrl = script.getAttribute("data-login");
  var PERIOD_MS = 1000;

  function cell(text, cls) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined ? "" : String(text);
    if (cls) { td.className = cls; }
    return td;
  }

  function linkCell(id) {
    var td = document.createElement("td");
    var a = document.createElement("a");
    a.href = transferBase + encodeURIComponent(id);
    a.textContent = id;
    td.appendChild(a);
    return td;
  }

  function stateCell(state) {
    var td = document.createElement("td");
    var span = document.createElement("span");
    span.className = "state state-" + state;
    span.textContent = state;
    td.appendChild(span);
    return td;
  }

  function seconds(value) {
    return value === null || value === undefined ? "" : value.toFixed(1) + "s";
  }

  function fill(tableId, rows, build) {
    var body = document.querySelector("#" + tableId + " tbody");
    var fresh = document.createElement("tbody");
    rows.forEach(function (row) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-transfer", row.transfer_id);
      build(row).forEach(function (td) { tr.appendChild(td); });
      fresh.appendChild(tr);
    });
    body.parentNode.replaceChild(fresh, body);
  }

  function render(data) {
    fill("live", data.transfers, function (t) {
      return [linkCell(t.transfer_id), cell(t.lead_id), cell(t.provider), cell(t.account), stateCell(t.state),
              cell(t.destination), cell(t.position + " of " + t.of), cell(seconds(t.elapsed), "num")];
    });
    fill("ended", data.ended, function (t) {
      return [linkCell(t.transfer_id), cell(t.lead_id), cell(t.provider), cell(t.account), stateCell(t.outcome),
              cell(t.reason), cell(t.ended_at), cell(seconds(t.duration), "num")];
    });
    document.getElementById("live-count").textContent = String(data.transfers.length);
    document.getElementById("live-empty").hidden = data.transfers.length > 0;
    document.getElementById("updated").textContent = data.now;
  }

  function status(text) {
    document.getElementById("poll-status").textContent = text;
  }

  function poll() {
    fetch(liveUrl, {credentials: "same-origin", headers: {"Accept": "application/json"},
                    cache: "no-store"})
      .then(function (response) {
        if (response.status === 401) {
          // Session ended or expired: back to the login page, then here again.
          window.location.assign(loginUrl + "?expired=1&next=" +
                                 encodeURIComponent(window.location.pathname));
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (data) { render(data); status(""); }
        window.setTimeout(poll, PERIOD_MS);
      })
      .catch(function (err) {
        status("(update failed: " + err.message + "; retrying)");
        window.setTimeout(poll, PERIOD_MS * 3);
      });
  }

  window.setTimeout(poll, PERIOD_MS);
})();
