//! `smd-onnx evolve` end to end on the fixtures: report, exports, re-scoring, generations.

use std::path::Path;

use serde_json::Value;

use crate::util::{assert_one_line_error, json_of, repo, smd, smd_env};

/// Runs evolve with `extra` arguments into `out` and returns the report it printed.
pub(crate) fn evolve(model: &str, data: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "evolve",
        model,
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let report = json_of(&smd(&args));
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report, on_disk, "--json prints the report.json it wrote");
    report
}

/// `score --split <part> --json` metrics of a model.
fn score(model: &Path, data: &str, part: &str) -> Value {
    json_of(&smd(&[
        "score",
        model.to_str().unwrap(),
        "--data",
        data,
        "--split",
        part,
        "--json",
    ]))["metrics"]
        .clone()
}

#[test]
fn evolve_reports_children_best_ensembles_and_writes_outputs() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = evolve(
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
        &out,
        &["--children", "8"],
    );
    for key in [
        "smd_onnx",
        "runtime",
        "parent",
        "children",
        "best",
        "ensembles",
        "outputs",
        "timings",
        "generations",
    ] {
        assert!(r.get(key).is_some(), "report has {key}");
    }
    assert_eq!(r["runtime"]["device"], "cpu");
    assert_eq!(
        r["samples"]["selection"].as_u64().unwrap() + r["samples"]["holdout"].as_u64().unwrap(),
        600
    );
    let children = r["children"].as_array().unwrap();
    assert_eq!(children.len(), 8);
    for (i, c) in children.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["recipe"]["member"]["child"], i);
        assert_eq!(c["recipe"]["parent"], r["parent_hash"]);
        assert!(c["selection"]["accuracy"].is_f64() && c["holdout"]["nll"].is_f64());
    }
    let names: Vec<&str> = r["ensembles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mean", "mean+parent", "greedy", "greedy+parent"]);
    let mean = &r["ensembles"][0];
    assert_eq!(mean["members"].as_array().unwrap().len(), 8);
    assert!(out.join("ensemble.onnx").exists());
    assert_eq!(
        r["outputs"]["ensemble"],
        out.join("ensemble.onnx").display().to_string()
    );
    // The best child, when there is one, beats the parent on the selection split.
    match r["best"].as_object() {
        Some(best) => {
            assert!(out.join("best.onnx").exists());
            let acc = |v: &Value| v["selection"]["accuracy"].as_f64().unwrap();
            assert!(acc(&best["scores"]) >= acc(&r["parent"]));
        }
        None => assert!(!out.join("best.onnx").exists()),
    }
    // The human summary names the parent, children, ensembles and the verdict.
    let text = summary(
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
        &out,
        &["--children", "8"],
    );
    for needle in [
        "parent",
        "child 7",
        "ensemble greedy",
        "Best:",
        "wrote report",
    ] {
        assert!(text.contains(needle), "{needle:?} in summary:\n{text}");
    }
}

