//! Scaling out: `evolve --shard I/N` (the index also from Slurm, Kubernetes and AWS Batch
//! array variables), `--merge`, local workers (`--workers`, `--device a,b`) and the Slurm
//! driver (`--slurm`, here with a stand-in `sbatch`; `tests/cluster/slurm.sh` runs a real
//! one-node cluster). Every sharded run must end byte for byte where one process ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

use crate::util::{assert_one_line_error, entries, is_temp, ok, repo, s, smd, smd_env};

const MODEL: &str = "models/digits_cnn.onnx";
const DATA: &str = "fixtures/digits_val.npz";

/// `evolve MODEL --data DATA --children K --generations 2 --out OUT EXTRA...`.
fn args<'a>(out: &'a Path, k: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "evolve",
        MODEL,
        "--data",
        DATA,
        "--children",
        k,
        "--generations",
        "2",
        "--out",
        s(out),
    ];
    a.extend_from_slice(extra);
    a
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The report without its timings and command line, with the output folder written `OUT`.
fn report(out: &Path) -> Value {
    let mut r: Value = serde_json::from_slice(&std::fs::read(out.join("report.json")).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", out.display()));
    let o = r.as_object_mut().unwrap();
    o.remove("timings");
    o.remove("command");
    let text = r["outputs"].to_string().replace(s(out), "OUT");
    r["outputs"] = serde_json::from_str(&text).unwrap();
    r
}

/// A single-process run of the same settings, in `dir/single`.
fn single(dir: &Path, k: &str) -> PathBuf {
    let out = dir.join("single");
    ok(smd(&args(&out, k, &[])));
    out
}

/// `out` holds exactly what `single` holds: the same model bytes, the same report.
#[track_caller]
fn assert_same_run(single: &Path, out: &Path) {
    for f in ["best.onnx", "ensemble.onnx"] {
        let a = std::fs::read(single.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        let b = std::fs::read(out.join(f)).unwrap_or_else(|e| panic!("{}/{f}: {e}", out.display()));
        assert!(
            a == b,
            "{f} of {} differs from one process's",
            out.display()
        );
    }
    let (a, b) = (report(single), report(out));
    let differ: Vec<&String> = a
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, v)| b.get(k.as_str()) != Some(v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        a == b,
        "report.json of {} differs in {differ:?}",
        out.display()
    );
    let temps: Vec<String> = entries(out).into_iter().filter(|e| is_temp(e)).collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
}

/// The journal's records of generation `g`'s children.
fn records(out: &Path, g: u32) -> Vec<String> {
    entries(&out.join(".smd-journal"))
        .into_iter()
        .filter(|e| e.starts_with(&format!("g{g}-c")) && e.ends_with(".bin"))
        .collect()
}

#[test]
fn shards_from_every_index_source_merge_to_the_single_process_bytes() {
    let d = tempfile::tempdir().unwrap();
    let one = single(d.path(), "6");
    let out = d.path().join("sharded");
    // Shards 0 and 2 of 3 (from I/N and from Slurm's variables) but not 1.
    let first = ok(smd(&args(&out, "6", &["--shard", "0/3"])));
    assert!(
        stdout(&first).contains("shard 0/3: generation 0: 2 children scored"),
        "{}",
        stdout(&first)
    );
    let slurm = [
        ("SLURM_ARRAY_TASK_ID", "3"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    ok(smd_env(&args(&out, "6", &["--shard", "auto"]), &slurm));
    assert_eq!(
        records(&out, 0),
        ["g0-c0.bin", "g0-c2.bin", "g0-c3.bin", "g0-c5.bin"]
    );
    // The merge names the missing children and the command that scores them; it writes nothing.
    let err = assert_one_line_error(
        &smd(&args(&out, "6", &["--merge"])),
        &[
            "generation 0: 2 of 6 children are not in the journal (children 1, 4)",
            "--shard 1/3`",
        ],
    );
    assert!(err.contains(&format!("--out {}", s(&out))), "{err}");
    assert_eq!(
        entries(&out)
            .iter()
            .filter(|e| !e.starts_with(".smd-journal"))
            .count(),
        0
    );
    // Kubernetes' index with the count given; then the merge scores generation 0's merged
    // candidate and stops at generation 1.
    ok(smd_env(
        &args(&out, "6", &["--shard", "auto/3"]),
        &[("JOB_COMPLETION_INDEX", "1")],
    ));
    assert_one_line_error(
        &smd(&args(&out, "6", &["--merge"])),
        &["generation 1: 6 of 6 children are not in the journal"],
    );
    if !report(&one)["generations"][0]["merged"].is_null() {
        assert!(out.join(".smd-journal/g0-merged.bin").is_file());
    }
    // Generation 1: AWS Batch's index, then the rest.
    ok(smd_env(
        &args(&out, "6", &["--shard", "auto/3"]),
        &[("AWS_BATCH_JOB_ARRAY_INDEX", "2")],
    ));
    for i in ["0/3", "1/3"] {
        ok(smd(&args(&out, "6", &["--shard", i])));
    }
    // A shard with nothing left to score says so.
    let idle = ok(smd(&args(&out, "6", &["--shard", "1/3"])));
    assert!(
        stdout(&idle).contains("nothing to score"),
        "{}",
        stdout(&idle)
    );
    ok(smd(&args(&out, "6", &["--merge"])));
    assert_same_run(&one, &out);
    let markers: Vec<String> = entries(&out.join(".smd-journal"))
        .into_iter()
        .filter(|e| e.starts_with("shard-"))
        .collect();
    assert_eq!(
        markers,
        [
            "shard-0-of-3.json",
            "shard-1-of-3.json",
            "shard-2-of-3.json"
        ]
    );
}

#[test]
fn local_workers_on_a_device_list_match_one_process() {
    let d = tempfile::tempdir().unwrap();
    let one = single(d.path(), "6");
    let workers = d.path().join("workers");
    ok(smd(&args(&workers, "6", &["--workers", "2"])));
    assert_same_run(&one, &workers);
    let listed = d.path().join("listed");
    ok(smd(&args(&listed, "6", &["--device", "cpu,cpu,cpu"])));
    assert_same_run(&one, &listed);
    // Every worker ran as a shard of three.
    for i in 0..3 {
        assert!(
            listed
                .join(format!(".smd-journal/shard-{i}-of-3.json"))
                .is_file()
        );
    }
    // A driver refuses a used folder like any run, and --force starts afresh.
    assert_one_line_error(
        &smd(&args(&listed, "6", &["--workers", "2"])),
        &["is not empty"],
    );
    ok(smd(&args(&listed, "6", &["--workers", "2", "--force"])));
    assert_same_run(&one, &listed);
}

/// A stand-in `sbatch`: runs each task of `--array=0-M` with Slurm's array variables, in
/// turn, and logs its arguments (one line per call) to `$SBATCH_LOG`.
const FAKE_SBATCH: &str = r#"#!/bin/sh
echo "$*" >> "$SBATCH_LOG"
array=""; wrap=""
for a in "$@"; do
  case "$a" in
    --array=*) array="${a#--array=}" ;;
    --wrap=*) wrap="${a#--wrap=}" ;;
  esac
done
last="${array#*-}"
i=0
while [ "$i" -le "$last" ]; do
  SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_MIN=0 SLURM_ARRAY_TASK_COUNT=$((last + 1)) sh -c "$wrap" || exit 1
  i=$((i + 1))
done
"#;

#[test]
fn the_slurm_driver_submits_one_array_per_generation() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let one = single(d.path(), "6");
    let bin = d.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(&sbatch, FAKE_SBATCH).unwrap();
    std::fs::set_permissions(&sbatch, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = d.path().join("sbatch.log");
    let path = format!("{}:{}", s(&bin), std::env::var("PATH").unwrap_or_default());
    let out = d.path().join("slurm");
    let env = [("PATH", path.as_str()), ("SBATCH_LOG", s(&log))];
    ok(smd_env(
        &args(
            &out,
            "6",
            &[
                "--slurm",
                "3",
                "--sbatch-arg=--partition=ci",
                "--sbatch-arg",
                "--time=5",
            ],
        ),
        &env,
    ));
    assert_same_run(&one, &out);
    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    assert_eq!(calls.len(), 2, "one array per generation: {calls:?}");
    for (g, call) in calls.iter().enumerate() {
        for needle in [
            "--array=0-2",
            "--wait",
            &format!("--job-name=smd-onnx-g{g}"),
            "--partition=ci",
            "--time=5",
            "--shard auto",
        ] {
            assert!(call.contains(needle), "{needle} not in {call}");
        }
        assert!(!call.contains("--slurm"), "the tasks are shards: {call}");
    }
    // A failing array stops the driver with the tasks' log folder named.
    std::fs::write(&sbatch, "#!/bin/sh\nexit 3\n").unwrap();
    let again = d.path().join("failing");
    assert_one_line_error(
        &smd_env(&args(&again, "6", &["--slurm", "2"]), &env),
        &[
            "sbatch: generation 0's job array failed",
            ".smd-journal/slurm-g0-%a.log",
        ],
    );
}

fn spawn_shard(out: &Path, k: &str, shard: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_smd-onnx"))
        .args(args(out, k, &["--shard", shard]))
        .current_dir(repo(""))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start smd-onnx")
}

#[test]
fn a_killed_shard_loses_at_most_its_candidate_in_flight_and_its_rerun_finishes() {
    let d = tempfile::tempdir().unwrap();
    let one = single(d.path(), "24");
    let out = d.path().join("killed");
    let mut child = spawn_shard(&out, "24", "0/2");
    // Kill it as soon as its first child's record is there.
    while records(&out, 0).is_empty() && child.try_wait().unwrap().is_none() {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let _ = child.kill();
    child.wait().unwrap();
    let kept = records(&out, 0).len();
    assert!((1..=12).contains(&kept), "{kept} records");
    if kept == 12 {
        eprintln!("note: shard: the shard finished its share before the kill landed");
    }
    // The rerun scores exactly what is missing of its share.
    let rerun = ok(smd(&args(&out, "24", &["--shard", "0/2"])));
    let want = format!("shard 0/2: generation 0: {} children scored", 12 - kept);
    assert!(stdout(&rerun).contains(&want), "{want}: {}", stdout(&rerun));
    for g in 0..2 {
        if g == 1 {
            ok(smd(&args(&out, "24", &["--shard", "0/2"])));
        }
        ok(smd(&args(&out, "24", &["--shard", "1/2"])));
        if g == 0 {
            assert_one_line_error(&smd(&args(&out, "24", &["--merge"])), &["generation 1"]);
        }
    }
    ok(smd(&args(&out, "24", &["--merge"])));
    assert_same_run(&one, &out);
}

#[test]
fn two_shards_with_one_index_leave_a_sound_journal() {
    let d = tempfile::tempdir().unwrap();
    let one = single(d.path(), "24");
    let out = d.path().join("twice");
    for g in 0..2 {
        // Two copies of shard 0 at once (a rescheduled task whose first copy still runs).
        let a = spawn_shard(&out, "24", "0/2");
        let b = spawn_shard(&out, "24", "0/2");
        for c in [a, b] {
            let o = c.wait_with_output().unwrap();
            assert!(o.status.success());
            assert!(
                stdout(&o).contains(&format!("generation {g}")),
                "{}",
                stdout(&o)
            );
        }
        ok(smd(&args(&out, "24", &["--shard", "1/2"])));
        assert_eq!(records(&out, g).len(), 24);
        let merged = smd(&args(&out, "24", &["--merge"]));
        assert_eq!(
            merged.status.success(),
            g == 1,
            "{}",
            String::from_utf8_lossy(&merged.stderr)
        );
    }
    assert_same_run(&one, &out);
}

#[test]
fn shards_of_another_run_and_bad_specs_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("run");
    ok(smd(&args(&out, "6", &["--shard", "0/2"])));
    // Other settings: refused by the journal's key, before anything is scored.
    let before = entries(&out);
    assert_one_line_error(
        &smd(&args(&out, "6", &["--shard", "1/2", "--seed", "7"])),
        &["run.json", "belongs to a different run"],
    );
    assert_one_line_error(
        &smd(&args(&out, "6", &["--merge", "--sigma", "0.2"])),
        &["belongs to a different run"],
    );
    assert_eq!(entries(&out), before, "nothing written");
    // A marker a shard of another run left: the merge refuses the journal.
    let marker = out.join(".smd-journal/shard-1-of-2.json");
    std::fs::write(
        &marker,
        r#"{"run_key":"0000","shard":"1/2","command":null}"#,
    )
    .unwrap();
    // The real shard 1 replaces it; a marker of a shard that never ran stays.
    ok(smd(&args(&out, "6", &["--shard", "1/2"])));
    let foreign = out.join(".smd-journal/shard-3-of-4.json");
    std::fs::write(
        &foreign,
        r#"{"run_key":"0000","shard":"3/4","command":null}"#,
    )
    .unwrap();
    assert_one_line_error(
        &smd(&args(&out, "6", &["--merge"])),
        &[
            "shard-3-of-4.json",
            "shard 3/4 was started for a different run",
        ],
    );
    std::fs::remove_file(&foreign).unwrap();
    let env_less: [(&str, &str); 0] = [];
    for (extra, needles) in [
        (
            vec!["--shard", "2/2"],
            vec!["--shard \"2/2\"", "below the count"],
        ),
        (vec!["--shard", "1"], vec!["--shard \"1\"", "I/N"]),
        (vec!["--shard", "a/2"], vec!["whole numbers"]),
        (
            vec!["--shard", "auto"],
            vec!["no job array index", "JOB_COMPLETION_INDEX"],
        ),
        (
            vec!["--shard", "0/2", "--race"],
            vec!["--race", "cannot be sharded"],
        ),
        (vec!["--workers", "0"], vec!["--workers", "at least 1"]),
        (
            vec!["--workers", "2", "--device", "cpu,cpu,cpu"],
            vec!["lists 3 devices"],
        ),
        (vec!["--device", "cpu,gpu7x"], vec!["--device"]),
        (
            vec!["--device", "cpu,cpu", "--shard", "0/2"],
            vec!["--device cpu,cpu", "one device"],
        ),
    ] {
        let o = smd_env(&args(&out, "6", &extra), &env_less);
        assert_one_line_error(&o, &needles.iter().map(|n| &**n).collect::<Vec<_>>());
    }
}
