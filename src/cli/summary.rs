//! The human summary of an evolution run: a table of the parent, the last generation's
//! children, the merged candidate and the ensembles, then the outcome and the files written.

use smd_onnx::evolve::{Report, Scores, Stopped};
use smd_onnx::score::Metrics;

fn pct(m: &Metrics) -> String {
    match (m.accuracy, m.mse) {
        (Some(a), _) => format!("{:6.2}%", 100.0 * a),
        (None, Some(e)) => format!("{e:8.5}"),
        _ => "-".into(),
    }
}

fn nll(m: &Metrics) -> String {
    m.nll.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

fn delta(m: &Metrics, base: &Metrics) -> String {
    match (m.accuracy, base.accuracy, m.mse, base.mse) {
        (Some(a), Some(b), _, _) => format!("{:+.2}", 100.0 * (a - b)),
        (_, _, Some(a), Some(b)) => format!("{:+.5}", a - b),
        _ => "-".into(),
    }
}

/// A holdout gain against the original model and, when they differ (later generations),
/// against a generation's parent; in accuracy points, or as a change of MSE.
fn gains(report: &Report, vs_original: f64, vs_generation_parent: f64, gen_parent: &str) -> String {
    let text = |g: f64| {
        if report.parent.holdout.accuracy.is_some() {
            format!("{:+.2} points", 100.0 * g)
        } else {
            // The gain is in −MSE: a positive gain lowers the MSE.
            format!("MSE {:+.5}", -g)
        }
    };
    let mut s = format!("{} vs the original model", text(vs_original));
    if report.generations.len() > 1 {
        s.push_str(&format!("; {} vs {gen_parent}", text(vs_generation_parent)));
    }
    s
}

/// A summary a person can read: the table, the outcome, the files written.
pub fn summary(report: &Report) -> String {
    let mut s = table(report);
    s.push('\n');
    s.push_str(&outcome(report));
    s
}

/// One row of the table: selection and holdout metrics, holdout change against `base`.
fn row(s: &mut String, name: &str, sc: &Scores, base: &Metrics) {
    s.push_str(&format!(
        "{name:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
        pct(&sc.selection),
        nll(&sc.selection),
        pct(&sc.holdout),
        nll(&sc.holdout),
        delta(&sc.holdout, base)
    ));
}

/// A child or merged candidate's row: scored, scored on selection only, or failed.
fn candidate(
    s: &mut String,
    name: &str,
    (sel, hold, failed): (Option<Metrics>, Option<Metrics>, Option<&str>),
    base: &Metrics,
) {
    match (sel, hold, failed) {
        (Some(selection), Some(holdout), _) => row(s, name, &Scores { selection, holdout }, base),
        (Some(sel), None, None) => s.push_str(&format!(
            "{name:<22} {:>9} {:>9}  (did not win on selection: holdout not scored)\n",
            pct(&sel),
            nll(&sel),
        )),
        (_, _, failed) => s.push_str(&format!("{name:<22} failed: {}\n", failed.unwrap_or("?"))),
    }
}

/// The run's facts, then parent, the last generation's children, its merged candidate and
/// the ensembles; selection and holdout; change against the original model on holdout.
fn table(report: &Report) -> String {
    let metric = if report.parent.selection.accuracy.is_some() {
        "accuracy"
    } else {
        "MSE"
    };
    let (r, set) = (report, &report.settings);
    let mut s = format!(
        "{} on {} ({} selection / {} holdout samples), {} children x {} generation(s), sigma {}\n\n",
        r.model,
        r.data,
        r.samples.selection,
        r.samples.holdout,
        set.children,
        set.generations,
        set.sigma
    );
    s.push_str(&format!(
        "{:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
        "model", "sel", "sel nll", "holdout", "hold nll", "Δ hold"
    ));
    s.push_str(&format!(
        "{:<22} {:>9} {:>9}  {:>9} {:>9}  {:>8}\n",
        "", metric, "", metric, "", "vs orig."
    ));
    let base = report.parent.holdout;
    row(&mut s, "parent", &report.parent, &base);
    let last = report.generations.last().map_or(0, |g| g.generation);
    let several = report.generations.len() > 1;
    for c in report.children.iter().filter(|c| c.generation == last) {
        let suffix = if several {
            format!(" (gen {})", c.generation)
        } else {
            String::new()
        };
        let name = format!("child {}{suffix}", c.index);
        candidate(
            &mut s,
            &name,
            (c.selection, c.holdout, c.failed.as_deref()),
            &base,
        );
    }
    if let Some(m) = report.generations.last().and_then(|g| g.merged.as_ref()) {
        let list: Vec<String> = m.children.iter().map(u32::to_string).collect();
        let name = format!("merged ({})", list.join(","));
        candidate(
            &mut s,
            &name,
            (m.selection, m.holdout, m.failed.as_deref()),
            &base,
        );
    }
    for e in &report.ensembles {
        row(&mut s, &format!("ensemble {}", e.name), &e.scores, &base);
    }
    s
}

/// The best model and the exported ensemble with their gains, notices, files written.
fn outcome(report: &Report) -> String {
    let mut s = String::new();
    match &report.best {
        Some(b) => {
            let what = match b.index {
                Some(i) => format!("child {i} of generation {}", b.generation),
                None => format!("the merged candidate of generation {}", b.generation),
            };
            let gen_parent = format!("the parent of generation {}", b.generation);
            s.push_str(&format!(
                "Best: {what}: holdout {} ({}).\n",
                pct(&b.scores.holdout).trim(),
                gains(report, b.gain_vs_original, b.gain_vs_generation_parent, &gen_parent)
            ));
        }
        None => s.push_str("Best: no child beat the parent on the selection split; the parent is kept (no best.onnx).\n"),
    }
    let kind = report.outputs.ensemble_kind.as_ref();
    if let Some(e) = report.ensembles.iter().find(|e| Some(&e.name) == kind) {
        let last = report.generations.last().map_or(0, |g| g.generation);
        let gen_parent = format!("the parent of generation {last}");
        s.push_str(&format!(
            "Ensemble exported: {} ({} member(s)): holdout {} ({}).\n",
            e.name,
            e.members.len(),
            pct(&e.scores.holdout).trim(),
            gains(
                report,
                e.gain_vs_original,
                e.gain_vs_generation_parent,
                &gen_parent
            )
        ));
    }
    if report.settings.budget.is_some() || report.settings.patience.is_some() {
        s.push_str(&stopped(report));
    }
    for n in &report.notices {
        s.push_str(&format!("note: {n}\n"));
    }
    for (what, p) in [
        ("best model", &report.outputs.best),
        ("ensemble", &report.outputs.ensemble),
    ] {
        if let Some(p) = p {
            s.push_str(&format!("wrote {what}: {p}\n"));
        }
    }
    s.push_str(&format!("wrote report: {}\n", report.outputs.report));
    s
}

/// Why the run stopped, and the passes it spent.
fn stopped(report: &Report) -> String {
    let g = report.generations.len();
    let why = match report.stopped {
        Stopped::Generations => "every generation asked for ran".to_string(),
        Stopped::Budget => "the next generation would exceed the budget".to_string(),
        Stopped::Patience => format!(
            "{} generation(s) in a row found nothing better",
            report.settings.patience.unwrap_or(0)
        ),
    };
    let budget = report
        .settings
        .budget
        .map_or(String::new(), |b| format!(" of a budget of {b}"));
    format!(
        "Stopped after {g} generation(s): {why}; {} passes over the selection split{budget}, {} over holdout.\n",
        report.passes.selection, report.passes.holdout
    )
}
