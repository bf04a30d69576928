//! Charts as inline SVG: x–y charts (lines, markers, bars, reference lines) and heatmaps.
//!
//! Written here rather than with a plotting crate: the report needs five chart shapes, and
//! writing the SVG directly keeps the page's text, fonts and sizes in one place (the page's
//! CSS), adds no dependency, and needs no font files to measure text.

use std::fmt::Write;

use super::esc;

/// Okabe–Ito colours (distinguishable with the common colour-vision deficiencies).
pub const BLUE: &str = "#0072B2";
/// See [`BLUE`].
pub const ORANGE: &str = "#E69F00";
/// See [`BLUE`].
pub const GREEN: &str = "#009E73";
/// See [`BLUE`].
pub const RED: &str = "#D55E00";
/// See [`BLUE`].
pub const PURPLE: &str = "#CC79A7";
/// See [`BLUE`].
pub const SKY: &str = "#56B4E9";
/// See [`BLUE`].
pub const BLACK: &str = "#222222";
/// See [`BLUE`].
pub const GREY: &str = "#999999";

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 18.0;
/// The plot's top edge below one row of legend; each further row moves it down by [`ROW`].
const TOP: f64 = 54.0;
const ROW: f64 = 16.0;
const BOTTOM: f64 = 48.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Style {
    /// Points joined by a line, with markers.
    Line,
    /// Points joined by a dashed line, with markers.
    Dashed,
    /// Markers only.
    Points,
    /// Vertical bars from 0, this wide (in x units), centred on each point.
    Bars(f64),
}

/// One named series of points.
#[derive(Debug, Clone)]
pub struct Series {
    /// Its legend entry.
    pub name: String,
    /// Colour.
    pub color: &'static str,
    /// How it is drawn.
    pub style: Style,
    /// Marker radius (lines and points).
    pub radius: f64,
    /// The points (x, y); non-finite ones are left out.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series with the default marker size.
    pub fn new(name: &str, color: &'static str, style: Style, points: Vec<(f64, f64)>) -> Self {
        Series {
            name: name.to_string(),
            color,
            style,
            radius: 3.5,
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
        }
    }
}

/// How an axis writes its numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    /// Plain numbers.
    Number,
    /// Fractions written as percentages (0.95 → 95%).
    Percent,
    /// Whole numbers only (ticks at integers).
    Integer,
}

/// An x–y chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title above the plot.
    pub title: String,
    /// The x axis' label.
    pub x_label: String,
    /// The y axis' label.
    pub y_label: String,
    /// How the x axis writes its numbers.
    pub x_format: Format,
    /// How the y axis writes its numbers.
    pub y_format: Format,
    /// The series, drawn in order.
    pub series: Vec<Series>,
    /// Draw the line y = x (and give both axes one range).
    pub diagonal: bool,
    /// Labelled vertical reference lines at these x.
    pub vlines: Vec<(f64, String)>,
    /// Category names of x = 0, 1, 2… (instead of numbers).
    pub categories: Option<Vec<String>>,
}

