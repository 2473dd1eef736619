// Small SVG charts for the console, drawn by hand: no library, nothing fetched.
"use strict";

const Charts = (() => {
  const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 0.01 || a >= 1e5)) return v.toExponential(1);
    return Number.isInteger(v) ? String(v) : v.toFixed(a < 1 ? 3 : 1);
  }

  function clock(t) {
    const d = new Date(t * 1000);
    return d.toTimeString().slice(0, 8);
  }

  // series: [{name, points: [[unixSeconds, value], ...]}]; opts: {title, threshold, yMin, yMax, unit}.
  function line(series, opts = {}) {
    const W = 420, H = 170, L = 48, R = 10, T = 22, B = 26;
    const pts = series.flatMap((s) => s.points).filter((p) => p[1] !== null && p[1] !== undefined);
    const title = `<text x="${L}" y="14" class="chart-title">${esc(opts.title || "")}</text>`;
    if (pts.length === 0) {
      return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.title || "chart")}">${title}` +
        `<text x="${W / 2}" y="${H / 2}" text-anchor="middle" class="chart-empty">no data yet</text></svg>`;
    }
    let x0 = Math.min(...pts.map((p) => p[0])), x1 = Math.max(...pts.map((p) => p[0]));
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const ys = pts.map((p) => p[1]).concat(opts.threshold !== undefined ? [opts.threshold] : []);
    let y0 = opts.yMin !== undefined ? opts.yMin : Math.min(0, ...ys);
    let y1 = opts.yMax !== undefined ? opts.yMax : Math.max(...ys);
    if (y1 === y0) y1 = y0 + 1;
    const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
    const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
    let body = title;
    for (const f of [0, 0.5, 1]) {
      const y = y0 + f * (y1 - y0);
      body += `<line x1="${L}" x2="${W - R}" y1="${sy(y)}" y2="${sy(y)}" class="grid"/>` +
        `<text x="${L - 4}" y="${sy(y) + 4}" text-anchor="end" class="axis">${esc(fmt(y))}${esc(opts.unit || "")}</text>`;
    }
    body += `<text x="${L}" y="${H - 6}" class="axis">${esc(clock(x0))}</text>` +
      `<text x="${W - R}" y="${H - 6}" text-anchor="end" class="axis">${esc(clock(x1))}</text>`;
    if (opts.threshold !== undefined && opts.threshold !== null) {
      body += `<line x1="${L}" x2="${W - R}" y1="${sy(opts.threshold)}" y2="${sy(opts.threshold)}" class="threshold"/>`;
    }
    series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      const p = s.points.filter((q) => q[1] !== null && q[1] !== undefined);
      if (p.length === 0) return;
      const d = p.map((q, j) => `${j ? "L" : "M"}${sx(q[0]).toFixed(1)},${sy(q[1]).toFixed(1)}`).join("");
      body += `<path d="${d}" fill="none" stroke="${color}" stroke-width="2"/>`;
      for (const q of p) body += `<circle cx="${sx(q[0]).toFixed(1)}" cy="${sy(q[1]).toFixed(1)}" r="2.5" fill="${color}"><title>${esc(s.name)} ${esc(fmt(q[1]))} at ${esc(clock(q[0]))}</title></circle>`;
      body += `<text x="${W - R - 110 * (i + 1) + 110}" y="14" fill="${color}" class="legend" text-anchor="end">${esc(s.name)}</text>`;
    });
    return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(opts.title || "chart")}">${body}</svg>`;
  }

  // A horizontal stacked bar: parts [{name, value}].
  function bar(parts, total) {
    const sum = total || parts.reduce((a, p) => a + p.value, 0) || 1;
    let x = 0, body = "";
    parts.forEach((p, i) => {
      const w = (p.value / sum) * 100;
      if (w > 0) body += `<rect x="${x}%" y="0" width="${w}%" height="14" fill="${COLORS[i % COLORS.length]}"><title>${esc(p.name)}: ${p.value}</title></rect>`;
      x += w;
    });
    const legend = parts.map((p, i) => `<span class="key"><svg width="10" height="10"><rect width="10" height="10" fill="${COLORS[i % COLORS.length]}"/></svg> ${esc(p.name)} ${p.value}</span>`).join(" ");
    return `<svg class="bar" width="100%" height="14">${body}</svg><div class="legend-row">${legend}</div>`;
  }

  return { line, bar, esc, fmt, clock };
})();
