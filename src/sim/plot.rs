//! Hand-written SVG plots (plain XML, no plotting crate): cumulative regret over time per policy, and
//! cost against quality per policy with 95% confidence bars. Open them in any browser.

use std::fmt::Write as _;

use super::report::{num, Report};

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 500.0;
const MARGIN_LEFT: f64 = 80.0;
const MARGIN_RIGHT: f64 = 200.0;
const MARGIN_TOP: f64 = 40.0;
const MARGIN_BOTTOM: f64 = 60.0;
/// Colour-blind-safe palette (Okabe & Ito 2008), cycled.
const COLOURS: [&str; 8] = [
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
];

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn new(x0: f64, x1: f64, y0: f64, y1: f64) -> Frame {
        let pad = |a: f64, b: f64| {
            if (b - a).abs() < 1e-12 {
                (a - 1.0, b + 1.0)
            } else {
                (a, b)
            }
        };
        let (x0, x1) = pad(x0, x1);
        let (y0, y1) = pad(y0, y1);
        Frame { x0, x1, y0, y1 }
    }

    fn x(&self, v: f64) -> f64 {
        MARGIN_LEFT + (v - self.x0) / (self.x1 - self.x0) * (WIDTH - MARGIN_LEFT - MARGIN_RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT
            - MARGIN_BOTTOM
            - (v - self.y0) / (self.y1 - self.y0) * (HEIGHT - MARGIN_TOP - MARGIN_BOTTOM)
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn header(out: &mut String, title: &str, f: &Frame, x_label: &str, y_label: &str) {
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        WIDTH / 2.0,
        escape(title)
    );
    let (left, right) = (MARGIN_LEFT, WIDTH - MARGIN_RIGHT);
    let (top, bottom) = (MARGIN_TOP, HEIGHT - MARGIN_BOTTOM);
    let _ = writeln!(
        out,
        r##"<rect x="{left}" y="{top}" width="{}" height="{}" fill="none" stroke="#888"/>"##,
        right - left,
        bottom - top
    );
    for i in 0..=4 {
        let fx = f.x0 + (f.x1 - f.x0) * f64::from(i) / 4.0;
        let fy = f.y0 + (f.y1 - f.y0) * f64::from(i) / 4.0;
        let (px, py) = (f.x(fx), f.y(fy));
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{bottom}" stroke="#eee"/><text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"##,
            bottom + 16.0,
            num(fx)
        );
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{py:.1}" x2="{right}" y2="{py:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            py + 4.0,
            num(fy)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        (left + right) / 2.0,
        HEIGHT - 20.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
        (top + bottom) / 2.0,
        (top + bottom) / 2.0,
        escape(y_label)
    );
}

fn legend(out: &mut String, i: usize, label: &str) {
    let y = MARGIN_TOP + 10.0 + 18.0 * i as f64;
    let x = WIDTH - MARGIN_RIGHT + 12.0;
    let c = COLOURS[i % COLOURS.len()];
    let _ = writeln!(
        out,
        r#"<rect x="{x}" y="{}" width="12" height="12" fill="{c}"/><text x="{}" y="{}">{}</text>"#,
        y - 10.0,
        x + 18.0,
        y,
        escape(label)
    );
}

/// Mean cumulative regret against the oracle over time, one line per policy, events as dashed lines.
pub fn regret_svg(report: &Report) -> String {
    let y_max = report
        .policies
        .iter()
        .flat_map(|p| p.curve.iter().copied())
        .fold(0.0, f64::max);
    let f = Frame::new(0.0, report.duration_secs, 0.0, y_max);
    let mut out = String::new();
    header(
        &mut out,
        &format!(
            "Cumulative regret vs oracle: {} ({} seeds)",
            report.source, report.seeds
        ),
        &f,
        "simulated time (s)",
        "cumulative regret (utility)",
    );
    for (at, label) in &report.events {
        let x = f.x(*at);
        let _ = writeln!(
            out,
            r##"<line x1="{x:.1}" y1="{MARGIN_TOP}" x2="{x:.1}" y2="{}" stroke="#999" stroke-dasharray="4 3"/><text x="{:.1}" y="{}" font-size="10">{}</text>"##,
            HEIGHT - MARGIN_BOTTOM,
            x + 3.0,
            MARGIN_TOP + 12.0,
            escape(label)
        );
    }
    for (i, p) in report.policies.iter().enumerate() {
        let mut points = format!("{:.1},{:.1}", f.x(0.0), f.y(0.0));
        for (t, v) in report.curve_times_secs.iter().zip(&p.curve) {
            let _ = write!(points, " {:.1},{:.1}", f.x(*t), f.y(*v));
        }
        let c = COLOURS[i % COLOURS.len()];
        let _ = writeln!(
            out,
            r#"<polyline points="{points}" fill="none" stroke="{c}" stroke-width="2"/>"#
        );
        legend(&mut out, i, &p.policy);
    }
    out.push_str("</svg>\n");
    out
}

/// Total cost against mean quality per policy (means over seeds, 95% confidence bars), with the
/// hindsight frontier of static class-level routing (cost per request x the trace's requests) as a
/// dashed curve when the report has one.
pub fn cost_quality_svg(report: &Report) -> String {
    let curve: Vec<(f64, f64)> = report.frontier.as_ref().map_or_else(Vec::new, |f| {
        f.points
            .iter()
            .map(|p| (p.cost_usd * f.requests as f64, p.quality))
            .collect()
    });
    let pts: Vec<_> = report
        .policies
        .iter()
        .filter_map(|p| Some((p.metric("total_cost_usd")?, p.metric("mean_quality")?)))
        .collect();
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (c, q) in &pts {
        x0 = x0.min(c.mean - c.ci95);
        x1 = x1.max(c.mean + c.ci95);
        y0 = y0.min(q.mean - q.ci95);
        y1 = y1.max(q.mean + q.ci95);
    }
    for (c, q) in &curve {
        x0 = x0.min(*c);
        x1 = x1.max(*c);
        y0 = y0.min(*q);
        y1 = y1.max(*q);
    }
    if pts.is_empty() && curve.is_empty() {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    let (dx, dy) = ((x1 - x0).max(1e-9) * 0.08, (y1 - y0).max(1e-9) * 0.08);
    let f = Frame::new((x0 - dx).max(0.0), x1 + dx, y0 - dy, y1 + dy);
    let mut out = String::new();
    header(
        &mut out,
        &format!(
            "Cost vs quality: {} ({} seeds)",
            report.source, report.seeds
        ),
        &f,
        "total cost (USD)",
        "mean quality per request",
    );
    if !curve.is_empty() {
        let path: Vec<String> = curve
            .iter()
            .map(|(c, q)| format!("{:.1},{:.1}", f.x(*c), f.y(*q)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="dimgray" stroke-dasharray="6,4"><title>hindsight frontier (static class-level routing)</title></polyline>"#,
            path.join(" ")
        );
    }
    for (i, (c, q)) in pts.iter().enumerate() {
        let col = COLOURS[i % COLOURS.len()];
        let (x, y) = (f.x(c.mean), f.y(q.mean));
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{col}"/>"#,
            f.x(c.mean - c.ci95),
            f.x(c.mean + c.ci95)
        );
        let _ = writeln!(
            out,
            r#"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{col}"/>"#,
            f.y(q.mean - q.ci95),
            f.y(q.mean + q.ci95)
        );
        let _ = writeln!(
            out,
            r#"<circle cx="{x:.1}" cy="{y:.1}" r="5" fill="{col}"/>"#
        );
        legend(&mut out, i, &report.policies[i].policy);
    }
    out.push_str("</svg>\n");
    out
}
