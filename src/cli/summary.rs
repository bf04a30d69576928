//! The human summary of an evolution run: a table of the parent, the last generation's
//! children, the merged candidate and the ensembles, then the outcome and the files written.

use smd_onnx::evolve::{Report, Scores, Significance, Stopped};
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

/// A holdout gain against the original model with its 95% interval and McNemar p-value and,
/// when they differ (later generations), against a generation's parent; in accuracy points,
/// or as a change of MSE.
fn gains(
    report: &Report,
    sig: &Significance,
    vs_generation_parent: f64,
    gen_parent: &str,
) -> String {
    let classification = report.parent.holdout.accuracy.is_some();
    let text = |g: f64| {
        if classification {
            format!("{:+.2} points", 100.0 * g)
        } else {
            // The gain is in −MSE: a positive gain lowers the MSE.
            format!("MSE {:+.5}", -g)
        }
    };
    let [lo, hi] = sig.ci95;
    let ci = if classification {
        format!("[{:+.2}, {:+.2}]", 100.0 * lo, 100.0 * hi)
    } else {
        // The interval of the MSE change is that of the −MSE gain, negated.
        format!("[{:+.5}, {:+.5}]", -hi, -lo)
    };
    let mut s = format!("{} vs the original model, 95% CI {ci}", text(sig.gain));
    if let Some(p) = sig.mcnemar_p {
        s.push_str(&format!(", McNemar p = {}", p_value(p)));
    }
    if report.generations.len() > 1 {
        s.push_str(&format!("; {} vs {gen_parent}", text(vs_generation_parent)));
    }
    s
}

/// A p-value with two significant digits (`1` when it is 1).
fn p_value(p: f64) -> String {
    match p {
        p if p >= 0.995 => "1".into(),
        p if p >= 0.1 => format!("{p:.2}"),
        p if p >= 0.01 => format!("{p:.3}"),
        p if p >= 0.001 => format!("{p:.4}"),
        p => format!("{p:.1e}"),
    }
}

/// A plain sentence when a gain is not significant at 5% (the interval includes 0, or
/// McNemar's p ≥ 0.05), or is significantly negative; nothing when it is significant.
fn verdict(sig: &Significance) -> String {
    let [lo, hi] = sig.ci95;
    let p = sig.mcnemar_p;
    let p_ok = p.is_none_or(|p| p < 0.05);
    if lo > 0.0 && p_ok {
        return String::new();
    }
    if hi < 0.0 && p_ok {
        let p = p.map_or(String::new(), |p| format!("p = {}; ", p_value(p)));
        return format!(
            "It is significantly worse than the original on holdout ({p}the 95% interval is below 0): keep the original.\n"
        );
    }
    let mut why = Vec::new();
    if let Some(p) = p.filter(|&p| p >= 0.05) {
        why.push(format!("p = {}", p_value(p)));
    }
    if lo <= 0.0 {
        why.push("the 95% interval includes 0".into());
    }
    format!(
        "The gain is not significant ({}): keep the original, or score on more data.\n",
        why.join("; ")
    )
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
        if let Some(rows) = c.dropped_after {
            s.push_str(&format!(
                "{name:<22} dropped by racing after {rows} of {} selection rows\n",
                r.samples.selection
            ));
            continue;
        }
        candidate(
            &mut s,
            &name,
            (c.selection, c.holdout, c.failed.as_deref()),
            &base,
        );
    }
    let last_gen = report.generations.last();
    for (what, m) in [
        ("merged", last_gen.and_then(|g| g.merged.as_ref())),
        ("merged x2", last_gen.and_then(|g| g.stretched.as_ref())),
    ] {
        if let Some(m) = m {
            let list: Vec<String> = m.children.iter().map(u32::to_string).collect();
            let name = format!("{what} ({})", list.join(","));
            let scores = (m.selection, m.holdout, m.failed.as_deref());
            candidate(&mut s, &name, scores, &base);
        }
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
                None if b.kind == "stretched" => format!(
                    "the merged step taken twice in generation {}",
                    b.generation
                ),
                None => format!("the merged candidate of generation {}", b.generation),
            };
            let gen_parent = format!("the parent of generation {}", b.generation);
            s.push_str(&format!(
                "Best: {what}: holdout {} ({}).\n",
                pct(&b.scores.holdout).trim(),
                gains(
                    report,
                    &b.significance,
                    b.gain_vs_generation_parent,
                    &gen_parent
                )
            ));
            s.push_str(&verdict(&b.significance));
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
                &e.significance,
                e.gain_vs_generation_parent,
                &gen_parent
            )
        ));
        s.push_str(&verdict(&e.significance));
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
    if !report.outputs.html.is_empty() {
        s.push_str(&format!("wrote page: {}\n", report.outputs.html));
    }
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
    let p = report.passes.selection;
    let passes = if p.fract() == 0.0 {
        format!("{p}")
    } else {
        format!("{p:.2}")
    };
    let raced = report.children.iter().filter(|c| c.dropped_after.is_some());
    let raced = match raced.count() {
        0 => String::new(),
        n => format!(" ({n} child(ren) dropped early by racing)"),
    };
    format!(
        "Stopped after {g} generation(s): {why}; {passes} passes over the selection split{budget}{raced}, {} over holdout.\n",
        report.passes.holdout
    )
}
