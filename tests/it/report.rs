//! `report.html` (written by every `evolve`, and by `score --html`): self-contained, and
//! rendered by headless Chromium without errors. Every fixture's page is checked from
//! evolve.rs (`every_fixture_evolves_end_to_end`), which runs evolve on each.
//!
//! Chromium: `SMD_CHROMIUM` (else `chromium`, else `chromium-browser`). Without one the render
//! is skipped with a loud line, unless `SMD_REQUIRE_CHROMIUM=1` (`.ci/run` sets it once it has
//! installed Debian's `chromium`), which makes its absence a failure. `SMD_SCREENSHOTS=<dir>`
//! keeps each page's screenshot there, to look at.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{assert_one_line_error, json_of, s, smd};

/// The sections every `evolve` page has (more when there is a best model or greedy ensembles).
const EVOLVE_SECTIONS: [&str; 4] = [
    r#"id="headline""#,
    r#"id="generations""#,
    r#"id="children""#,
    r#"id="facts""#,
];

/// Checks the page at `path` (written by `evolve` for `report`): self-contained, its sections
/// present, and rendered by Chromium without console errors. `name` names its screenshot.
pub fn check_evolve_page(path: &Path, report: &Value, name: &str) {
    let html = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_self_contained(&html, name);
    let mut sections = EVOLVE_SECTIONS.to_vec();
    if report["best"].is_object() {
        sections.push(r#"id="tensors""#);
    }
    if report["parent_holdout_classes"].is_object() {
        sections.push(r#"id="classes""#);
    }
    if report["ensembles"]
        .as_array()
        .is_some_and(|e| !e.is_empty())
    {
        sections.push(r#"id="greedy""#);
    }
    for sec in &sections {
        assert!(html.contains(sec), "{name}: no {sec}");
    }
    // The headline says whether a gain is significant, in words.
    assert!(
        html.contains("Nothing significant was found")
            || html.contains("95% interval lies above zero"),
        "{name}"
    );
    // Every interval is written low to high (an MSE change's ends are swapped from the gain's).
    for text in html
        .split("95% interval ")
        .skip(1)
        .filter(|t| !t.starts_with("lies"))
    {
        let ends: Vec<f64> = text
            .split([';', ','])
            .next()
            .unwrap()
            .split(" to ")
            .map(|e| {
                let e = e.replace("MSE ", "").replace(" pp", "").replace('−', "-");
                let e = e.trim().trim_end_matches(')');
                e.parse::<f64>()
                    .unwrap_or_else(|_| panic!("{name}: interval end {e:?}"))
            })
            .collect();
        assert!(
            ends.len() == 2 && ends[0] <= ends[1],
            "{name}: interval {ends:?}"
        );
    }
    render(path, &html, name, &sections);
}

/// No scripts, no links, no external resources: the page opens from disk or a mail.
#[track_caller]
fn assert_self_contained(html: &str, name: &str) {
    assert!(html.starts_with("<!DOCTYPE html>"), "{name}");
    assert!(html.trim_end().ends_with("</html>"), "{name}");
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    for banned in [
        "<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import", "http://",
        "https://",
    ] {
        assert!(!without_ns.contains(banned), "{name}: contains {banned}");
    }
    assert!(html.matches("<svg").count() >= 1, "{name}: no chart");
    assert_eq!(
        html.matches("<svg").count(),
        html.matches("</svg>").count(),
        "{name}"
    );
    // Rust writes non-finite floats as NaN, inf, -inf: none may reach a coordinate or a label.
    for bad in [
        "=\"NaN", "=\"inf", "=\"-inf", "NaN,", ",NaN", "inf,", ",inf", ",-inf", ">NaN<", ">inf<",
    ] {
        assert!(
            !html.contains(bad),
            "{name}: a non-finite number was drawn ({bad})"
        );
    }
}

/// Renders `path` in headless Chromium: the DOM it built must hold every chart and section of
/// `html`, the console must stay silent, and the screenshot must be a PNG.
fn render(path: &Path, html: &str, name: &str, sections: &[&str]) {
    let Some(chromium) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join(format!("{name}.png"));
    let url = format!("file://{}", std::fs::canonicalize(path).unwrap().display());
    let mut child = Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--enable-logging=stderr",
            "--v=0",
            "--window-size=1280,2400",
            &format!("--user-data-dir={}", s(&dir.path().join("profile"))),
            &format!("--screenshot={}", s(&png)),
            "--dump-dom",
            &url,
        ])
        // Files, not pipes: a page larger than a pipe's buffer would block a browser nobody
        // reads from until it exits.
        .stdout(std::fs::File::create(dir.path().join("dom.html")).unwrap())
        .stderr(std::fs::File::create(dir.path().join("stderr.txt")).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("{chromium}: {e}"));
    // A guard against a hung browser only (not a timing assertion).
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(300) {
            let _ = child.kill();
            panic!("{name}: chromium did not finish rendering {url}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = child.wait().unwrap();
    let dom = std::fs::read_to_string(dir.path().join("dom.html")).unwrap();
    let err = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(status.success(), "{name}: chromium failed: {err}");
    let console: Vec<&str> = err.lines().filter(|l| l.contains(":CONSOLE")).collect();
    assert!(console.is_empty(), "{name}: console messages: {console:?}");
    for sec in sections {
        assert!(dom.contains(sec), "{name}: the rendered page has no {sec}");
    }
    assert_eq!(
        dom.matches("<svg").count(),
        html.matches("<svg").count(),
        "{name}: charts lost in parsing"
    );
    let shot = std::fs::read(&png).unwrap_or_else(|e| panic!("{name}: no screenshot: {e}"));
    assert!(
        shot.starts_with(b"\x89PNG\r\n\x1a\n") && shot.len() > 10_000,
        "{name}: screenshot"
    );
    if let Ok(keep) = std::env::var("SMD_SCREENSHOTS") {
        std::fs::create_dir_all(&keep).unwrap();
        std::fs::copy(&png, Path::new(&keep).join(format!("{name}.png"))).unwrap();
    }
}

/// The Chromium to render with, or `None` (after a loud line) when there is none and
/// `SMD_REQUIRE_CHROMIUM` is not 1.
fn chromium() -> Option<String> {
    let candidates: Vec<String> = match std::env::var("SMD_CHROMIUM") {
        Ok(c) => vec![c],
        Err(_) => vec!["chromium".into(), "chromium-browser".into()],
    };
    for c in &candidates {
        let ok = Command::new(c)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Some(c.clone());
        }
    }
    assert!(
        std::env::var("SMD_REQUIRE_CHROMIUM").as_deref() != Ok("1"),
        "SMD_REQUIRE_CHROMIUM=1 but no Chromium runs (tried {candidates:?})"
    );
    eprintln!(
        "SKIPPED: report.html NOT rendered: no Chromium (tried {candidates:?}; install Debian's `chromium` or set SMD_CHROMIUM); SMD_REQUIRE_CHROMIUM=1 makes this a failure"
    );
    None
}

#[test]
fn score_writes_a_page_of_one_model_and_never_over_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("score.html");
    let args = [
        "score",
        "models/digits_cnn.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--split",
        "holdout",
        "--json",
        "--html",
        s(&page),
    ];
    let r = json_of(&smd(&args));
    let html = std::fs::read_to_string(&page).unwrap();
    assert_self_contained(&html, "score");
    // The page shows the numbers the JSON reports.
    let acc = r["metrics"]["balanced_accuracy"].as_f64().unwrap();
    assert!(
        html.contains(&format!("{acc:.6}")),
        "balanced accuracy on the page"
    );
    assert_eq!(
        html.matches("<svg").count(),
        2,
        "per-class bars and the confusion matrix"
    );
    render(&page, &html, "score_digits_cnn", &["Per class"]);
    // Over an input: refused before anything runs, the input untouched.
    let before = std::fs::read("fixtures/digits_val.npz").ok();
    let out = smd(&[
        "score",
        "models/digits_cnn.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--html",
        "fixtures/digits_val.npz",
    ]);
    assert_one_line_error(&out, &["refusing to write", "digits_val.npz"]);
    assert_eq!(std::fs::read("fixtures/digits_val.npz").ok(), before);
}

/// The per-class results in `report.json` are those `score` finds for the same models on the
/// holdout rows (`--export both` writes the best model and the ensemble it describes).
#[test]
fn report_per_class_results_are_those_of_the_models_it_describes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let r = json_of(&smd(&[
        "evolve",
        "models/digits_cnn_undertrained.onnx",
        "--data",
        "fixtures/digits_val.npz",
        "--out",
        s(&out),
        "--json",
    ]));
    let holdout = |model: &PathBuf| -> Value {
        json_of(&smd(&[
            "score",
            s(model),
            "--data",
            "fixtures/digits_val.npz",
            "--split",
            "holdout",
            "--json",
        ]))["per_class"]
            .clone()
    };
    let parent = PathBuf::from("models/digits_cnn_undertrained.onnx");
    assert_eq!(r["parent_holdout_classes"], holdout(&parent));
    let best = r["best"]
        .as_object()
        .expect("the merged candidate improves the undertrained CNN (as in the README)");
    assert_eq!(best["holdout_classes"], holdout(&out.join("best.onnx")));
    let kind = &r["outputs"]["ensemble_kind"];
    let ens = r["ensembles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| &e["name"] == kind)
        .unwrap();
    let scored = holdout(&out.join("ensemble.onnx"));
    assert_eq!(ens["holdout_classes"]["support"], scored["support"]);
    assert_eq!(ens["holdout_classes"]["confusion"], scored["confusion"]);
    // Greedy ensembles carry their path; its last chosen step is the ensemble's own score.
    for e in r["ensembles"].as_array().unwrap() {
        let path = e["path"].as_array();
        assert_eq!(
            path.is_some(),
            e["name"].as_str().unwrap().starts_with("greedy"),
            "{}",
            e["name"]
        );
        if let Some(p) = path {
            let members: f64 = e["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["weight"].as_f64().unwrap())
                .sum();
            let chosen = &p[members as usize - 1];
            assert_eq!(chosen["selection"], e["scores"]["selection"]["accuracy"]);
            assert_eq!(chosen["holdout"], e["scores"]["holdout"]["accuracy"]);
        }
    }
    // The best model's changes per tensor: mutated elements of the tensors it changed.
    let tensors = best["tensors"].as_array().unwrap();
    assert!(!tensors.is_empty());
    for t in tensors {
        let (n, c) = (
            t["elements"].as_u64().unwrap(),
            t["changed"].as_u64().unwrap(),
        );
        assert!(c > 0 && c <= n, "{t}");
        assert!(t["relative_change"].as_f64().unwrap() > 0.0, "{t}");
    }
    check_evolve_page(
        &out.join("report.html"),
        &r,
        "evolve_digits_cnn_undertrained",
    );
}
