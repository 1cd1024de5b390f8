/* careloop console: draws the ECharts charts described in <script type="application/json"> elements,
   downloads them as PNG, and keeps the segment builder's rows showing the fields of their kind.
   No inline script anywhere: the Content-Security-Policy allows scripts from /static only. */
(function () {
  "use strict";
  // Okabe-Ito: distinguishable with every common colour-vision deficiency
  var PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D00", "#000000"];
  var charts = new Map();
  window.careloopCharts = charts;

  function init(root) {
    if (!window.echarts) { return; }
    root.querySelectorAll("div.chart[id]").forEach(function (el) {
      if (charts.has(el.id)) { return; }
      var spec = document.getElementById(el.id + "-option");
      if (!spec) { return; }
      el.style.height = (parseInt(el.dataset.height, 10) || 320) + "px";
      var option = JSON.parse(spec.textContent);
      if (!option.color) { option.color = PALETTE; }
      option.aria = { enabled: true };
      option.animation = false;
      option.textStyle = { fontFamily: "system-ui, -apple-system, 'PingFang SC', 'Noto Sans CJK SC', 'Microsoft YaHei', sans-serif" };
      var chart = window.echarts.init(el, null, {
        renderer: "canvas",
        locale: document.body.dataset.lang === "zh" ? "ZH" : "EN"
      });
      chart.setOption(option);
      charts.set(el.id, chart);
      el.dataset.ready = "1";
    });
  }

  function download(button) {
    var chart = charts.get(button.dataset.png);
    if (!chart) { return; }
    var a = document.createElement("a");
    a.href = chart.getDataURL({ type: "png", pixelRatio: 2, backgroundColor: "#ffffff" });
    a.download = button.dataset.file || "chart.png";
    document.body.appendChild(a);
    a.click();
    a.remove();
  }

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:afterSwap", function (e) { init(e.target); });
  window.addEventListener("resize", function () { charts.forEach(function (c) { c.resize(); }); });
  document.addEventListener("click", function (e) {
    var b = e.target.closest && e.target.closest("button.png");
    if (b) { download(b); }
  });
  document.addEventListener("change", function (e) {
    var t = e.target;
    if (t.matches && t.matches("select[name$='_kind']")) {
      var row = t.closest("li.condition");
      if (row) { row.dataset.kind = t.value; }
    }
  });
})();
