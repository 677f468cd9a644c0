// Charts: every element with data-chart holds an ECharts option as JSON. Drawn on load
// and after htmx swaps content in; resized with the window.
(function () {
  "use strict";
  var palette = ["#c2410c", "#f97316", "#fdba74", "#2563eb", "#60a5fa", "#15803d", "#a3a3a3", "#7c3aed"];
  function draw(root) {
    if (!window.echarts) { return; }
    (root || document).querySelectorAll("[data-chart]").forEach(function (el) {
      if (el.dataset.drawn) { return; }
      var option = JSON.parse(el.dataset.chart);
      option.color = option.color || palette;
      option.textStyle = { fontFamily: getComputedStyle(document.body).fontFamily };
      var chart = echarts.init(el, null, { renderer: "svg" });
      chart.setOption(option);
      el.dataset.drawn = "1";
      window.addEventListener("resize", function () { chart.resize(); });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (e) { draw(e.target); });
})();
