//! The page of an `evolve` run, section by section.

use std::fmt::Write as _;

use super::svg::{self, Chart, Format, Series, Style};
use super::{MAX_HEATMAP_CLASSES, class_names, esc, facts_section, offset, page, top_classes};
use crate::evolve::{EnsembleReport, Report, Significance, better_by};
use crate::score::{ClassStats, Metric, Metrics};

/// The page of an `evolve` run (see the module docs of [`super`]).
pub fn evolve(r: &Report) -> String {
    let u = Units::of(r);
    let mut body = String::new();
    let _ = write!(body, "<h1>smd-onnx evolve: {}</h1>", esc(&r.model));
    body.push_str(&headline(r, &u));
    body.push_str(&generations(r, &u));
    body.push_str(&children(r, &u));
    body.push_str(&per_class(r));
    body.push_str(&greedy(r, &u));
    body.push_str(&tensors(r));
    body.push_str(&facts_section(&facts(r), r.command.as_deref()));
    page(&format!("smd-onnx evolve: {}", r.model), &body)
}

/// What the run's scores are: accuracy (higher is better) or MSE (lower is better).
struct Units {
    regression: bool,
}

impl Units {
    fn of(r: &Report) -> Units {
        Units {
            regression: r.parent.selection.accuracy.is_none(),
        }
    }

    /// The number charts show: accuracy, or MSE.
    fn value(&self, m: &Metrics) -> f64 {
        if self.regression {
            m.mse.unwrap_or(f64::NAN)
        } else {
            m.accuracy.unwrap_or(f64::NAN)
        }
    }

    /// A value from [`Metrics::primary`] (accuracy, or −MSE) as charts show it.
    fn of_primary(&self, p: f64) -> f64 {
        if self.regression { -p } else { p }
    }

    fn name(&self) -> &'static str {
        if self.regression {
            "MSE (lower is better)"
        } else {
            "accuracy"
        }
    }

    fn format(&self) -> Format {
        if self.regression {
            Format::Number
        } else {
            Format::Percent
        }
    }

    /// A value as text.
    fn text(&self, v: f64) -> String {
        if self.regression {
            format!("MSE {v:.5}")
        } else {
            format!("{:.2}%", v * 100.0)
        }
    }

    /// A gain in [`Metrics::primary`] units as text: accuracy points, or the change of MSE.
    fn gain(&self, g: f64) -> String {
        let s = if self.regression {
            format!("MSE {:+.5}", -g)
        } else {
            format!("{:+.2} pp", g * 100.0)
        };
        s.replace('-', "−")
    }
}

