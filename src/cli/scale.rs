//! `evolve`'s scale-out options: `--shard` (one share of a generation's children, the index
//! possibly from a scheduler's environment), `--merge`, and the drivers that run shards per
//! generation and merge: `--workers`/`--device a,b` (processes on this machine) and `--slurm`
//! (one job array per generation).

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::common::shell_quote;
use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use smd_onnx::evolve::shard::{self, Marker};
use smd_onnx::evolve::{
    EvolveConfig, EvolveError, Observer, Report, Role, Shard, ShardOutcome, evolve, run_shard,
};

/// Scale-out options of `smd-onnx evolve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleArgs {
    /// Score only shard I of N (I from 0) of the first generation whose children are not all
    /// in the output folder's journal, then stop; `--merge` finishes the run. `auto` takes I
    /// (and N) from a job array's environment: SLURM_ARRAY_TASK_ID and
    /// SLURM_ARRAY_TASK_COUNT, JOB_COMPLETION_INDEX (Kubernetes) or AWS_BATCH_JOB_ARRAY_INDEX
    /// (`auto/N` where the environment gives no count).
    #[arg(long, value_name = "I/N|auto[/N]", conflicts_with_all = ["merge", "workers", "slurm"])]
    pub shard: Option<String>,
    /// Finish a sharded run from its journal: refused while children are missing (the error
    /// lists them and the shard commands that score them); else selects, builds ensembles,
    /// exports and reports exactly as one process would.
    #[arg(long, conflicts_with_all = ["workers", "slurm"])]
    pub merge: bool,
    /// Score each generation with N worker processes on this machine, one per device of a
    /// `--device` list (e.g. `cuda:0,cuda:1`); CPU workers split the cores.
    #[arg(long, value_name = "N", conflicts_with = "slurm")]
    pub workers: Option<u32>,
    /// Run on Slurm: per generation, one job array of N shards (`sbatch --array=0-(N-1)
    /// --wait`) running this command, then the merge step here, until the run is done.
    #[arg(long, value_name = "N")]
    pub slurm: Option<u32>,
    /// An sbatch option for --slurm (repeatable), e.g. `--sbatch-arg=--partition=gpu`.
    #[arg(
        long,
        value_name = "OPTION",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub sbatch_arg: Vec<String>,
}

