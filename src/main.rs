//! The `smd-onnx` binary: parse arguments, run, print the error chain once, exit.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::run() {
        Ok(code) => code,
        Err(err) => {
            // Broken pipe (e.g. `smd-onnx inspect m.onnx | head`) is not an error worth reporting.
            if err
                .chain()
                .filter_map(|e| e.downcast_ref::<std::io::Error>())
                .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            {
                return ExitCode::SUCCESS;
            }
            // One line: the chain joined with ": ", newlines flattened so hostile text cannot forge lines.
            let msg = one_line(&err);
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}

/// The error chain joined with ": ", on one line. A cause its parent's message already ends
/// with (errors shaped `"{path}: {source}"`) is not repeated.
fn one_line(err: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if msg.ends_with(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg.replace(['\n', '\r'], " ")
}