/// The headline: the best model and the exported ensemble, their holdout gains with 95%
/// intervals, and a plain sentence when nothing significant was found.
fn headline(r: &Report, u: &Units) -> String {
    let mut s = String::from(r#"<section id="headline"><h2>Outcome</h2>"#);
    let original = u.value(&r.parent.holdout);
    let _ = write!(
        s,
        "<p>The original model: {} on the {} holdout rows ({} on the {} selection rows, where candidates were chosen).</p>",
        u.text(original),
        r.samples.holdout,
        u.text(u.value(&r.parent.selection)),
        r.samples.selection
    );
    let mut significant = false;
    match &r.best {
        Some(b) => {
            let what = match (b.kind.as_str(), b.index) {
                ("child", Some(i)) => format!("child {i} of generation {}", b.generation),
                (kind, _) => format!("the {kind} candidate of generation {}", b.generation),
            };
            let gate = r.settings.accept_p;
            let file = match (r.outputs.best.is_some(), b.selection_p) {
                (true, _) => " (best.onnx)".to_string(),
                (false, Some(p)) if gate < 1.0 && p >= gate => format!(
                    " (not written: its selection gain over the original is not significant, McNemar p = {p:.3} ≥ {gate})"
                ),
                _ => String::new(),
            };
            significant |= b.significance.ci95[0] > 0.0;
            let _ = write!(
                s,
                "<p class=\"headline\"><b>Best model{file}</b>: {what}: {} on holdout, {}.</p>",
                u.text(u.value(&b.scores.holdout)),
                gain_sentence(&b.significance, u)
            );
        }
        None => s.push_str(
            "<p class=\"headline\"><b>Best model</b>: no candidate beat the original on the selection rows, so the original stays (no best.onnx).</p>",
        ),
    }
    if let Some(e) = shown_ensemble(r) {
        let gate = r.settings.accept_p;
        let file = match (
            r.outputs.ensemble_kind.as_deref() == Some(e.name.as_str()),
            e.selection_p,
        ) {
            (true, _) => " (ensemble.onnx)".to_string(),
            (false, Some(p)) if gate < 1.0 && p >= gate => format!(
                " (best on selection; not written: selection gain not significant, McNemar p = {p:.3} ≥ {gate})"
            ),
            _ => " (best on selection; not exported)".to_string(),
        };
        significant |= e.significance.ci95[0] > 0.0;
        let _ = write!(
            s,
            "<p class=\"headline\"><b>Ensemble {}{file}</b>, {} members: {} on holdout, {}.</p>",
            esc(&e.name),
            e.members.len(),
            u.text(u.value(&e.scores.holdout)),
            gain_sentence(&e.significance, u)
        );
    }
    if significant {
        s.push_str("<p class=\"headline good\">A holdout gain whose 95% interval lies above zero was found.</p>");
    } else {
        let _ = write!(
            s,
            "<p class=\"headline bad\">Nothing significant was found: no holdout gain's 95% interval lies above zero on these {} holdout rows. More holdout rows, more generations or another σ may tell more.</p>",
            r.samples.holdout
        );
    }
    s.push_str("</section>");
    s
}

/// "gain +1.2 pp (95% interval −0.3 to +2.6 pp, McNemar p = 0.21; selection gain …)".
fn gain_sentence(sig: &Significance, u: &Units) -> String {
    let p = sig
        .mcnemar_p
        .map(|p| format!(", McNemar p = {p:.3}"))
        .unwrap_or_default();
    // A change of MSE is the negated gain: its interval's ends swap.
    let [lo, hi] = sig.ci95;
    let (first, last) = if u.regression { (hi, lo) } else { (lo, hi) };
    format!(
        "gain vs the original {} (95% interval {} to {}{p}); on the selection rows {}",
        u.gain(sig.gain),
        u.gain(first),
        u.gain(last),
        u.gain(sig.selection_gain)
    )
}

/// The exported ensemble, or else the one with the best selection score.
fn shown_ensemble(r: &Report) -> Option<&EnsembleReport> {
    if let Some(name) = &r.outputs.ensemble_kind {
        return r.ensembles.iter().find(|e| &e.name == name);
    }
    let sel: Vec<Option<Metrics>> = r
        .ensembles
        .iter()
        .map(|e| Some(e.scores.selection))
        .collect();
    crate::evolve::best_by(metric_of(r), &sel).and_then(|i| r.ensembles.get(i))
}

/// What the run's selection optimised (`None`: the default).
fn metric_of(r: &Report) -> Option<Metric> {
    r.settings.metric.and_then(|n| n.parse().ok())
}

/// Per generation: parent, best child, median child and merged candidate, on both splits.
fn generations(r: &Report, u: &Units) -> String {
    let mut s = String::from(
        r#"<section id="generations"><h2>Generations</h2><p class="muted">Each generation's parent, its best child (by selection score), the median of its children and the merged candidate (every child that beat the parent, applied together; its holdout score exists only when it won).</p><div class="charts">"#,
    );
    for (part, holdout) in [("selection rows", false), ("holdout rows", true)] {
        let pick = |m: &crate::evolve::Scores| if holdout { m.holdout } else { m.selection };
        let mut parent = Vec::new();
        let mut best = Vec::new();
        let mut median_child = Vec::new();
        let mut merged = Vec::new();
        for g in &r.generations {
            let x = f64::from(g.generation);
            parent.push((x, u.value(&pick(&g.parent))));
            let kids: Vec<&crate::evolve::ChildReport> = r
                .children
                .iter()
                .filter(|c| c.generation == g.generation)
                .collect();
            let of = |c: &crate::evolve::ChildReport| if holdout { c.holdout } else { c.selection };
            if let Some(b) = g
                .best_child
                .and_then(|i| kids.iter().find(|c| c.index == i))
                && let Some(m) = of(b)
            {
                best.push((x, u.value(&m)));
            }
            let values: Vec<f64> = kids
                .iter()
                .filter_map(|c| of(c))
                .map(|m| u.value(&m))
                .collect();
            if let Some(m) = median(values) {
                median_child.push((x, m));
            }
            if let Some(m) = g
                .merged
                .as_ref()
                .and_then(|m| if holdout { m.holdout } else { m.selection })
            {
                merged.push((x, u.value(&m)));
            }
        }
        let mut c = Chart::new(&format!("On the {part}"), "generation", u.name());
        c.x_format = Format::Integer;
        c.y_format = u.format();
        c.series = vec![
            Series::new("parent", svg::BLACK, Style::Line, parent),
            Series::new("best child", svg::RED, Style::Line, best),
            Series::new("median child", svg::BLUE, Style::Dashed, median_child),
            Series::new("merged", svg::ORANGE, Style::Points, merged),
        ];
        s.push_str(&c.svg());
    }
    s.push_str("</div></section>");
    s
}

/// The median of `v` (`None` when empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.retain(|x| x.is_finite());
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// The children's selection scores against their parent's, and selection against holdout for
/// every candidate (overfitting of the selection split shows as points below y = x).
fn children(r: &Report, u: &Units) -> String {
    let metric = metric_of(r);
    let parent_of = |g: u32| {
        r.generations
            .iter()
            .find(|x| x.generation == g)
            .map(|x| x.parent)
    };
    let mut diffs = Vec::new();
    let mut beat = 0;
    for c in &r.children {
        if let (Some(m), Some(p)) = (c.selection, parent_of(c.generation)) {
            diffs.push(u.value(&m) - u.value(&p.selection));
            beat += usize::from(better_by(metric, &m, &p.selection));
        }
    }
    let n = r.children.len();
    let dropped = r
        .children
        .iter()
        .filter(|c| c.dropped_after.is_some())
        .count();
    let dropped = if dropped > 0 {
        format!("; racing dropped {dropped} early (no full score: not in the charts)")
    } else {
        String::new()
    };
    let mut s = format!(
        r#"<section id="children"><h2>Children</h2><p>{beat} of {n} children ({:.0}%) beat their parent on the selection rows ({}); {} failed{dropped}.</p><div class="charts">"#,
        100.0 * beat as f64 / n.max(1) as f64,
        match (metric, u.regression) {
            (Some(m), _) => format!("by {}, then lower NLL", m.name()),
            (None, true) => "lower MSE".into(),
            (None, false) => "higher accuracy, or equal accuracy and lower NLL".into(),
        },
        r.children.iter().filter(|c| c.failed.is_some()).count()
    );
    let scale = if u.regression { 1.0 } else { 100.0 };
    let unit = if u.regression { "MSE" } else { "accuracy, pp" };
    let mut h = Chart::new(
        "Children's selection scores",
        &format!("child − its parent ({unit})"),
        "children",
    );
    h.y_format = Format::Integer;
    h.series = histogram(diffs.iter().map(|d| d * scale).collect());
    h.vlines = vec![(0.0, "parent".into())];
    s.push_str(&h.svg());
    s.push_str(&overfitting(r, u).svg());
    s.push_str("</div></section>");
    s
}

/// Bars of a histogram of `v` (about 20 bins of a round width).
fn histogram(v: Vec<f64>) -> Vec<Series> {
    let (lo, hi) = v
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    if !(lo.is_finite() && hi.is_finite()) {
        return Vec::new();
    }
    let raw = ((hi - lo) / 20.0).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let width = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&w| w >= raw)
        .unwrap_or(raw);
    let mut bins: std::collections::BTreeMap<i64, u32> = std::collections::BTreeMap::new();
    for x in v {
        *bins.entry((x / width).round() as i64).or_default() += 1;
    }
    let points = bins
        .into_iter()
        .map(|(b, n)| (b as f64 * width, f64::from(n)))
        .collect();
    vec![Series::new("", svg::BLUE, Style::Bars(width * 0.9), points)]
}

