//! `docent-eval`: parse arguments, run the command, print an error, exit with its code.

use clap::Parser;
use docent_eval::units::{printable, Lines};
use std::process::ExitCode;

fn main() -> ExitCode {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("docent_eval=info,warn"),
    )
    .format_timestamp_millis()
    .init();
    let cli = docent_eval::cli::Cli::parse();
    match docent_eval::commands::execute(cli) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            // The chain can quote a question file or a database: no raw control characters.
            let message = format!("{error:#}");
            eprintln!("error: {}", printable(&message, Lines::Keep));
            ExitCode::from(docent_eval::error::exit_code_of(&error))
        }
    }
}