impl Chart {
    /// An empty chart with these labels.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Chart {
            title: title.to_string(),
            x_label: x_label.to_string(),
            y_label: y_label.to_string(),
            x_format: Format::Number,
            y_format: Format::Number,
            series: Vec::new(),
            diagonal: false,
            vlines: Vec::new(),
            categories: None,
        }
    }

    /// The chart as an `<svg>` element.
    pub fn svg(&self) -> String {
        let (xr, yr) = self.ranges();
        let legend = self.legend();
        let rows = legend.iter().map(|(_, _, row)| row + 1).max().unwrap_or(1);
        let plot = Plot {
            xr,
            yr,
            top: TOP + ROW * (rows - 1) as f64,
        };
        let mut s = open_svg(&self.title, WIDTH, HEIGHT);
        for (series, x, row) in legend {
            legend_entry(&mut s, series, x, 38.0 + ROW * row as f64);
        }
        plot.axes(&mut s, self);
        if self.diagonal {
            let lo = xr.0.max(yr.0);
            let hi = xr.1.min(yr.1);
            let _ = write!(
                s,
                r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{GREY}" stroke-dasharray="5 4"/>"#,
                plot.x(lo),
                plot.y(lo),
                plot.x(hi),
                plot.y(hi)
            );
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{:.1}" class="note" text-anchor="end">y = x</text>"#,
                plot.x(hi) - 4.0,
                plot.y(hi) + 14.0
            );
        }
        for (x, label) in &self.vlines {
            let px = plot.x(*x);
            let _ = write!(
                s,
                r#"<line x1="{px:.1}" y1="{:.1}" x2="{px:.1}" y2="{:.1}" stroke="{BLACK}" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" class="note">{}</text>"#,
                plot.top,
                HEIGHT - BOTTOM,
                px + 4.0,
                plot.top + 12.0,
                esc(label)
            );
        }
        for series in &self.series {
            plot.series(&mut s, series);
        }
        s.push_str("</svg>");
        s
    }

    /// The x and y ranges that hold every point (bars start at 0), padded.
    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let mut x = Span::default();
        let mut y = Span::default();
        for series in &self.series {
            for &(px, py) in &series.points {
                match series.style {
                    Style::Bars(w) => {
                        x.add(px - w / 2.0);
                        x.add(px + w / 2.0);
                        y.add(0.0);
                    }
                    _ => x.add(px),
                }
                y.add(py);
            }
        }
        for (vx, _) in &self.vlines {
            x.add(*vx);
        }
        if let Some(c) = &self.categories {
            x.add(-0.5);
            x.add(c.len() as f64 - 0.5);
        }
        if self.diagonal {
            let both = x.union(y);
            return (both.padded(), both.padded());
        }
        let xr = if self.categories.is_some() {
            (x.lo, x.hi)
        } else {
            x.padded()
        };
        (xr, y.padded())
    }

    /// The legend's entries: each named series with its x and row (entries wrap to a new
    /// row at the right edge).
    fn legend(&self) -> Vec<(&Series, f64, usize)> {
        let mut out = Vec::new();
        let (mut x, mut row) = (LEFT, 0);
        for series in self.series.iter().filter(|r| !r.name.is_empty()) {
            let w = 28.0 + 6.5 * series.name.chars().count() as f64;
            if x > LEFT && x + w > WIDTH - RIGHT {
                x = LEFT;
                row += 1;
            }
            out.push((series, x, row));
            x += w;
        }
        out
    }
}

/// One legend entry: the series' mark, then its name, at (x, y).
fn legend_entry(s: &mut String, series: &Series, x: f64, y: f64) {
    match series.style {
        Style::Bars(_) => {
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{:.1}" width="12" height="10" fill="{}"/>"#,
                y - 8.0,
                series.color
            );
        }
        _ => {
            let dash = if series.style == Style::Dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{}" stroke-width="2"{dash}/><circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"/>"#,
                y - 3.0,
                x + 14.0,
                y - 3.0,
                series.color,
                x + 7.0,
                y - 3.0,
                series.color
            );
        }
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{y:.1}" class="legend">{}</text>"#,
        x + 18.0,
        esc(&series.name)
    );
}

/// The lowest and highest value seen.
#[derive(Debug, Clone, Copy)]
struct Span {
    lo: f64,
    hi: f64,
}

impl Default for Span {
    fn default() -> Self {
        Span {
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
        }
    }
}

impl Span {
    fn add(&mut self, v: f64) {
        if v.is_finite() {
            self.lo = self.lo.min(v);
            self.hi = self.hi.max(v);
        }
    }

    fn union(self, o: Span) -> Span {
        Span {
            lo: self.lo.min(o.lo),
            hi: self.hi.max(o.hi),
        }
    }

