//! `docent-eval`: parse arguments, call the library, print the error, exit with its code.

use clap::Parser;

fn main() {
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("docent_eval=info,warn"),
    )
    .format_timestamp_millis()
    .init();
    let cli = docent_eval::cli::Cli::parse();
    let code = match docent_eval::cli::execute(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            error.exit_code()
        }
    };
    std::process::exit(code);
}
