use clap::Parser;
use std::process::ExitCode;

// glibc's malloc spent ~15 % of the daemon's CPU under load (many small, cross-thread
// allocations); mimalloc handles that pattern far better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // An idle worker hands its freed pages back when asked to (after a wave of
        // conversations went quiet): the allocator keeps pages per thread.
        .on_thread_park(parley::metrics::give_back_if_asked)
        .build();
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("parleyd: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let cli = parley::cli::Cli::parse();
    match runtime.block_on(parley::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parleyd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
