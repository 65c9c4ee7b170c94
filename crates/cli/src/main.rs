//! `truc`: the one binary of the exchange axis. Each subcommand lives in
//! `cmd/`; this file only parses arguments, sets up logging and maps results
//! to exit codes (0 success, 1 failure, 2 bad usage or config, 3 could not
//! check).

#![forbid(unsafe_code)]

mod cmd;

// Dev-dependencies only the integration tests (`tests/`) use; the unit-test build links them too.
#[cfg(test)]
use {rustls as _, tempfile as _, tokio_rustls as _, tokio_stream as _, tonic_reflection as _};

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of the system allocator: the per-call path allocates
/// (HTTP/2 frames, protobuf messages, sled nodes) from several threads, and
/// glibc malloc cost about a fifth of all CPU there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let small_pages = truc_ops::memory::small_pages_unless_asked(
        std::env::var_os(truc_ops::memory::ALLOW_THP_VAR).as_deref(),
    );
    let cli = cmd::Cli::parse();
    cmd::init_tracing(&cli.log);
    if let Err(e) = small_pages {
        tracing::warn!(error = %e, "transparent huge pages could not be turned off");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cmd::run(cli.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}
