//! Minimal SVG charts, written by hand: a step chart of series over time and a grouped bar chart with an
//! optional threshold line. No dependencies, so the demo and the simulator can draw their reports anywhere.
//!
//! The output is a pure function of the input: numbers are formatted with a fixed number of decimals and
//! nothing depends on hash order, the clock or the locale, so a seeded simulation produces the same bytes
//! every time (the simulator's reproducibility test compares reports byte for byte). Every piece of text is
//! XML-escaped; non-finite values are skipped rather than written as `NaN` coordinates.

use std::fmt::Write as _;

/// One named series of `(x, y)` points, x ascending (time).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One bar: `group` is the cluster on the x axis (e.g. a wave), `name` the bar within it (e.g. a gate).
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub group: String,
    pub name: String,
    pub value: f64,
}

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;
const PLOT_W: f64 = WIDTH - LEFT - RIGHT;
const PLOT_H: f64 = HEIGHT - TOP - BOTTOM;

/// Colour-blind-friendly palette (Okabe–Ito), cycled by series or bar name.
const PALETTE: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

/// Step chart of `series` over x (time): each value holds until the next point, which is how counts such as
/// "devices on version v" really behave between samples. Has a title, axis labels, round-number ticks and a
/// legend; with no finite points at all it draws empty axes and says "no data".
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let finite = |&(x, y): &(f64, f64)| x.is_finite() && y.is_finite();
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).filter(finite).collect();
    let (x_lo, x_hi) = bounds(all.iter().map(|p| p.0), false);
    let (y_lo, y_hi) = bounds(all.iter().map(|p| p.1), true);
    let xt = ticks(x_lo, x_hi);
    let yt = ticks(y_lo, y_hi);
    let (x_lo, x_hi) = (xt.lo, xt.hi);
    let (y_lo, y_hi) = (yt.lo, yt.hi);
    let sx = |x: f64| LEFT + (x - x_lo) / (x_hi - x_lo) * PLOT_W;
    let sy = |y: f64| TOP + PLOT_H - (y - y_lo) / (y_hi - y_lo) * PLOT_H;

    let mut out = header(title);
    grid_and_axes(&mut out, &yt, sy, y_label);
    for (i, v) in xt.values().enumerate() {
        let x = sx(v);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{b:.1}" x2="{x:.1}" y2="{t:.1}" stroke="#000000" stroke-width="1"/>"##,
            b = TOP + PLOT_H,
            t = TOP + PLOT_H + 5.0
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
            escape(&xt.label(i)),
            y = TOP + PLOT_H + 19.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
        escape(x_label),
        x = LEFT + PLOT_W / 2.0,
        y = HEIGHT - 12.0
    );
    if all.is_empty() {
        no_data(&mut out);
    }
    for (i, s) in series.iter().enumerate() {
        let colour = PALETTE[i % PALETTE.len()];
        let pts: Vec<(f64, f64)> = s.points.iter().copied().filter(finite).collect();
        if let Some(&(x0, y0)) = pts.first() {
            let mut d = format!("M{:.1},{:.1}", sx(x0), sy(y0));
            for w in pts.windows(2) {
                let (x1, y1) = w[1];
                let _ = write!(d, " H{:.1} V{:.1}", sx(x1), sy(y1));
            }
            let _ = writeln!(
                out,
                r#"<path d="{d}" fill="none" stroke="{colour}" stroke-width="2" stroke-linejoin="round"/>"#
            );
            if pts.len() == 1 {
                let _ = writeln!(out, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, sx(x0), sy(y0));
            }
        }
        legend_entry(&mut out, i, &s.name, colour);
    }
    out.push_str("</svg>\n");
    out
}

