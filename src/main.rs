//! The `recur` binary: runs `cli::run` and prints any error as one line, with a
//! non-zero exit code. No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match recur::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur: {}", recur::cli::render(&e));
            match e {
                recur::Error::Spec { .. }
                | recur::Error::Config { .. }
                | recur::Error::Budget { .. } => ExitCode::from(2),
                _ => ExitCode::from(1),
            }
        }
    }
}
