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
            let msg = format!("{err:#}").replace(['\n', '\r'], " ");
            eprintln!("error: {msg}");
            ExitCode::from(2)
        }
    }
}