/// Grouped bar chart: groups in order of first appearance along x, bars within a group in the order given,
/// one colour per bar name (legend). An optional horizontal threshold line is drawn dashed with its label.
/// Negative values hang below the zero line.
pub fn bar_chart(title: &str, y_label: &str, bars: &[Bar], threshold: Option<(f64, &str)>) -> String {
    let bars: Vec<&Bar> = bars.iter().filter(|b| b.value.is_finite()).collect();
    let groups = first_seen(bars.iter().map(|b| b.group.as_str()));
    let names = first_seen(bars.iter().map(|b| b.name.as_str()));
    let threshold = threshold.filter(|(v, _)| v.is_finite());
    let values = bars.iter().map(|b| b.value).chain(threshold.map(|t| t.0));
    let (y_lo, y_hi) = bounds(values, true);
    let yt = ticks(y_lo, y_hi);
    let (y_lo, y_hi) = (yt.lo, yt.hi);
    let sy = |y: f64| TOP + PLOT_H - (y - y_lo) / (y_hi - y_lo) * PLOT_H;

    let mut out = header(title);
    grid_and_axes(&mut out, &yt, sy, y_label);
    if bars.is_empty() {
        no_data(&mut out);
    }
    let slot = PLOT_W / groups.len().max(1) as f64;
    for (g, group) in groups.iter().enumerate() {
        let in_group: Vec<&&Bar> = bars.iter().filter(|b| b.group == *group).collect();
        let bar_w = (slot * 0.8 / in_group.len() as f64).min(48.0);
        let start = LEFT + slot * g as f64 + (slot - bar_w * in_group.len() as f64) / 2.0;
        for (k, b) in in_group.iter().enumerate() {
            let colour = PALETTE[names.iter().position(|n| *n == b.name).unwrap_or(0) % PALETTE.len()];
            let (top, bottom) = (sy(b.value.max(0.0)), sy(b.value.min(0.0)));
            let x = start + bar_w * k as f64;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{w:.1}" height="{h:.1}" fill="{colour}"><title>{}</title></rect>"#,
                escape(&format!("{} / {}: {}", b.group, b.name, fmt_value(b.value))),
                w = (bar_w - 2.0).max(1.0),
                h = (bottom - top).max(0.5)
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="middle">{}</text>"#,
            escape(group),
            x = LEFT + slot * (g as f64 + 0.5),
            y = TOP + PLOT_H + 19.0
        );
    }
    if let Some((value, label)) = threshold {
        let y = sy(value);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#C00000" stroke-width="1.5" stroke-dasharray="6 4"/>"##,
            x2 = LEFT + PLOT_W
        );
        let _ = writeln!(
            out,
            r##"<text x="{x:.1}" y="{ty:.1}" text-anchor="end" fill="#C00000">{}</text>"##,
            escape(&format!("{label} ({})", fmt_value(value))),
            x = LEFT + PLOT_W - 4.0,
            ty = y - 5.0
        );
    }
    for (i, name) in names.iter().enumerate() {
        legend_entry(&mut out, i, name, PALETTE[i % PALETTE.len()]);
    }
    out.push_str("</svg>\n");
    out
}

/// Escapes text for XML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 forbids most control characters even when escaped.
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' && c != '\r' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn header(title: &str) -> String {
    let mut out = String::with_capacity(4096);
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#FFFFFF"/>"##);
    let _ = writeln!(
        out,
        r#"<text x="{x:.1}" y="24" text-anchor="middle" font-size="16" font-weight="bold">{}</text>"#,
        escape(title),
        x = WIDTH / 2.0
    );
    out
}

/// Horizontal grid lines with y tick labels, the y axis label (rotated), and the plot frame.
fn grid_and_axes(out: &mut String, yt: &Ticks, sy: impl Fn(f64) -> f64, y_label: &str) {
    for (i, v) in yt.values().enumerate() {
        let y = sy(v);
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT:.1}" y1="{y:.1}" x2="{x2:.1}" y2="{y:.1}" stroke="#DDDDDD" stroke-width="1"/>"##,
            x2 = LEFT + PLOT_W
        );
        let _ = writeln!(
            out,
            r#"<text x="{x:.1}" y="{ty:.1}" text-anchor="end">{}</text>"#,
            escape(&yt.label(i)),
            x = LEFT - 6.0,
            ty = y + 4.0
        );
    }
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT:.1}" y="{TOP:.1}" width="{PLOT_W:.1}" height="{PLOT_H:.1}" fill="none" stroke="#000000" stroke-width="1"/>"##
    );
    let (cx, cy) = (16.0, TOP + PLOT_H / 2.0);
    let _ = writeln!(
        out,
        r#"<text x="{cx:.1}" y="{cy:.1}" text-anchor="middle" transform="rotate(-90 {cx:.1} {cy:.1})">{}</text>"#,
        escape(y_label)
    );
}