/// The human summary of the run already in `out` (resumed: nothing is scored again).
fn summary(model: &str, data: &str, out: &Path, extra: &[&str]) -> String {
    let mut args = vec![
        "evolve",
        model,
        "--data",
        data,
        "--out",
        out.to_str().unwrap(),
        "--resume",
    ];
    args.extend_from_slice(extra);
    let o = smd(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn rescoring_the_exports_reproduces_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let data = "fixtures/digits_val.npz";
    let r = evolve(
        "models/digits_cnn_undertrained.onnx",
        data,
        &out,
        &["--children", "8", "--seed", "3"],
    );
    let best = r["best"]
        .as_object()
        .expect("a child beats the undertrained parent with seed 3");
    // Exactly the holdout metrics in the report: same rows, same batches, same bytes.
    let hold = score(&out.join("best.onnx"), data, "holdout");
    for m in ["accuracy", "nll", "top5_accuracy"] {
        assert_eq!(hold[m], best["scores"]["holdout"][m], "{m}");
    }
    let sel = score(&out.join("best.onnx"), data, "selection");
    assert_eq!(sel["accuracy"], best["scores"]["selection"]["accuracy"]);
    // The exported ensemble computes the ensemble of predictions the report scored.
    let kind = r["outputs"]["ensemble_kind"].as_str().unwrap();
    let e = r["ensembles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == kind)
        .unwrap();
    let hold = score(&out.join("ensemble.onnx"), data, "holdout");
    assert_eq!(hold["accuracy"], e["scores"]["holdout"]["accuracy"]);
    let (a, b) = (
        hold["nll"].as_f64().unwrap(),
        e["scores"]["holdout"]["nll"].as_f64().unwrap(),
    );
    assert!((a - b).abs() < 1e-5, "ensemble nll {a} vs report {b}");
}

#[test]
fn a_parent_no_child_beats_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    // Noise ten times each tensor's spread destroys every child.
    let r = evolve(
        "models/digits_cnn.onnx",
        "fixtures/digits_val.npz",
        &out,
        &["--children", "4", "--sigma", "10"],
    );
    assert!(r["best"].is_null());
    assert_eq!(r["generations"][0]["kept"], "parent");
    assert!(!out.join("best.onnx").exists());
    let text = summary(
        "models/digits_cnn.onnx",
        "fixtures/digits_val.npz",
        &out,
        &["--children", "4", "--sigma", "10"],
    );
    assert!(text.contains("no child beat the parent"), "{text}");
}

#[test]
fn generations_continue_from_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = evolve(
        "models/mnist_mlp.onnx",
        "fixtures/mnist_val.npz",
        &out,
        &[
            "--children",
            "4",
            "--generations",
            "3",
            "--static",
            "--sigma",
            "0.2",
        ],
    );
    let gens = r["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 3);
    assert_eq!(r["children"].as_array().unwrap().len(), 12);
    // Each generation's parent is the previous one's kept model.
    for w in gens.windows(2) {
        if w[0]["kept"] == "parent" {
            assert_eq!(w[1]["parent_hash"], w[0]["parent_hash"]);
            assert_eq!(w[1]["parent"], w[0]["parent"]);
        } else {
            assert_ne!(w[1]["parent_hash"], w[0]["parent_hash"]);
        }
    }
    if let Some(best) = r["best"].as_object() {
        let changed = gens.iter().filter(|g| g["kept"] != "parent").count();
        assert_eq!(best["lineage"].as_array().unwrap().len(), changed);
        let hold = score(&out.join("best.onnx"), "fixtures/mnist_val.npz", "holdout");
        assert_eq!(hold["accuracy"], best["scores"]["holdout"]["accuracy"]);
        assert_eq!(hold["nll"], best["scores"]["holdout"]["nll"]);
    }
    assert_eq!(r["settings"]["subspaces"], "static");
    // A later generation's ensemble (its parent is a kept candidate) passes the checker too.
    crate::ensemble::check_evolved_ensembles(&[("mnist_mlp", &out.join("ensemble.onnx"))]);
}

#[test]
fn every_fixture_evolves_end_to_end() {
    let cases = crate::ensemble::FIXTURES;
    let dir = tempfile::tempdir().unwrap();
    let mut ensembles = Vec::new();
    for (model, data) in cases {
        let out = dir.path().join(model);
        let (m, d) = (
            format!("models/{model}.onnx"),
            format!("fixtures/{data}.npz"),
        );
        let r = evolve(&m, &d, &out, &["--children", "4", "--export", "both"]);
        assert_eq!(r["children"].as_array().unwrap().len(), 4, "{model}");
        assert!(
            r["children"]
                .as_array()
                .unwrap()
                .iter()
                .all(|c| c["failed"].is_null()),
            "{model}: {r}"
        );
        crate::report::check_evolve_page(&out.join("report.html"), &r, model);
        let ens = out.join("ensemble.onnx");
        assert!(ens.exists(), "{model}");
        ensembles.push((model, ens.clone()));
        // The ensemble is a drop-in: it scores on the parent's data like the parent, exactly
        // as the report measured it from the members' predictions.
        let held = score(&ens, &d, "holdout");
        let kind = r["outputs"]["ensemble_kind"].clone();
        let e = r["ensembles"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == kind)
            .unwrap();
        let want = &e["scores"]["holdout"];
        assert_eq!(held["accuracy"], want["accuracy"], "{model}");
        for m in ["nll", "mse"] {
            if let Some(w) = want[m].as_f64() {
                let g = held[m].as_f64().unwrap();
                assert!(
                    (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                    "{model} {m}: {g} vs {w}"
                );
            }
        }
        if let Some(best) = r["best"].as_object() {
            let hold = score(&out.join("best.onnx"), &d, "holdout");
            for m in ["accuracy", "nll", "mse"] {
                assert_eq!(hold.get(m), best["scores"]["holdout"].get(m), "{model} {m}");
            }
        }
    }
    // Every exported ensemble passes the ONNX checker (one Python process for all of them).
    let ensembles: Vec<(&str, &Path)> = ensembles.iter().map(|(m, p)| (*m, p.as_path())).collect();
    crate::ensemble::check_evolved_ensembles(&ensembles);
}

#[test]
fn bad_runs_are_one_line_errors_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let o = out.to_str().unwrap();
    let base = [
        "evolve",
        "models/digits_cnn.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--out",
        o,
    ];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        smd(&a)
    };
    assert_one_line_error(&with(&["--sigma", "0"]), &["--sigma"]);
    assert_one_line_error(&with(&["--sigma", "NaN"]), &["--sigma"]);
    assert_one_line_error(&with(&["--children", "0"]), &["--children"]);
    assert_one_line_error(&with(&["--holdout", "1"]), &["--holdout"]);
    assert_one_line_error(&with(&["--generations", "0"]), &["--generations"]);
    assert_one_line_error(
        &with(&["--include", "no-such-tensor"]),
        &["models/digits_cnn.onnx", "no mutable tensors"],
    );
    assert!(
        !out.exists() || std::fs::read_dir(&out).unwrap().next().is_none(),
        "nothing written"
    );
    // A finished run's folder is not reused without --force or --resume.
    json_of(&with(&["--children", "2", "--json"]));
    assert_one_line_error(&with(&["--children", "2"]), &[o, "not empty"]);
    json_of(&with(&["--children", "2", "--force", "--json"]));
}