/// Selection against holdout for every scored candidate, with y = x.
fn overfitting(r: &Report, u: &Units) -> Chart {
    let both = |s: Option<Metrics>, h: Option<Metrics>| Some((u.value(&s?), u.value(&h?)));
    let kids = r
        .children
        .iter()
        .filter_map(|c| both(c.selection, c.holdout))
        .collect();
    let merged = r
        .generations
        .iter()
        .flat_map(|g| g.merged.iter().chain(&g.stretched))
        .filter_map(|m| both(m.selection, m.holdout))
        .collect();
    let parents = r
        .generations
        .iter()
        .map(|g| (u.value(&g.parent.selection), u.value(&g.parent.holdout)))
        .collect();
    let ens = r
        .ensembles
        .iter()
        .map(|e| (u.value(&e.scores.selection), u.value(&e.scores.holdout)))
        .collect();
    let best = r
        .best
        .iter()
        .map(|b| (u.value(&b.scores.selection), u.value(&b.scores.holdout)))
        .collect();
    let mut c = Chart::new(
        "Selection vs holdout",
        &format!("selection {}", u.name()),
        &format!("holdout {}", u.name()),
    );
    c.x_format = u.format();
    c.y_format = u.format();
    c.diagonal = true;
    let mut best = Series::new("best", svg::RED, Style::Points, best);
    best.radius = 6.0;
    c.series = vec![
        Series::new("children", svg::SKY, Style::Points, kids),
        Series::new("merged", svg::ORANGE, Style::Points, merged),
        Series::new("parents", svg::BLACK, Style::Points, parents),
        Series::new("ensembles", svg::GREEN, Style::Points, ens),
        best,
    ];
    c
}