    /// The span with 6% room on each side (a unit around a single value; 0–1 when empty).
    fn padded(self) -> (f64, f64) {
        if self.lo > self.hi {
            return (0.0, 1.0);
        }
        let w = self.hi - self.lo;
        if w <= f64::EPSILON * self.hi.abs().max(1.0) {
            let d = (self.hi.abs() * 0.05).max(1e-3);
            return (self.lo - d, self.hi + d);
        }
        (self.lo - 0.06 * w, self.hi + 0.06 * w)
    }
}

/// The mapping from data to pixels of one chart.
struct Plot {
    xr: (f64, f64),
    yr: (f64, f64),
    /// The plot area's top edge (below the legend).
    top: f64,
}

impl Plot {
    fn x(&self, v: f64) -> f64 {
        LEFT + (v - self.xr.0) / (self.xr.1 - self.xr.0) * (WIDTH - LEFT - RIGHT)
    }

    fn y(&self, v: f64) -> f64 {
        HEIGHT - BOTTOM - (v - self.yr.0) / (self.yr.1 - self.yr.0) * (HEIGHT - self.top - BOTTOM)
    }

    /// The frame, grid, ticks and axis labels.
    fn axes(&self, s: &mut String, c: &Chart) {
        let (x0, x1, y0, y1) = (LEFT, WIDTH - RIGHT, self.top, HEIGHT - BOTTOM);
        for (v, label) in ticks(self.yr, c.y_format) {
            let py = self.y(v);
            let _ = write!(
                s,
                r#"<line x1="{x0:.1}" y1="{py:.1}" x2="{x1:.1}" y2="{py:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{label}</text>"#,
                x0 - 6.0,
                py + 4.0
            );
        }
        let xticks: Vec<(f64, String)> = match &c.categories {
            Some(names) => {
                // Every category when they fit, otherwise every n-th.
                let step = names.len().div_ceil(24).max(1);
                names
                    .iter()
                    .enumerate()
                    .step_by(step)
                    .map(|(i, n)| (i as f64, esc(n)))
                    .collect()
            }
            None => ticks(self.xr, c.x_format),
        };
        for (v, label) in xticks {
            let px = self.x(v);
            let _ = write!(
                s,
                r#"<line x1="{px:.1}" y1="{y1:.1}" x2="{px:.1}" y2="{:.1}" stroke="{BLACK}"/><text x="{px:.1}" y="{:.1}" class="tick" text-anchor="middle">{label}</text>"#,
                y1 + 4.0,
                y1 + 17.0
            );
        }
        if self.yr.0 < 0.0 && self.yr.1 > 0.0 {
            let py = self.y(0.0);
            let _ = write!(
                s,
                r#"<line x1="{x0:.1}" y1="{py:.1}" x2="{x1:.1}" y2="{py:.1}" stroke="{BLACK}" stroke-width="0.8"/>"#
            );
        }
        let _ = write!(
            s,
            r#"<rect x="{x0:.1}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="{BLACK}"/><text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text transform="translate(16 {:.1}) rotate(-90)" class="axis" text-anchor="middle">{}</text>"#,
            x1 - x0,
            y1 - y0,
            (x0 + x1) / 2.0,
            HEIGHT - 8.0,
            esc(&c.x_label),
            (y0 + y1) / 2.0,
            esc(&c.y_label)
        );
    }

    fn series(&self, s: &mut String, r: &Series) {
        let color = r.color;
        match r.style {
            Style::Bars(w) => {
                for &(x, y) in &r.points {
                    let (left, right) = (self.x(x - w / 2.0), self.x(x + w / 2.0));
                    let (top, bottom) = (self.y(y.max(0.0)), self.y(y.min(0.0)));
                    let _ = write!(
                        s,
                        r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                        (right - left).max(0.5),
                        (bottom - top).max(0.0),
                        esc(&r.name),
                        short(y)
                    );
                }
            }
            Style::Line | Style::Dashed | Style::Points => {
                if r.style != Style::Points && r.points.len() > 1 {
                    let pts: Vec<String> = r
                        .points
                        .iter()
                        .map(|&(x, y)| format!("{:.1},{:.1}", self.x(x), self.y(y)))
                        .collect();
                    let dash = if r.style == Style::Dashed {
                        r#" stroke-dasharray="5 4""#
                    } else {
                        ""
                    };
                    let _ = write!(
                        s,
                        r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"{dash}/>"#,
                        pts.join(" ")
                    );
                }
                for &(x, y) in &r.points {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{color}" fill-opacity="0.8"><title>{}: ({}, {})</title></circle>"#,
                        self.x(x),
                        self.y(y),
                        r.radius,
                        esc(&r.name),
                        short(x),
                        short(y)
                    );
                }
            }
        }
    }
}