#[test]
fn pipelined_session_building_changes_nothing() {
    // GPU devices build the next child's session while the current one runs; force it on the
    // CPU and compare with the sequential run: same report (timings aside), same files.
    let dir = tempfile::tempdir().unwrap();
    for model in ["digits_cnn_undertrained", "mnist_mlp"] {
        let data = if model == "mnist_mlp" {
            "fixtures/mnist_val.npz"
        } else {
            "fixtures/digits_val.npz"
        };
        let run = |pipeline: &str| -> (Value, Vec<u8>, Vec<u8>) {
            let out = dir.path().join(format!("{model}-{pipeline}"));
            let m = format!("models/{model}.onnx");
            let args = [
                "evolve",
                &m,
                "--data",
                data,
                "--children",
                "6",
                "--generations",
                "2",
                "--out",
                out.to_str().unwrap(),
                "--json",
            ];
            let mut r = json_of(&smd_env(&args, &[("SMD_PIPELINE", pipeline)]));
            r.as_object_mut().unwrap().remove("timings");
            r.as_object_mut().unwrap().remove("outputs");
            let read = |f: &str| std::fs::read(out.join(f)).unwrap_or_default();
            (r, read("best.onnx"), read("ensemble.onnx"))
        };
        let (a, b) = (run("0"), run("1"));
        assert_eq!(a.0, b.0, "{model}: reports differ");
        assert!(a.1 == b.1 && a.2 == b.2, "{model}: outputs differ");
    }
}

/// The merged candidate's holdout rows are scored only when it wins on the selection rows
/// (it is then the next parent and the best model); otherwise the report says so.
#[test]
fn a_merged_candidate_is_scored_on_holdout_only_when_it_wins() {
    let mut seen = (false, false);
    for seed in ["0", "1"] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("run");
        let r = evolve(
            "models/digits_cnn_undertrained.onnx",
            "fixtures/digits_val.npz",
            &out,
            &["--seed", seed],
        );
        let g = &r["generations"][0];
        let merged = &g["merged"];
        assert!(merged["selection"]["accuracy"].is_f64(), "seed {seed}");
        if g["kept"] == "merged" {
            seen.0 = true;
            assert_eq!(merged["holdout"], r["best"]["scores"]["holdout"]);
            assert!(r["best"]["index"].is_null());
        } else {
            seen.1 = true;
            assert!(merged["holdout"].is_null(), "seed {seed}: {merged}");
        }
    }
    assert_eq!(seen, (true, true), "seeds 0 and 1 cover both cases");
}

/// Records events; stops after `stop_after` candidates.
struct Recorder {
    events: Vec<String>,
    stop_after: Option<usize>,
    candidates: usize,
}

