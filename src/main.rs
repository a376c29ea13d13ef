use clap::Parser;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = parley::cli::Cli::parse();
    match parley::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parleyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
