//! The `recur` binary: runs `cli::run` and prints any error as one line, with a
//! non-zero exit code. No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    match recur::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("recur: {}", recur::cli::render(&e));
            match e {
                recur::Error::Spec { .. }
                | recur::Error::Config { .. }
                | recur::Error::Budget { .. } => ExitCode::from(2),
                recur::Error::Stopped { .. } => ExitCode::from(3),
                _ => ExitCode::from(1),
            }
        }
    }
}