impl smd_onnx::evolve::Observer for Recorder {
    fn event(&mut self, e: &smd_onnx::evolve::Event<'_>) -> smd_onnx::evolve::Flow {
        use smd_onnx::evolve::{Event, Flow};
        match e {
            Event::Phase { name, total } => self.events.push(format!("phase {name} {total}")),
            Event::Candidate {
                id,
                selection,
                journaled,
                ..
            } => {
                assert!(selection.is_some(), "{id}");
                self.events.push(format!("candidate {id} {journaled}"));
                self.candidates += 1;
                if self.stop_after == Some(self.candidates) {
                    return Flow::Stop;
                }
            }
            Event::PhaseDone => self.events.push("done".into()),
            Event::Generation(g) => self
                .events
                .push(format!("generation {} {}", g.generation, g.kept)),
            _ => {}
        }
        Flow::Continue
    }
}

#[test]
fn the_library_runs_evolve_in_phases_and_an_observer_sees_and_stops_it() {
    use smd_onnx::evolve::{Evolution, EvolveConfig, EvolveError};
    let dir = tempfile::tempdir().unwrap();
    let cfg = || {
        let mut c = EvolveConfig::new(
            repo("models/digits_cnn_undertrained.onnx"),
            repo("fixtures/digits_val.npz"),
            dir.path().join("run"),
        );
        c.mutation.children = 4;
        c.generations = 2;
        c
    };
    // Stopped after the parent and two children: the journal keeps them.
    let mut stop = Recorder {
        events: vec![],
        stop_after: Some(3),
        candidates: 0,
    };
    let err = Evolution::new(cfg(), &mut stop)
        .and_then(|mut run| run.run_generation().map(|_| ()))
        .unwrap_err();
    assert!(
        matches!(err, smd_onnx::Error::Evolve(EvolveError::Cancelled)),
        "{err}"
    );
    assert_eq!(
        stop.events,
        [
            "candidate parent false",
            "phase generation 1/2: children 4",
            "candidate g0-c0 false",
            "candidate g0-c1 false"
        ]
    );
    // Resumed phase by phase: the journal's candidates come back as journaled events.
    let mut c = cfg();
    c.resume = true;
    let mut rec = Recorder {
        events: vec![],
        stop_after: None,
        candidates: 0,
    };
    let mut run = Evolution::new(c, &mut rec).unwrap();
    assert_eq!(run.generations_left(), 2);
    let kept = run.run_generation().unwrap().kept.clone();
    assert_eq!(run.generations_left(), 1);
    run.run_generation().unwrap();
    assert_eq!(run.generations_left(), 0);
    assert!(run.run_generation().is_err(), "no third generation");
    let names: Vec<String> = run
        .build_ensembles()
        .unwrap()
        .iter()
        .map(|e| e.name.clone())
        .collect();
    assert_eq!(names, ["mean", "mean+parent", "greedy", "greedy+parent"]);
    let report = run.finish().unwrap();
    assert_eq!(report.generations[0].kept, kept);
    assert_eq!(rec.events[0], "candidate parent true");
    assert_eq!(rec.events[2], "candidate g0-c0 true");
    assert_eq!(rec.events[3], "candidate g0-c1 true");
    assert_eq!(rec.events[4], "candidate g0-c2 false");
    assert!(rec.events.contains(&format!("generation 0 {kept}")));
    assert_eq!(
        rec.events.iter().filter(|e| e.starts_with("phase")).count(),
        2
    );
    // The same outputs as an uninterrupted run of the CLI.
    let cli = dir.path().join("cli");
    evolve(
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
        &cli,
        &["--children", "4", "--generations", "2"],
    );
    for f in ["best.onnx", "ensemble.onnx"] {
        let (a, b) = (dir.path().join("run").join(f), cli.join(f));
        assert_eq!(a.exists(), b.exists(), "{f}");
        if a.exists() {
            assert_eq!(std::fs::read(a).unwrap(), std::fs::read(b).unwrap(), "{f}");
        }
    }
}

/// Passes the report's candidates account for: one over the selection rows per candidate
/// scored, one over the holdout rows per candidate whose holdout metrics exist.
fn passes_of(r: &Value) -> (u64, u64) {
    let mut sel = 1; // the parent
    let mut hold = 1;
    for c in r["children"].as_array().unwrap() {
        sel += 1;
        hold += u64::from(!c["holdout"].is_null() || c["failed"].is_string());
    }
    for g in r["generations"].as_array().unwrap() {
        for m in [&g["merged"], &g["stretched"]]
            .into_iter()
            .filter_map(Value::as_object)
        {
            sel += 1;
            hold += u64::from(!m["holdout"].is_null());
        }
    }
    (sel, hold)
}