/// The opening `<svg>` tag and the title.
fn open_svg(title: &str, w: f64, h: f64) -> String {
    format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><text x="{:.1}" y="18" class="title" text-anchor="middle">{t}</text>"#,
        w / 2.0,
        t = esc(title)
    )
}

/// A number in at most 4 significant digits.
fn short(v: f64) -> String {
    if v == 0.0 || (1e-3..1e5).contains(&v.abs()) {
        let s = format!("{v:.4}");
        let s = s.trim_end_matches('0').trim_end_matches('.');
        s.to_string()
    } else {
        format!("{v:.3e}")
    }
}

/// About six round ticks (1, 2, 2.5 or 5 × 10ⁿ apart) within `range`, written per `format`.
fn ticks(range: (f64, f64), format: Format) -> Vec<(f64, String)> {
    let (lo, hi) = range;
    let raw = (hi - lo) / 6.0;
    if !(raw.is_finite() && raw > 0.0) {
        return Vec::new();
    }
    let mag = 10f64.powf(raw.log10().floor());
    let mut step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&s| s >= raw)
        .unwrap_or(10.0 * mag);
    if format == Format::Integer {
        step = step.max(1.0).round();
    }
    let scale = if format == Format::Percent {
        100.0
    } else {
        1.0
    };
    // The fewest decimals that write every multiple of the step exactly (2.5 needs one more).
    let decimals = (0..8)
        .find(|&d| {
            let v = step * scale * 10f64.powi(d);
            (v - v.round()).abs() < 1e-6 * v.max(1.0)
        })
        .unwrap_or(8) as usize;
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last)
        .map(|i| {
            let v = i as f64 * step;
            let label = match format {
                Format::Percent => format!("{:.decimals$}%", v * 100.0),
                Format::Integer => format!("{v:.0}"),
                Format::Number if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3) => {
                    format!("{v:.1e}")
                }
                Format::Number => format!("{v:.decimals$}"),
            };
            (v, label.replace('-', "−"))
        })
        .collect()
}