/// Per-class recall change of the best model and the ensemble against the original, and the
/// change of their confusion matrices (holdout rows).
fn per_class(r: &Report) -> String {
    let Some(parent) = &r.parent_holdout_classes else {
        return String::new();
    };
    let mut models: Vec<(String, &ClassStats, &'static str)> = Vec::new();
    if let Some(b) = r.best.as_ref().and_then(|b| b.holdout_classes.as_ref()) {
        models.push(("best model".into(), b, svg::RED));
    }
    if let Some(e) = shown_ensemble(r)
        && let Some(c) = &e.holdout_classes
    {
        models.push((format!("ensemble {}", e.name), c, svg::GREEN));
    }
    let mut s = String::from(r#"<section id="classes"><h2>Per class (holdout rows)</h2>"#);
    if models.is_empty() {
        s.push_str("<p>No model to compare with the original.</p></section>");
        return s;
    }
    let classes = parent.recall.len();
    let change = |c: &ClassStats, i: usize| c.recall[i] - parent.recall[i];
    let shown = top_classes(classes, |i| {
        models
            .iter()
            .map(|(_, c, _)| change(c, i).abs())
            .fold(0.0, f64::max)
    });
    if classes > MAX_HEATMAP_CLASSES {
        let _ = write!(
            s,
            "<p>The 20 of {classes} classes whose recall changed most.</p>"
        );
    }
    let names = class_names(classes);
    let mut chart = Chart::new(
        "Recall change vs the original",
        "class",
        "recall change (pp)",
    );
    chart.categories = Some(shown.iter().map(|&i| names[i].clone()).collect());
    let w = 0.8 / models.len() as f64;
    for (k, (name, c, color)) in models.iter().enumerate() {
        let pts = shown
            .iter()
            .enumerate()
            .map(|(x, &i)| (x as f64, 100.0 * change(c, i)))
            .collect();
        let dx = (k as f64 + 0.5) * w - 0.4;
        chart.series.push(Series::new(
            name,
            color,
            Style::Bars(w * 0.9),
            offset(pts, dx),
        ));
    }
    s.push_str(r#"<div class="charts">"#);
    s.push_str(&chart.svg());
    for (name, c, _) in &models {
        s.push_str(&confusion_change(name, parent, c, &names));
    }
    s.push_str("</div></section>");
    s
}

/// The change of the confusion matrix from the original to `name` (`c`): a heatmap up to
/// [`MAX_HEATMAP_CLASSES`] classes, otherwise a table of the largest changes.
fn confusion_change(name: &str, parent: &ClassStats, c: &ClassStats, names: &[String]) -> String {
    let (Some(a), Some(b)) = (&parent.confusion, &c.confusion) else {
        return String::new();
    };
    let diff: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(ra, rb)| {
            ra.iter()
                .zip(rb)
                .map(|(&x, &y)| y as f64 - x as f64)
                .collect()
        })
        .collect();
    if names.len() <= MAX_HEATMAP_CLASSES {
        return svg::heatmap(
            &format!("Confusion change: {name} − original"),
            "predicted class",
            "true class",
            names,
            &diff,
            true,
        );
    }
    let mut cells: Vec<(usize, usize, f64)> = diff
        .iter()
        .enumerate()
        .flat_map(|(i, row)| row.iter().enumerate().map(move |(j, &v)| (i, j, v)))
        .filter(|c| c.2 != 0.0)
        .collect();
    cells.sort_by(|x, y| y.2.abs().total_cmp(&x.2.abs()));
    let mut s = format!(
        "<table><caption>Largest confusion changes: {}</caption><tr><th>true</th><th>predicted</th><th>rows</th></tr>",
        esc(name)
    );
    for (i, j, v) in cells.into_iter().take(15) {
        let _ = write!(s, "<tr><td>{i}</td><td>{j}</td><td>{v:+}</td></tr>");
    }
    s.push_str("</table>");
    s
}

/// The greedy ensembles' score against their number of members.
fn greedy(r: &Report, u: &Units) -> String {
    let paths: Vec<&EnsembleReport> = r.ensembles.iter().filter(|e| !e.path.is_empty()).collect();
    if paths.is_empty() {
        return String::new();
    }
    let mut c = Chart::new(
        "Greedy ensemble selection",
        "members (with repeats)",
        u.name(),
    );
    c.x_format = Format::Integer;
    c.y_format = u.format();
    let colors = [(svg::GREEN, svg::PURPLE), (svg::BLUE, svg::ORANGE)];
    let mut last = 1.0f64;
    for (e, (cs, ch)) in paths.iter().zip(colors) {
        let step = |f: &dyn Fn(&crate::evolve::GreedyStep) -> f64| -> Vec<(f64, f64)> {
            e.path
                .iter()
                .enumerate()
                .map(|(i, p)| ((i + 1) as f64, u.of_primary(f(p))))
                .collect()
        };
        last = last.max(e.path.len() as f64);
        c.series.push(Series::new(
            &format!("{} selection", e.name),
            cs,
            Style::Line,
            step(&|p| p.selection),
        ));
        c.series.push(Series::new(
            &format!("{} holdout", e.name),
            ch,
            Style::Dashed,
            step(&|p| p.holdout),
        ));
    }
    if let Some(e) = shown_ensemble(r).filter(|e| !e.path.is_empty()) {
        let members: f64 = e.members.iter().map(|m| m.weight).sum();
        c.vlines.push((members, format!("{} chosen", e.name)));
    }
    let orig = u.value(&r.parent.holdout);
    c.series.push(Series::new(
        "original holdout",
        svg::GREY,
        Style::Dashed,
        vec![(1.0, orig), (last, orig)],
    ));
    format!(
        r#"<section id="greedy"><h2>Greedy ensembles</h2><p class="muted">Each step adds the member that makes the running ensemble best on the selection rows; the exported ensemble is the best step, later steps show where selection stopped.</p>{}</section>"#,
        c.svg()
    )
}

/// The best model's changes per mutable tensor.
fn tensors(r: &Report) -> String {
    let Some(b) = &r.best else {
        return String::new();
    };
    let mut s = String::from(
        r#"<section id="tensors"><h2>Changes of the best model per tensor</h2><table><tr><th>tensor</th><th>elements</th><th>mutated</th><th>relative change ‖Δ‖/‖W‖</th></tr>"#,
    );
    let top = b
        .tensors
        .iter()
        .filter_map(|t| t.relative_change)
        .fold(0.0f64, f64::max);
    for t in &b.tensors {
        let rel = match t.relative_change {
            Some(v) => format!(
                r#"<span class="bar" style="width:{:.0}px"></span> {v:.2e}"#,
                120.0 * v / top.max(1e-300)
            ),
            None => "(all zeros before)".into(),
        };
        let _ = write!(
            s,
            "<tr><td>{}</td><td>{}</td><td>{} ({:.1}%)</td><td>{rel}</td></tr>",
            esc(&t.name),
            t.elements,
            t.changed,
            100.0 * t.changed as f64 / t.elements.max(1) as f64
        );
    }
    s.push_str("</table></section>");
    s
}

/// The run's facts: model, data, settings, runtime, timings, outputs.
fn facts(r: &Report) -> Vec<(String, String)> {
    let mut f: Vec<(String, String)> = vec![
        ("model".into(), r.model.clone()),
        ("model hash (blake3)".into(), r.parent_hash.clone()),
        ("data".into(), r.data.clone()),
        ("scored output".into(), r.output.clone()),
        (
            "rows".into(),
            format!(
                "{} selection, {} holdout",
                r.samples.selection, r.samples.holdout
            ),
        ),
        (
            "mutable".into(),
            format!(
                "{} tensors, {} elements",
                r.mutable.tensors, r.mutable.elements
            ),
        ),
    ];
    if let Ok(serde_json::Value::Object(set)) = serde_json::to_value(&r.settings) {
        for (k, v) in set {
            let v = match v {
                serde_json::Value::String(t) => t,
                v => v.to_string(),
            };
            f.push((format!("setting: {k}"), v));
        }
    }
    let rt = &r.runtime;
    f.push((
        "device".into(),
        format!("{} ({})", rt.device, rt.providers.join(", ")),
    ));
    f.push((
        "ONNX Runtime".into(),
        format!("{} ({})", rt.version, rt.library.display()),
    ));
    f.push(("smd-onnx".into(), r.smd_onnx.clone()));
    f.push((
        "passes".into(),
        format!(
            "{} selection, {} holdout; stopped: {:?}",
            r.passes.selection, r.passes.holdout, r.stopped
        ),
    ));
    let t = &r.timings;
    f.push((
        "seconds".into(),
        format!(
            "load {:.2}, parent {:.2}, children {:.2}, ensembles {:.2}, export {:.2}, total {:.2}",
            t.load, t.parent, t.children, t.ensembles, t.export, t.total
        ),
    ));
    let o = &r.outputs;
    for (k, v) in [("best.onnx", &o.best), ("ensemble.onnx", &o.ensemble)] {
        f.push((k.into(), v.clone().unwrap_or_else(|| "not written".into())));
    }
    f.push(("report.json".into(), o.report.clone()));
    for n in &r.notices {
        f.push(("notice".into(), n.clone()));
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(vec![f64::NAN, 1.0]), Some(1.0));
    }

    #[test]
    fn histogram_counts_every_value() {
        let h = histogram(vec![0.0, 0.0, 1.0, 2.0, 2.0, 2.0]);
        let total: f64 = h[0].points.iter().map(|p| p.1).sum();
        assert_eq!(total, 6.0);
        assert!(histogram(vec![]).is_empty());
    }
}
