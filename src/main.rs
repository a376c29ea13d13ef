use clap::Parser;
use std::process::ExitCode;

// glibc's malloc spent ~15 % of the daemon's CPU under load (many small, cross-thread
// allocations); mimalloc handles that pattern far better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
