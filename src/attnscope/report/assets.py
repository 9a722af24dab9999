"""The report's inline style sheet and script (no CDN, no server: the page opens from disk).

The page's Content-Security-Policy allows exactly these two texts by their hashes: the script binds
its own listeners (no inline handlers anywhere) and writes every value as text, never as markup.
"""

from attnscope.report.tokens import TOKEN_CSS

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 16px 24px 48px; color: #222; }
h1 { font-size: 22px; margin: 8px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 1px solid #ddd; }
h3 { font-size: 15px; margin: 16px 0 6px; }
.sub { color: #666; margin: 0 0 12px; }
.charts { display: flex; flex-wrap: wrap; gap: 8px 18px; }
svg.chart { background: #fff; font-size: 11px; max-width: 100%; height: auto; }
svg.chart .title { font-size: 12px; font-weight: 600; }
svg.chart .frame { fill: none; stroke: #bbb; } svg.chart .grid { stroke: #eee; }
svg.chart .tick, svg.chart .legend { fill: #444; }
svg.chart .cursor { stroke: #000; stroke-width: 1; stroke-dasharray: 3 3; }
table { border-collapse: collapse; margin: 6px 0 12px; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; } th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.key { white-space: nowrap; }
td { overflow-wrap: anywhere; }
.table-wrap { max-width: 100%; max-height: 70vh; overflow: auto; margin: 6px 0 12px; border: 1px solid #eee; }
.table-wrap table { margin: 0; }
.table-wrap thead th { position: sticky; top: 0; z-index: 1; box-shadow: 0 1px 0 #ddd; }
.scroll { max-width: 100%; overflow-x: auto; }
.maps { overflow-x: auto; }
.maps .row { display: flex; align-items: center; gap: 10px; margin: 4px 0; }
.maps .name { width: 150px; flex: none; font-weight: 600; overflow-wrap: anywhere; }
.maps img, img.grid, img.strip { image-rendering: pixelated; display: block; }
img.picture, img.grid, img.strip { max-width: 100%; height: auto; }
figure { margin: 8px 0 14px; } figcaption { color: #555; font-size: 12px; }
.what { margin: 10px 0 4px; max-width: 900px; }
tr.calibration td, span.calibration { color: #777; font-style: italic; }
td.best { background: #f2f8ee; }
pre.command { background: #f4f4f4; padding: 6px 8px; white-space: pre-wrap; overflow-wrap: anywhere; margin: 4px 0; }
code.hash { overflow-wrap: anywhere; }
ul.skipped li { margin: 6px 0; }
.stack { display: grid; flex: none; }
.stack > img { grid-area: 1 / 1; }
.map-legend { font-size: 11px; font-weight: normal; color: #555; margin-top: 4px; width: 120px; }
.map-legend .ends { display: flex; justify-content: space-between; }
.flags { color: #a34700; font-size: 11px; font-weight: 600; }
.controls { position: sticky; top: 0; background: #fff; padding: 8px 0; z-index: 2; border-bottom: 1px solid #eee; }
.controls input[type=range] { width: 420px; vertical-align: middle; }
#frame-label { font-weight: 600; margin-left: 10px; }
.preds { display: flex; font-size: 11px; color: #555; }
.preds span { text-align: center; }
.preds .wrong { color: #c00; font-weight: 600; }
.note { color: #666; font-size: 12px; }
details pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
""" + TOKEN_CSS

JS = """
(function () {
  "use strict";
  var node = document.getElementById("frames-data");
  if (!node) { return; }
  var data = JSON.parse(node.textContent);
  var slider = document.getElementById("frame-slider");
  var label = document.getElementById("frame-label");
  var measures = document.getElementById("frame-measures");
  var preds = document.getElementById("frame-preds");

  function fmt(v) {  // as the tables: 3 significant digits, whole numbers from 100 up
    if (v === null || v === undefined || !isFinite(v)) { return "–"; }
    v = Number(v);
    return Math.abs(v) >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3)));
  }

  function measureTable(frame) {
    var table = document.createElement("table");
    var head = document.createElement("tr");
    ["map"].concat(data.measures).forEach(function (name) {
      var th = document.createElement("th");
      th.textContent = (data.headers && data.headers[name]) || name; head.appendChild(th);
    });
    table.appendChild(head);
    data.keys.forEach(function (key) {
      var tr = document.createElement("tr");
      var td = document.createElement("td"); td.textContent = key; tr.appendChild(td);
      data.measures.forEach(function (m) {
        var cell = document.createElement("td"); cell.className = "num";
        cell.textContent = fmt(frame.measures[key + "/" + m]); tr.appendChild(cell);
      });
      table.appendChild(tr);
    });
    return table;
  }

  function predRow(frame) {
    var out = document.createDocumentFragment();
    frame.predictions.forEach(function (p, j) {
      var span = document.createElement("span");
      span.style.width = data.tile + "px";
      var name = (data.classes && data.classes[p] !== undefined) ? data.classes[p] : p;
      span.textContent = "pred " + name;
      if (p !== data.labels[j]) { span.className = "wrong"; }
      out.appendChild(span);
    });
    return out;
  }

  function moveCursors(epoch) {
    document.querySelectorAll("svg.chart[data-cursor]").forEach(function (svg) {
      var line = svg.querySelector("line.cursor");
      var x0 = +svg.dataset.x0, x1 = +svg.dataset.x1, p0 = +svg.dataset.px0, p1 = +svg.dataset.px1;
      var x = p0 + (Math.min(Math.max(epoch, x0), x1) - x0) / (x1 - x0) * (p1 - p0);
      line.setAttribute("x1", x.toFixed(1)); line.setAttribute("x2", x.toFixed(1));
    });
  }

  function flagText(frame, key) {
    var found = (frame.flags || {})[key];
    if (!found) { return ""; }
    return "⚠ " + Object.keys(found).map(function (j) { return "image " + j + ": " + found[j]; }).join("; ");
  }

  function show(i) {
    var frame = data.frames[i];
    data.keys.forEach(function (key, k) {
      document.getElementById("map-" + k).src = data.images[key][i];
      document.getElementById("flags-" + k).textContent = flagText(frame, key);
    });
    var epoch = frame.kind === "epoch" ? frame.epoch : (frame.epoch === null ? null : frame.epoch.toFixed(2));
    var place = epoch === null ? "step " + frame.step : "epoch " + epoch + " (step " + frame.step + ")";
    label.textContent = place + (frame.acc === null ? "" : ", probe accuracy " + fmt(frame.acc));
    measures.replaceChildren(measureTable(frame));
    preds.replaceChildren(predRow(frame));
    moveCursors(frame.x);
    slider.setAttribute("aria-valuetext", label.textContent);
  }

  slider.addEventListener("input", function () { show(+slider.value); });
  show(+slider.value);
})();
"""
