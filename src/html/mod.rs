//! `report.html`: one self-contained page (inline CSS and SVG charts; no script, no network)
//! that shows a run's outcome: the headline gains with their uncertainty, every generation,
//! the children's scores, overfitting of the selection split, per-class changes, the greedy
//! ensembles' paths, the best model's changes per tensor, and the run's facts.
//!
//! The pages are built from [`crate::evolve::Report`] (what `report.json` holds) and, for one
//! model, [`ScorePage`]; any front end that has those can write them.

mod evolve;
pub mod svg;

use std::fmt::Write as _;
use std::path::Path;

pub use evolve::evolve;

use crate::Error;
use crate::score::{ClassStats, Metrics};

/// Writes `html` to `path` atomically (no partial file on failure), refusing to write over any
/// of `inputs`.
pub fn write(path: &Path, html: &str, inputs: &[&Path]) -> Result<(), Error> {
    crate::output::ensure_not_input(path, inputs)?;
    crate::output::write_atomic(path, |w| {
        w.write_all(html.as_bytes()).map_err(|e| {
            Error::from(crate::output::OutputError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        })
    })
}

/// What the page of one scored model shows (`smd-onnx score --html`).
#[derive(Debug, Clone)]
pub struct ScorePage<'a> {
    /// The model file.
    pub model: &'a str,
    /// The data file.
    pub data: &'a str,
    /// Which rows: `all`, `selection` or `holdout`, and how many.
    pub part: &'a str,
    /// The scored output and what it held.
    pub output: &'a str,
    /// Its metrics (`None`: the model failed on the data).
    pub metrics: Option<&'a Metrics>,
    /// Per-class results (classification).
    pub classes: Option<&'a ClassStats>,
    /// Facts to list under "Run" (name, value).
    pub facts: Vec<(String, String)>,
    /// The command line.
    pub command: Option<&'a str>,
}

/// The page of one scored model: its metrics, per-class results and confusion matrix.
pub fn score(p: &ScorePage) -> String {
    let mut body = String::new();
    let _ = write!(body, "<h1>smd-onnx score: {}</h1>", esc(p.model));
    match p.metrics {
        Some(m) => {
            body.push_str("<section><h2>Metrics</h2><table>");
            for (name, v) in m.values() {
                let _ = write!(body, "<tr><th>{name}</th><td>{v:.6}</td></tr>");
            }
            let _ = write!(body, "<tr><th>rows</th><td>{}</td></tr></table></section>", m.samples);
        }
        None => body.push_str(r#"<p class="headline bad">The model failed on this data (NaN or infinite outputs).</p>"#),
    }
    if let Some(c) = p.classes {
        body.push_str(&per_class_section(c));
    }
    let mut facts = vec![
        ("model".to_string(), p.model.to_string()),
        ("data".to_string(), p.data.to_string()),
        ("rows".to_string(), p.part.to_string()),
        ("output".to_string(), p.output.to_string()),
    ];
    facts.extend(p.facts.iter().cloned());
    body.push_str(&facts_section(&facts, p.command));
    page(&format!("smd-onnx score: {}", p.model), &body)
}

/// One model's per-class precision, recall and F1 and its confusion matrix.
fn per_class_section(c: &ClassStats) -> String {
    let mut s = String::from("<section><h2>Per class</h2>");
    let names = class_names(c.support.len());
    let shown = top_classes(c.support.len(), |i| c.support[i] as f64);
    let mut chart = svg::Chart::new("Precision and recall per class", "class", "fraction");
    chart.y_format = svg::Format::Percent;
    chart.categories = Some(shown.iter().map(|&i| names[i].clone()).collect());
    let pick = |v: &[f64]| -> Vec<(f64, f64)> {
        shown
            .iter()
            .enumerate()
            .map(|(x, &i)| (x as f64, v[i]))
            .collect()
    };
    chart.series.push(svg::Series::new(
        "precision",
        svg::SKY,
        svg::Style::Bars(0.4),
        offset(pick(&c.precision), -0.2),
    ));
    chart.series.push(svg::Series::new(
        "recall",
        svg::BLUE,
        svg::Style::Bars(0.4),
        offset(pick(&c.recall), 0.2),
    ));
    s.push_str(r#"<div class="charts">"#);
    s.push_str(&chart.svg());
    if let Some(m) = &c.confusion
        && m.len() <= MAX_HEATMAP_CLASSES
    {
        let cells: Vec<Vec<f64>> = m
            .iter()
            .map(|r| r.iter().map(|&v| v as f64).collect())
            .collect();
        s.push_str(&svg::heatmap(
            "Confusion matrix (rows per cell)",
            "predicted class",
            "true class",
            &names,
            &cells,
            false,
        ));
    }
    s.push_str("</div>");
    s.push_str("<table><tr><th>class</th><th>rows</th><th>predicted</th><th>precision</th><th>recall</th><th>F1</th></tr>");
    for &i in &shown {
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&names[i]),
            c.support[i],
            c.predicted[i],
            c.precision[i],
            c.recall[i],
            c.f1[i]
        );
    }
    s.push_str("</table></section>");
    s
}

