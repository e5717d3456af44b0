//! The `recur` binary: runs `cli::run` and prints any error as one line, with a
//! non-zero exit code. No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    match recur::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Of a job over several processes, rank 0 says it.
            if !recur::cli::ranks::silent() {
                eprintln!("recur: {}", recur::cli::render(&e));
            }
            ExitCode::from(recur::cli::ranks::exit_code(&e))
        }
    }
}
