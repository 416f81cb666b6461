//! `make demo-<scenario>`: runs `istio-examples/<scenario>/` locally (real redis-servers,
//! `redvoy-control-plane` on the scenario's YAML, redvoy or Envoy as the sidecar) and prints
//! what happened. `scenario DIR [--target redvoy|envoy]`; the binaries come from `REDVOY_BIN`
//! and `REDVOY_CONTROL_PLANE_BIN` (the Makefile sets both).

use std::path::PathBuf;

use redvoy_test_util::scenario::{self, RunOptions, CONTROL_PLANE_BIN_ENV};
use redvoy_test_util::Target;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut dir = None;
    let mut target = Target::Redvoy;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--target" => {
                target = match args.next().as_deref() {
                    Some("envoy") => Target::Envoy,
                    Some("redvoy") => Target::Redvoy,
                    other => {
                        eprintln!("--target: {other:?} is not redvoy or envoy");
                        std::process::exit(2);
                    }
                }
            }
            _ => dir = Some(PathBuf::from(a)),
        }
    }
    let Some(dir) = dir else {
        eprintln!("usage: scenario istio-examples/<scenario> [--target redvoy|envoy]");
        std::process::exit(2);
    };
    let Some(bin) = std::env::var_os(CONTROL_PLANE_BIN_ENV) else {
        eprintln!("{CONTROL_PLANE_BIN_ENV} must name the redvoy-control-plane binary");
        std::process::exit(2);
    };
    let opts = RunOptions {
        target,
        control_plane_bin: PathBuf::from(bin),
        echo: true,
    };
    match scenario::run(&dir, &opts) {
        Ok(report) if report.failures.is_empty() => {
            println!("== done: every expected reply matched")
        }
        Ok(report) => {
            for f in &report.failures {
                eprintln!("MISMATCH: {f}");
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