fn no_data(out: &mut String) {
    let _ = writeln!(
        out,
        r##"<text x="{x:.1}" y="{y:.1}" text-anchor="middle" fill="#888888">no data</text>"##,
        x = LEFT + PLOT_W / 2.0,
        y = TOP + PLOT_H / 2.0
    );
}

fn legend_entry(out: &mut String, i: usize, name: &str, colour: &str) {
    let x = LEFT + PLOT_W + 14.0;
    let y = TOP + 8.0 + 18.0 * i as f64;
    let _ = writeln!(out, r#"<rect x="{x:.1}" y="{y:.1}" width="12" height="12" fill="{colour}"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{tx:.1}" y="{ty:.1}">{}</text>"#,
        escape(&truncate(name, 24)),
        tx = x + 18.0,
        ty = y + 10.0
    );
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { s.chars().take(max - 1).chain(['…']).collect() }
}

fn first_seen<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

/// Range of the finite values; `include_zero` anchors count-like axes at 0. Never returns an empty range.
fn bounds(values: impl Iterator<Item = f64>, include_zero: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        return (0.0, 1.0);
    }
    if include_zero {
        lo = lo.min(0.0);
        hi = hi.max(0.0);
    }
    if hi - lo < 1e-12 {
        let pad = if hi.abs() > 0.0 { hi.abs() * 0.1 } else { 1.0 };
        return (lo - pad, hi + pad);
    }
    (lo, hi)
}

/// Round-number ticks covering `[lo, hi]`: a step of 1, 2 or 5 × 10^k giving about five intervals.
#[derive(Debug)]
struct Ticks {
    lo: f64,
    hi: f64,
    step: f64,
    decimals: usize,
}

fn ticks(lo: f64, hi: f64) -> Ticks {
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let decimals = if step >= 1.0 { 0 } else { (-step.log10().floor()) as usize };
    Ticks { lo: (lo / step).floor() * step, hi: (hi / step).ceil() * step, step, decimals: decimals.min(9) }
}

impl Ticks {
    fn count(&self) -> usize {
        ((self.hi - self.lo) / self.step).round() as usize + 1
    }

    fn values(&self) -> impl Iterator<Item = f64> + '_ {
        (0..self.count()).map(|i| self.lo + self.step * i as f64)
    }

    fn label(&self, i: usize) -> String {
        let v = self.lo + self.step * i as f64;
        let s = format!("{v:.*}", self.decimals);
        // `-0` reads as a bug in a chart.
        if s.trim_start_matches('-').chars().all(|c| c == '0' || c == '.') {
            s.trim_start_matches('-').into()
        } else {
            s
        }
    }
}