/// A heatmap of `cells` (rows × columns, row i named `names[i]`, column j `names[j]`):
/// `diverging` colours negative values orange and positive blue around white at 0,
/// otherwise white to blue from 0 to the maximum. Values are written in cells that fit them.
pub fn heatmap(
    title: &str,
    x_label: &str,
    y_label: &str,
    names: &[String],
    cells: &[Vec<f64>],
    diverging: bool,
) -> String {
    let n = names.len().max(1);
    let cell = (420.0 / n as f64).clamp(8.0, 40.0);
    let (left, top) = (78.0, 40.0);
    let w = left + cell * n as f64 + 20.0;
    let h = top + cell * n as f64 + 48.0;
    let max = cells
        .iter()
        .flatten()
        .fold(0.0f64, |m, v| m.max(v.abs()))
        .max(1e-12);
    let mut s = open_svg(title, w.max(300.0), h);
    let font = (cell * 0.38).clamp(7.0, 12.0);
    for (i, row) in cells.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            let t = (v / max).clamp(-1.0, 1.0);
            let fill = if diverging && t < 0.0 {
                mix((255, 255, 255), (213, 94, 0), -t)
            } else {
                mix((255, 255, 255), (0, 114, 178), t.abs())
            };
            let (x, y) = (left + j as f64 * cell, top + i as f64 * cell);
            let _ = write!(
                s,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{fill}" stroke="white" stroke-width="0.5"><title>{} → {}: {}</title></rect>"#,
                esc(names.get(i).map_or("", String::as_str)),
                esc(names.get(j).map_or("", String::as_str)),
                short(v)
            );
            if cell >= 16.0 && v != 0.0 {
                let ink = if t.abs() > 0.55 { "#ffffff" } else { BLACK };
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" font-size="{font:.1}" fill="{ink}" text-anchor="middle">{}</text>"#,
                    x + cell / 2.0,
                    y + cell / 2.0 + font / 3.0,
                    if diverging {
                        format!("{v:+.0}")
                    } else {
                        format!("{v:.0}")
                    }
                    .replace('-', "−")
                );
            }
        }
    }
    let step = n.div_ceil(25).max(1);
    for (i, name) in names.iter().enumerate().step_by(step) {
        let c = i as f64 * cell + cell / 2.0;
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{n}</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{n}</text>"#,
            left - 5.0,
            top + c + 4.0,
            left + c,
            top + cell * names.len() as f64 + 14.0,
            n = esc(name)
        );
    }
    let side = cell * names.len() as f64;
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text><text transform="translate(16 {:.1}) rotate(-90)" class="axis" text-anchor="middle">{}</text></svg>"#,
        left + side / 2.0,
        top + side + 36.0,
        esc(x_label),
        top + side / 2.0,
        esc(y_label)
    );
    s
}

/// `a` blended towards `b` by `t` in [0, 1], as `#rrggbb`.
fn mix(a: (u8, u8, u8), b: (u8, u8, u8), t: f64) -> String {
    let m = |x: u8, y: u8| (f64::from(x) + (f64::from(y) - f64::from(x)) * t).round() as u8;
    format!("#{:02x}{:02x}{:02x}", m(a.0, b.0), m(a.1, b.1), m(a.2, b.2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside() {
        let t = ticks((0.93, 0.97), Format::Percent);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["93%", "94%", "95%", "96%", "97%"]);
        let t = ticks((0.0, 0.11), Format::Percent);
        let labels: Vec<&str> = t.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(labels, ["0%", "2%", "4%", "6%", "8%", "10%"]);
        let t = ticks((0.0, 0.15), Format::Percent);
        assert_eq!(t[1].1, "2.5%");
        let t = ticks((0.9305, 0.9355), Format::Percent);
        assert!(t.len() >= 2, "{t:?}");
        for (_, l) in &t {
            assert!(
                l.starts_with("93.") && l.ends_with('%') && l.len() == 5,
                "{l}"
            );
        }
        let t = ticks((-0.5, 3.5), Format::Integer);
        assert_eq!(
            t.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            [0.0, 1.0, 2.0, 3.0]
        );
        let t = ticks((-12.0, 31.0), Format::Number);
        assert_eq!(t.first().map(|x| x.1.as_str()), Some("−10"));
        assert!(ticks((1.0, 1.0), Format::Number).is_empty());
    }

    #[test]
    fn charts_escape_text_and_skip_non_finite_points() {
        let mut c = Chart::new("a <b> & c", "x", "y");
        c.series.push(Series::new(
            "s\"1",
            BLUE,
            Style::Line,
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
        ));
        let svg = c.svg();
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.contains("s&quot;1"));
        assert_eq!(
            svg.matches("<circle").count(),
            2 + 1,
            "2 points + 1 legend marker"
        );
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn heatmap_colours_signs() {
        let names = vec!["0".to_string(), "1".to_string()];
        let svg = heatmap(
            "t",
            "p",
            "l",
            &names,
            &[vec![2.0, -2.0], vec![0.0, 1.0]],
            true,
        );
        assert!(svg.contains("#0072b2"), "the largest positive is full blue");
        assert!(
            svg.contains("#d55e00"),
            "the largest negative is full orange"
        );
        assert!(svg.contains(">+2<") && svg.contains(">−2<"));
    }
}
