//! `redvoy`: boots from an Envoy bootstrap with Envoy's command-line flags, builds the clusters
//! and listeners, starts the workers and the admin port, and shuts down on SIGTERM, SIGINT or
//! `POST /quitquitquit`.
//!
//! This file is the sequence only: flags (`flags`), logging (`logging`), then either
//! `--mode validate` (`validate`) or build, spawn, wait for a signal, drain (`app`, `signal`).

use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tracing::{error, info};

mod admin_backend;
mod app;
mod flags;
mod listener_manager;
mod logging;
mod secrets;
mod server;
mod signal;
mod validate;
mod xds;

use app::App;
use flags::{Flags, Mode};
use logging::LogHandle;

// jemalloc: fast under many small per-request allocations, and it reports the allocated and
// resident sizes behind `server.memory_*`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let flags = Flags::parse();
    let log_handle = logging::init(flags.log_level());
    match run(flags, log_handle) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e:#}");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(flags: Flags, log_handle: Option<LogHandle>) -> Result<()> {
    let bootstrap =
        redvoy_config::load_bootstrap(&flags.load_options()).context("invalid bootstrap")?;
    // One thread for configuration, xDS and admin; the data path runs on the workers' own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the main event loop")?;
    if flags.mode == Mode::Validate {
        runtime.block_on(validate::check(&bootstrap))?;
        println!("configuration '{}' OK", flags.config_path_text());
        return Ok(());
    }
    let settings = flags.settings(log_handle);
    runtime.block_on(async {
        let app = App::build(bootstrap, settings).await?;
        if flags.mode == Mode::InitOnly {
            return Ok(());
        }
        let running = app.spawn().await?;
        signal::shutdown(running.quit_requested()).await;
        info!("shutting down");
        running.drain()?;
        Ok(())
    })
}
