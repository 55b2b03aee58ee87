use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = tsprov::cli::Cli::parse();
    tsprov::run::run(cli).await
}