/// The scheduler variables an array index may come from, in the order they are read.
const INDEX_VARS: [&str; 3] = [
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

/// The shard `spec` names: `I/N`, or `auto`/`auto/N` from the environment `env` reads.
pub fn resolve_shard(spec: &str, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Shard> {
    let Some(rest) = spec.strip_prefix("auto") else {
        return Ok(spec.parse::<Shard>()?);
    };
    let number = |var: &str, text: &str| -> anyhow::Result<u32> {
        text.trim()
            .parse::<u32>()
            .with_context(|| format!("--shard {spec}: {var}={text:?} is not a whole number"))
    };
    let found = INDEX_VARS
        .iter()
        .find_map(|&v| env(v).map(|value| (v, value)));
    let Some((var, value)) = found else {
        bail!(
            "--shard {spec}: no job array index in the environment ({})",
            INDEX_VARS.join(", ")
        );
    };
    let mut index = number(var, &value)?;
    if var == "SLURM_ARRAY_TASK_ID"
        && let Some(min) = env("SLURM_ARRAY_TASK_MIN")
    {
        // `--array=1-4` counts from 1.
        let min = number("SLURM_ARRAY_TASK_MIN", &min)?;
        index = index.checked_sub(min).with_context(|| {
            format!(
                "--shard {spec}: SLURM_ARRAY_TASK_ID {index} is below SLURM_ARRAY_TASK_MIN {min}"
            )
        })?;
    }
    let count = match rest.strip_prefix('/') {
        Some(n) => n.parse::<Shard>().map_or_else(
            |_| number("the count", n),
            // `auto/2/4` is no count.
            |_| bail!("--shard {spec}: expected auto or auto/N"),
        )?,
        None if rest.is_empty() => match (var, env("SLURM_ARRAY_TASK_COUNT")) {
            ("SLURM_ARRAY_TASK_ID", Some(n)) => number("SLURM_ARRAY_TASK_COUNT", &n)?,
            _ => bail!(
                "--shard {spec}: {var} gives the index but no count: use --shard auto/N with the array's size"
            ),
        },
        None => bail!("--shard {spec}: expected auto or auto/N"),
    };
    if count == 0 {
        bail!("--shard {spec}: the count must be at least 1");
    }
    Shard::new(index, count).with_context(|| format!("from {var}"))
}

/// The `--device` list: one device, or one per worker (`cuda:0,cuda:1`).
pub fn devices(spec: &str) -> Vec<&str> {
    spec.split(',').map(str::trim).collect()
}

/// Runs the scale-out role `args` asks for, if any: `Ok(None)` when the run is a plain one
/// (the caller runs it), else the report (merge, drivers) or, for a shard, no report after
/// printing its outcome.
pub fn run(
    args: &ScaleArgs,
    device_list: &[&str],
    mut cfg: EvolveConfig,
    observer: &mut dyn Observer,
) -> anyhow::Result<Option<Option<Report>>> {
    if device_list.len() > 1 && (args.shard.is_some() || args.merge) {
        bail!(
            "--device {}: a device list runs local workers; a shard or the merge step runs on one device",
            device_list.join(",")
        );
    }
    if let Some(spec) = &args.shard {
        let shard = resolve_shard(spec, &|v| std::env::var(v).ok())?;
        let out = cfg.out.clone();
        let outcome = run_shard(cfg, shard, observer)?;
        println!("{}", describe(shard, &outcome, &out));
        return Ok(Some(None));
    }
    if args.merge {
        cfg.role = Role::Merge;
        let out = cfg.out.clone();
        return match evolve(cfg, observer) {
            Ok(report) => Ok(Some(Some(report))),
            Err(smd_onnx::Error::Evolve(e @ EvolveError::Incomplete { .. })) => {
                let hint = rerun_hint(&e, &shard::markers(&out));
                Err(anyhow::anyhow!("{e}: {hint}"))
            }
            Err(e) => Err(e.into()),
        };
    }
    let launch = match (args.workers, args.slurm) {
        (_, Some(n)) => Launch::Slurm {
            n,
            extra: args.sbatch_arg.clone(),
        },
        (Some(n), None) => Launch::Local {
            n,
            devices: device_list.iter().map(|d| d.to_string()).collect(),
        },
        (None, None) if device_list.len() > 1 => Launch::Local {
            n: device_list.len() as u32,
            devices: device_list.iter().map(|d| d.to_string()).collect(),
        },
        (None, None) => return Ok(None),
    };
    launch.check()?;
    drive(cfg, &launch, observer).map(|r| Some(Some(r)))
}

/// A shard's one-line outcome.
fn describe(shard: Shard, outcome: &ShardOutcome, out: &Path) -> String {
    match outcome {
        ShardOutcome::Scored {
            generation,
            scored,
            missing,
        } => {
            let rest = if missing.is_empty() {
                format!(
                    "the generation is complete: merge with `smd-onnx evolve … --out {} --merge`",
                    out.display()
                )
            } else {
                format!("{} children of other shards still missing", missing.len())
            };
            format!("shard {shard}: generation {generation}: {scored} children scored; {rest}")
        }
        ShardOutcome::Complete => format!(
            "shard {shard}: nothing to score (every generation's children are in the journal); merge with --merge"
        ),
    }
}

/// The commands that score an incomplete generation's missing children, from the markers of
/// the shards that ran (their command lines), or the rule when none did.
fn rerun_hint(e: &EvolveError, markers: &[Marker]) -> String {
    let EvolveError::Incomplete { missing, .. } = e else {
        return String::new();
    };
    let Some(last) = markers.iter().max_by_key(|m| m.shard.count) else {
        return "no shard has run here: score every generation with `smd-onnx evolve … --shard I/N` for I = 0..N-1 (child i belongs to shard i mod N)".into();
    };
    let count = last.shard.count;
    let commands: Vec<String> = shard::owners(missing, count)
        .into_iter()
        .map(|s| {
            let own = markers.iter().find(|m| m.shard == s).unwrap_or(last);
            match &own.command {
                Some(c) => format!("`{}`", with_shard(c, s)),
                None => format!("shard {s}"),
            }
        })
        .collect();
    format!("rerun {}", commands.join(" and "))
}

/// `command` with its `--shard` value replaced by `s` (appended when it has none).
fn with_shard(command: &str, s: Shard) -> String {
    let mut words: Vec<String> = command.split(' ').map(String::from).collect();
    if let Some(i) = words.iter().position(|w| w == "--shard")
        && i + 1 < words.len()
    {
        words[i + 1] = s.to_string();
    } else if let Some(w) = words.iter_mut().find(|w| w.starts_with("--shard=")) {
        *w = format!("--shard={s}");
    } else {
        words.push(format!("--shard {s}"));
    }
    words.join(" ")
}

/// How a driver scores a generation's shards.
enum Launch {
    /// `n` worker processes here, on `devices` (one each, or all on the one given).
    Local { n: u32, devices: Vec<String> },
    /// One Slurm job array of `n` tasks; `extra` options for sbatch.
    Slurm { n: u32, extra: Vec<String> },
}

impl Launch {
    fn check(&self) -> anyhow::Result<()> {
        match self {
            Launch::Local { n: 0, .. } => bail!("--workers: must be at least 1"),
            Launch::Slurm { n: 0, .. } => bail!("--slurm: must be at least 1"),
            Launch::Local { n, devices } if devices.len() > 1 && devices.len() != *n as usize => {
                bail!(
                    "--workers {n}: --device lists {} devices; give one per worker, or one for all",
                    devices.len()
                )
            }
            Launch::Local { devices, .. } => {
                for d in devices {
                    d.parse::<smd_onnx::runtime::Device>()?;
                }
                Ok(())
            }
            Launch::Slurm { .. } => Ok(()),
        }
    }

    /// Scores the shards of generation `g` (the workers skip what the journal holds).
    fn run(&self, g: u32, cfg: &EvolveConfig, children: u32) -> anyhow::Result<()> {
        let base = worker_args(std::env::args_os().skip(1).collect());
        match self {
            Launch::Local { n, devices } => run_local(*n, devices, &base, cfg, g, children),
            Launch::Slurm { n, extra } => run_slurm(*n, extra, &base, &cfg.out, g),
        }
    }
}

/// Runs the merge step until the run is done, scoring each incomplete generation's shards
/// with `launch` in between.
fn drive(
    cfg: EvolveConfig,
    launch: &Launch,
    observer: &mut dyn Observer,
) -> anyhow::Result<Report> {
    if cfg.resume {
        // Continue: the journal is kept.
    } else if cfg.force {
        shard::clear_journal(&cfg.out)?;
    } else if std::fs::read_dir(&cfg.out).is_ok_and(|mut d| d.next().is_some()) {
        bail!(
            "{}: is not empty (use --force to replace its outputs, or --resume to continue a run)",
            cfg.out.display()
        );
    }
    let mut last: Option<(u32, Vec<u32>)> = None;
    loop {
        let merge = EvolveConfig {
            role: Role::Merge,
            ..cfg.clone()
        };
        match evolve(merge, observer) {
            Ok(report) => return Ok(report),
            Err(smd_onnx::Error::Evolve(EvolveError::Incomplete {
                generation,
                children,
                missing,
            })) => {
                let now = (generation, missing);
                if last.as_ref() == Some(&now) {
                    bail!(
                        "generation {generation}: children {} are still missing after their shards ran",
                        now.1
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                launch.run(generation, &cfg, children)?;
                last = Some(now);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// This process's arguments for a worker: without the driver's own options (`--workers`,
/// `--slurm`, `--sbatch-arg`, `--device`, `--force`, `--resume`, `--json`), which the
/// launcher replaces.
fn worker_args(args: Vec<OsString>) -> Vec<OsString> {
    const WITH_VALUE: [&str; 4] = ["--workers", "--slurm", "--sbatch-arg", "--device"];
    const FLAGS: [&str; 3] = ["--force", "--resume", "--json"];
    let mut out = Vec::with_capacity(args.len());
    let mut skip = false;
    for a in args {
        if std::mem::take(&mut skip) {
            continue;
        }
        let text = a.to_string_lossy();
        if WITH_VALUE.contains(&text.as_ref()) {
            skip = true;
        } else if !FLAGS.contains(&text.as_ref())
            && !WITH_VALUE
                .iter()
                .any(|o| text.starts_with(&format!("{o}=")))
        {
            out.push(a);
        }
    }
    out
}

/// Runs `n` local workers on generation `g` and shows the generation's progress from the
/// journal; fails when a worker fails.
fn run_local(
    n: u32,
    devices: &[String],
    base: &[OsString],
    cfg: &EvolveConfig,
    g: u32,
    children: u32,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("the smd-onnx executable")?;
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    let mut running = Vec::with_capacity(n as usize);
    for i in 0..n {
        let device = devices
            .get(i as usize)
            .or(devices.first())
            .map_or("cpu", String::as_str);
        let mut cmd = Command::new(&exe);
        cmd.args(base)
            .args(["--device", device, "--shard", &format!("{i}/{n}")])
            .env("SMD_PROGRESS", "0")
            .stdout(Stdio::null());
        if device == "cpu" && cfg.runtime.intra_threads.is_none() {
            // CPU workers split the cores rather than each taking them all.
            cmd.args(["--threads", &(cores / n as usize).max(1).to_string()]);
        }
        running.push(cmd.spawn().context("starting a worker")?);
    }
    let bar = progress(g, children);
    let mut failed = Vec::new();
    for (i, mut child) in running.into_iter().enumerate() {
        let status = loop {
            if let Some(s) = child.try_wait().context("waiting for a worker")? {
                break s;
            }
            if let Some(b) = &bar {
                b.set_position(shard::journaled_children(&cfg.out, g) as u64);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        if !status.success() {
            failed.push(format!("{i}/{n} ({status})"));
        }
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    if !failed.is_empty() {
        bail!(
            "worker(s) {} failed (their errors are above); --resume continues",
            failed.join(", ")
        );
    }
    Ok(())
}

/// A progress bar of generation `g`'s journaled children, when stderr is a terminal.
fn progress(g: u32, children: u32) -> Option<ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() || std::env::var("SMD_PROGRESS").as_deref() == Ok("0") {
        return None;
    }
    let b = ProgressBar::with_draw_target(
        Some(u64::from(children)),
        ProgressDrawTarget::stderr_with_hz(4),
    );
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed})") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_message(format!("generation {}: workers", g + 1));
    Some(b)
}

/// Submits generation `g`'s job array and waits for it (`sbatch --wait`).
fn run_slurm(
    n: u32,
    extra: &[String],
    base: &[OsString],
    out: &Path,
    g: u32,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("the smd-onnx executable")?;
    let mut words = vec![shell_quote(&exe.to_string_lossy())];
    words.extend(base.iter().map(|a| shell_quote(&a.to_string_lossy())));
    words.push("--shard".into());
    words.push("auto".into());
    let log = out.join(format!(".smd-journal/slurm-g{g}-%a.log"));
    let status = Command::new("sbatch")
        .arg(format!("--array=0-{}", n - 1))
        .args(["--wait", "--parsable"])
        .arg(format!("--job-name=smd-onnx-g{g}"))
        .arg(format!("--output={}", log.display()))
        .args(extra)
        .arg(format!("--wrap=exec {}", words.join(" ")))
        .stdout(Stdio::null())
        .status()
        .context("running sbatch (is Slurm installed?)")?;
    if !status.success() {
        bail!(
            "sbatch: generation {g}'s job array failed ({status}); the tasks' logs are {}",
            log.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn shard_specs_from_the_environment() {
        let slurm = env_of(&[
            ("SLURM_ARRAY_TASK_ID", "3"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
        ]);
        assert_eq!(
            resolve_shard("auto", &slurm).unwrap(),
            Shard::new(2, 4).unwrap()
        );
        let k8s = env_of(&[("JOB_COMPLETION_INDEX", "1")]);
        assert_eq!(
            resolve_shard("auto/3", &k8s).unwrap(),
            Shard::new(1, 3).unwrap()
        );
        let err = resolve_shard("auto", &k8s).unwrap_err().to_string();
        assert!(err.contains("auto/N"), "{err}");
        let aws = env_of(&[("AWS_BATCH_JOB_ARRAY_INDEX", "5")]);
        assert!(resolve_shard("auto/4", &aws).is_err(), "index 5 of 4");
        assert!(resolve_shard("auto", &env_of(&[])).is_err());
        assert!(resolve_shard("auto/x", &aws).is_err());
        let bad = env_of(&[("JOB_COMPLETION_INDEX", "one")]);
        let err = resolve_shard("auto/2", &bad).unwrap_err().to_string();
        assert!(err.contains("JOB_COMPLETION_INDEX"), "{err}");
        assert_eq!(
            resolve_shard("1/2", &bad).unwrap(),
            Shard::new(1, 2).unwrap()
        );
    }

    #[test]
    fn workers_get_the_command_without_the_driver_options() {
        let args: Vec<OsString> = [
            "evolve",
            "m.onnx",
            "--workers",
            "2",
            "--device=cpu,cpu",
            "--force",
            "--sbatch-arg",
            "--partition=x",
            "--out",
            "o",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let kept: Vec<String> = worker_args(args)
            .iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        assert_eq!(kept, ["evolve", "m.onnx", "--out", "o"]);
    }

    #[test]
    fn rerun_commands_name_the_owning_shards() {
        let m = |i, n, c: &str| Marker {
            shard: Shard::new(i, n).unwrap(),
            run_key: "k".into(),
            command: Some(c.into()),
        };
        let markers = [
            m(0, 3, "smd-onnx evolve m.onnx --shard 0/3"),
            m(2, 3, "smd-onnx evolve m.onnx --shard auto"),
        ];
        let e = EvolveError::Incomplete {
            generation: 0,
            children: 6,
            missing: vec![1, 2, 4],
        };
        let hint = rerun_hint(&e, &markers);
        assert_eq!(
            hint,
            "rerun `smd-onnx evolve m.onnx --shard 1/3` and `smd-onnx evolve m.onnx --shard 2/3`"
        );
        assert!(rerun_hint(&e, &[]).contains("i mod N"));
    }
}