/// Heatmaps are drawn up to this many classes (a larger one is unreadable on a laptop screen).
pub const MAX_HEATMAP_CLASSES: usize = 50;

/// Classes shown one by one in charts and tables: all up to [`MAX_HEATMAP_CLASSES`],
/// otherwise the 20 with the largest `weight`, in class order.
fn top_classes(classes: usize, weight: impl Fn(usize) -> f64) -> Vec<usize> {
    let mut all: Vec<usize> = (0..classes).collect();
    if classes > MAX_HEATMAP_CLASSES {
        all.sort_by(|&a, &b| weight(b).total_cmp(&weight(a)).then(a.cmp(&b)));
        all.truncate(20);
        all.sort_unstable();
    }
    all
}

/// Names of `n` classes (their ids).
fn class_names(n: usize) -> Vec<String> {
    (0..n).map(|i| i.to_string()).collect()
}

/// `points` moved by `dx` along x (side-by-side bars).
fn offset(points: Vec<(f64, f64)>, dx: f64) -> Vec<(f64, f64)> {
    points.into_iter().map(|(x, y)| (x + dx, y)).collect()
}

/// The "Run" section: a table of facts and the command line.
fn facts_section(facts: &[(String, String)], command: Option<&str>) -> String {
    let mut s = String::from(r#"<section id="facts"><h2>Run</h2>"#);
    if let Some(c) = command {
        let _ = write!(s, "<p>Command line:</p><pre>{}</pre>", esc(c));
    }
    s.push_str(r#"<table class="facts">"#);
    for (k, v) in facts {
        let _ = write!(s, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    }
    s.push_str("</table></section>");
    s
}

/// The whole page around `body`.
fn page(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{}</title><style>{CSS}</style></head>
<body><main>{body}<footer>Written by smd-onnx {}. Hover over a point or bar for its value.</footer></main></body></html>
"#,
        esc(title),
        env!("CARGO_PKG_VERSION")
    )
}

const CSS: &str = "body{margin:0;font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;color:#222;background:#fafafa}\
main{max-width:1140px;margin:0 auto;padding:16px 24px}\
h1{font-size:22px;margin:8px 0 12px;word-break:break-all}h2{font-size:18px;margin:0 0 8px}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:14px 18px;margin:14px 0}\
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}svg{max-width:100%;height:auto;background:#fff}\
svg text{font-family:system-ui,sans-serif;fill:#222}svg .title{font-size:14px;font-weight:600}\
svg .tick{font-size:11px}svg .axis{font-size:12px}svg .legend{font-size:11.5px}svg .note{font-size:11px;fill:#444}\
svg .grid{stroke:#e4e4e4}\
.headline{font-size:16px;margin:6px 0}.good{color:#00684a}.bad{color:#a23b00}.muted{color:#666}\
table{border-collapse:collapse;margin:8px 0;font-size:13.5px}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}\
td{font-variant-numeric:tabular-nums}table.facts td{word-break:break-all}\
pre{background:#f2f2f2;padding:8px;white-space:pre-wrap;word-break:break-all;font-size:13px}\
.bar{display:inline-block;height:10px;background:#0072B2;vertical-align:middle}\
footer{color:#777;font-size:12px;margin:18px 0}";

/// `s` with the characters HTML gives meaning to escaped (for text and attribute values).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            esc(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn many_classes_show_the_heaviest_twenty() {
        assert_eq!(top_classes(3, |i| i as f64), [0, 1, 2]);
        let t = top_classes(100, |i| if i % 10 == 0 { 5.0 } else { 1.0 });
        assert_eq!(t.len(), 20);
        assert!(
            t.starts_with(&[0, 1, 2]),
            "ties go to the lower class: {t:?}"
        );
        assert!(t.contains(&90));
    }

    #[test]
    fn score_page_is_self_contained() {
        let probs = [0.9f32, 0.1, 0.2, 0.8, 0.6, 0.4];
        let labels = [0, 1, 1];
        let m = crate::score::metrics::classification_metrics(&probs, 2, &labels);
        let c = ClassStats::of(&probs, 2, &labels);
        let html = score(&ScorePage {
            model: "m<1>.onnx",
            data: "d.npz",
            part: "all (3 rows)",
            output: "y",
            metrics: Some(&m),
            classes: Some(&c),
            facts: vec![("runtime".into(), "1.31".into())],
            command: Some("smd-onnx score 'm<1>.onnx'"),
        });
        assert!(html.contains("m&lt;1&gt;.onnx") && !html.contains("m<1>"));
        assert!(html.contains("balanced_accuracy"));
        assert_eq!(
            html.matches("<svg").count(),
            2,
            "bars and the confusion matrix"
        );
        for banned in ["<script", "http://", "https://", "<link", "src="] {
            let outside_svg_ns = html.replace("http://www.w3.org/2000/svg", "");
            assert!(!outside_svg_ns.contains(banned), "{banned}");
        }
    }
}