fn fmt_value(v: f64) -> String {
    if v == v.trunc() && v.abs() < 1e15 { format!("{v:.0}") } else { format!("{v:.4}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small XML checker: every tag closes in order, attribute values are quoted, and text holds no raw
    /// `<` or unescaped `&`. Returns the names of the elements seen.
    fn check_well_formed(xml: &str) -> Vec<String> {
        let mut stack: Vec<String> = Vec::new();
        let mut seen = Vec::new();
        let mut rest = xml;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open]);
            let close = rest[open..].find('>').expect("tag closes") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "'<' inside a tag: {tag}");
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name.trim()), "mismatched closing tag");
            } else {
                let self_closing = tag.ends_with('/');
                let body = tag.trim_end_matches('/');
                let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
                assert!(!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric()), "bad name {name}");
                assert_eq!(body.matches('"').count() % 2, 0, "unbalanced quotes in {tag}");
                check_text(&body.replace('"', ""));
                seen.push(name.clone());
                if !self_closing {
                    stack.push(name);
                }
            }
            rest = &rest[close + 1..];
        }
        check_text(rest);
        assert!(stack.is_empty(), "unclosed: {stack:?}");
        assert_eq!(seen.first().map(String::as_str), Some("svg"));
        seen
    }

    fn check_text(text: &str) {
        assert!(!text.contains('>'), "raw '>' in text: {text}");
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..text[i..].find(';').map_or(text.len(), |e| i + e + 1)];
            assert!(["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"].contains(&entity), "bad entity in {text}");
        }
        assert!(!text.contains("NaN") && !text.contains("inf"), "non-finite number in {text}");
    }

    fn series() -> Vec<Series> {
        vec![
            Series { name: "v1 <old> & \"stable\"".into(), points: vec![(0.0, 100.0), (30.0, 60.0), (90.0, 0.0)] },
            Series { name: "v2".into(), points: vec![(0.0, 0.0), (30.0, 40.0), (90.0, 100.0)] },
        ]
    }

    fn bars() -> Vec<Bar> {
        let bar = |g: &str, n: &str, v| Bar { group: g.into(), name: n.into(), value: v };
        vec![
            bar("wave 0", "shadow agreement", 0.97),
            bar("wave 0", "error rate", 0.01),
            bar("wave 1 <all>", "shadow agreement", 0.62),
            bar("wave 1 <all>", "error rate", 0.0),
        ]
    }

    #[test]
    fn line_chart_is_well_formed_and_escapes_text() {
        let svg = line_chart("Devices & versions", "virtual time (s)", "devices <n>", &series());
        let elements = check_well_formed(&svg);
        assert_eq!(elements.iter().filter(|e| *e == "path").count(), 2);
        assert!(svg.contains("v1 &lt;old&gt; &amp; &quot;stable&quot;"));
        assert!(svg.contains("devices &lt;n&gt;"));
        assert!(svg.contains(">100<"), "round tick at the top: {svg}");
    }

    #[test]
    fn bar_chart_is_well_formed_with_a_labelled_threshold() {
        let svg = bar_chart("Gates per wave", "value", &bars(), Some((0.9, "min agreement <0.9>")));
        let elements = check_well_formed(&svg);
        assert_eq!(elements.iter().filter(|e| *e == "title").count(), 4);
        assert!(svg.contains("min agreement &lt;0.9&gt; (0.9000)"));
        assert!(svg.contains("stroke-dasharray"));
        assert!(svg.contains("wave 1 &lt;all&gt;"));
    }

    #[test]
    fn same_input_gives_the_same_bytes() {
        assert_eq!(line_chart("t", "x", "y", &series()), line_chart("t", "x", "y", &series()));
        assert_eq!(bar_chart("t", "y", &bars(), Some((0.5, "t"))), bar_chart("t", "y", &bars(), Some((0.5, "t"))));
        assert_ne!(line_chart("t", "x", "y", &series()), line_chart("t", "x", "y", &series()[..1]));
    }

    #[test]
    fn empty_and_degenerate_inputs_draw_axes_and_say_no_data() {
        for svg in [
            line_chart("t", "x", "y", &[]),
            line_chart("t", "x", "y", &[Series { name: "empty".into(), points: vec![] }]),
            line_chart(
                "t",
                "x",
                "y",
                &[Series { name: "nan".into(), points: vec![(f64::NAN, 1.0), (1.0, f64::INFINITY)] }],
            ),
            bar_chart("t", "y", &[], None),
            bar_chart("t", "y", &[], Some((f64::NAN, "bad"))),
        ] {
            check_well_formed(&svg);
            assert!(svg.contains("no data"), "{svg}");
        }
        let one = line_chart("t", "x", "y", &[Series { name: "one".into(), points: vec![(5.0, 5.0)] }]);
        check_well_formed(&one);
        assert!(one.contains("<circle"));
        let flat = line_chart("t", "x", "y", &[Series { name: "flat".into(), points: vec![(0.0, 3.0), (0.0, 3.0)] }]);
        check_well_formed(&flat);
    }

    #[test]
    fn ticks_are_round_numbers_covering_the_range() {
        let t = ticks(0.0, 97.0);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 100.0, 20.0));
        assert_eq!((0..t.count()).map(|i| t.label(i)).collect::<Vec<_>>(), ["0", "20", "40", "60", "80", "100"]);
        let t = ticks(0.0, 0.93);
        assert_eq!(t.step, 0.2);
        assert_eq!(t.label(5), "1.0");
        let t = ticks(-0.3, 0.3);
        assert!(t.values().all(|v| v.is_finite()));
        assert!((0..t.count()).all(|i| t.label(i) != "-0.0"));
    }
}