#[test]
fn budgets_count_selection_passes_and_generations_auto_stops_in_time() {
    let dir = tempfile::tempdir().unwrap();
    let (m, d) = ("models/mnist_mlp.onnx", "fixtures/mnist_val.npz");
    let r = evolve(
        m,
        d,
        &dir.path().join("auto"),
        &["--generations", "auto", "--budget", "120"],
    );
    let used = r["passes"]["selection"].as_u64().unwrap();
    assert!(used <= 120, "{used}");
    // The next generation's 16 children would not have fitted.
    assert!(used + 16 > 120, "{used}");
    assert_eq!(r["stopped"], "budget");
    assert!(r["generations"].as_array().unwrap().len() >= 2);
    assert_eq!(
        (used, r["passes"]["holdout"].as_u64().unwrap()),
        passes_of(&r),
        "{}",
        r["passes"]
    );
    assert_eq!(r["settings"]["budget"], 120);
    assert_eq!(r["settings"]["patience"], 2);

    // σ so large that nothing beats the parent: patience stops the run.
    let r = evolve(
        m,
        d,
        &dir.path().join("patience"),
        &[
            "--generations",
            "10",
            "--patience",
            "2",
            "--sigma",
            "20",
            "--children",
            "4",
        ],
    );
    let gens = r["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2, "{}", r["stopped"]);
    assert!(gens.iter().all(|g| g["kept"] == "parent"));
    assert_eq!(r["stopped"], "patience");
    assert!(r["best"].is_null());
    assert_eq!(
        (
            r["passes"]["selection"].as_u64().unwrap(),
            r["passes"]["holdout"].as_u64().unwrap()
        ),
        passes_of(&r)
    );

    // Without options a run reports what it spent and that every generation ran.
    let r = evolve(m, d, &dir.path().join("plain"), &["--children", "4"]);
    assert_eq!(r["stopped"], "generations");
    assert_eq!(r["passes"]["selection"].as_u64().unwrap(), passes_of(&r).0);

    let out = dir.path().join("bad");
    let o = out.to_str().unwrap();
    for (args, needle) in [
        (vec!["--budget", "16"], "--budget"),
        (vec!["--generations", "some"], "--generations"),
        (vec!["--patience", "0"], "--patience"),
    ] {
        let mut a = vec!["evolve", m, "--data", d, "--out", o];
        a.extend(args);
        assert_one_line_error(&smd(&a), &[needle]);
    }
}

/// `replay MODEL --from FROM` rebuilds `OUT/best.onnx` byte for byte.
#[track_caller]
fn assert_replays_best(model: &str, from: &Path, out: &Path) {
    let rebuilt = out.join("rebuilt.onnx");
    let o = smd(&[
        "replay",
        model,
        "--from",
        from.to_str().unwrap(),
        "--out",
        rebuilt.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read(rebuilt).unwrap(),
        std::fs::read(out.join("best.onnx")).unwrap()
    );
}

#[test]
fn sigma_auto_follows_the_success_rule_and_every_generation_replays() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auto");
    let r = evolve(
        "models/mnist_mlp.onnx",
        "fixtures/mnist_val.npz",
        &out,
        &["--sigma", "auto", "--generations", "5", "--children", "8"],
    );
    assert_eq!(r["settings"]["adapt_sigma"], true);
    let gens = r["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 5);
    assert_eq!(gens[0]["sigma"], 0.1);
    for w in gens.windows(2) {
        let g = w[0]["generation"].as_u64().unwrap();
        // Children of generation g that beat its parent on the selection split.
        let parent = &w[0]["parent"]["selection"];
        let winners = r["children"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["generation"].as_u64() == Some(g))
            .filter(|c| {
                let (a, pa) = (
                    c["selection"]["accuracy"].as_f64(),
                    parent["accuracy"].as_f64(),
                );
                let (n, pn) = (c["selection"]["nll"].as_f64(), parent["nll"].as_f64());
                a > pa || (a == pa && n < pn)
            })
            .count();
        let (s0, s1) = (
            w[0]["sigma"].as_f64().unwrap(),
            w[1]["sigma"].as_f64().unwrap(),
        );
        let want = if winners as f64 > 8.0 / 5.0 {
            s0 * 1.5
        } else {
            s0 / 1.5
        };
        assert!(
            (s1 - want).abs() < 1e-12,
            "generation {g}: {winners} winners, {s0} → {s1}"
        );
        // Every child's recipe records its generation's σ.
        for c in r["children"].as_array().unwrap() {
            if c["generation"].as_u64() == Some(g) {
                assert_eq!(c["recipe"]["sigma"].as_f64(), Some(s0));
            }
        }
    }
    assert!(
        gens.iter().any(|g| g["sigma"] != gens[0]["sigma"]),
        "σ adapted at least once"
    );
    // The best model is rebuilt from the report byte for byte, σ changes included.
    assert!(
        r["best"]["lineage"].as_array().unwrap().len() >= 2,
        "{}",
        r["best"]
    );
    assert_replays_best("models/mnist_mlp.onnx", &out.join("report.json"), &out);
    assert_one_line_error(
        &smd(&[
            "mutate",
            "models/mnist_mlp.onnx",
            "--sigma",
            "auto",
            "--out",
            dir.path().join("m").to_str().unwrap(),
        ]),
        &["--sigma auto"],
    );
}

#[test]
fn the_line_search_tries_the_winning_merged_step_twice_and_replays() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ls");
    let (m, d) = (
        "models/digits_cnn_undertrained.onnx",
        "fixtures/digits_val.npz",
    );
    let r = evolve(m, d, &out, &["--line-search", "--generations", "2"]);
    assert_eq!(r["settings"]["line_search"], true);
    let g0 = &r["generations"][0];
    // This seed's merged candidate wins (its holdout rows were scored), so its doubled step is
    // tried, and wins too.
    assert!(g0["merged"]["holdout"].is_object(), "{g0}");
    let s = &g0["stretched"];
    assert_eq!(s["children"], g0["merged"]["children"]);
    assert_eq!(s["recipe"]["member"]["stretched"]["times"], 2);
    assert_eq!(g0["kept"], "stretched", "{g0}");
    assert_eq!(
        (
            r["passes"]["selection"].as_u64().unwrap(),
            r["passes"]["holdout"].as_u64().unwrap()
        ),
        passes_of(&r)
    );
    // The stretched model is the next parent: replay rebuilds the best model through it.
    let lineage = r["best"]["lineage"].as_array().unwrap();
    assert!(
        lineage[0]["member"]["stretched"].is_object(),
        "{}",
        r["best"]
    );
    assert_replays_best(m, &out.join("best.onnx"), &out);
    // Without the flag nothing is stretched and the report has no such entries.
    let plain = evolve(m, d, &dir.path().join("plain"), &["--generations", "2"]);
    assert!(
        plain["generations"]
            .as_array()
            .unwrap()
            .iter()
            .all(|g| g.get("stretched").is_none())
    );
    assert_eq!(plain["generations"][0]["kept"], "merged");
}

#[test]
fn classic_ml_models_evolve_in_their_attributes_and_replay() {
    use smd_onnx::onnx::{Location, Model};
    let dir = tempfile::tempdir().unwrap();
    for (stem, sigma) in [("digits_skl_logreg", "0.1"), ("digits_skl_forest", "0.5")] {
        let model = format!("models/{stem}.onnx");
        let out = dir.path().join(stem);
        let r = evolve(
            &model,
            "fixtures/digits_flat_val.npz",
            &out,
            &["--children", "8", "--sigma", sigma, "--generations", "2"],
        );
        assert!(r["best"].is_object(), "{stem}: no child beat the parent");
        // best.onnx is the parent with only the weight attributes' payload bytes changed
        // (then its lineage appended as metadata).
        let parent = std::fs::read(repo(&model)).unwrap();
        let best = std::fs::read(out.join("best.onnx")).unwrap();
        let m = Model::open(repo(&model)).unwrap();
        let mutable = smd_onnx::mutate::Selection::default().mutable_tensors(&m);
        assert!(
            mutable
                .iter()
                .all(|&i| m.tensors()[i].location == Location::MlAttribute)
        );
        let weights: Vec<std::ops::Range<u64>> = mutable
            .iter()
            .flat_map(|&i| m.tensors()[i].payload_ranges())
            .collect();
        let changed: Vec<usize> = (0..parent.len())
            .filter(|&i| parent[i] != best[i])
            .collect();
        assert!(!changed.is_empty(), "{stem}");
        for i in changed {
            assert!(
                weights.iter().any(|r| r.contains(&(i as u64))),
                "{stem}: byte {i} changed outside the weight attributes"
            );
        }
        assert_replays_best(&model, &out.join("report.json"), &out);
    }
}
