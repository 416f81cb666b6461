//! Builds the one descriptor set redvoy reflects over: envoy-types' `types.bin` (which the crate
//! ships but does not export) with `source_code_info` stripped, plus the two TypedStruct protos
//! from the workspace's `proto/` folder, compiled with protox. Written to
//! `$OUT_DIR/redvoy_descriptors.bin`.
//!
//! Finding envoy-types: `cargo metadata --offline` (locked first, then unlocked), which works
//! from a clean clone with the dependencies fetched, with vendored sources and with a custom
//! `CARGO_HOME`; failing that, the newest `envoy-types-0.7.*` under `$CARGO_HOME/registry/src`.

use std::collections::HashSet;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message;
use prost_types::FileDescriptorSet;

/// The envoy-types release line this crate is written against (its Cargo.toml says `0.7`).
const ENVOY_TYPES_PREFIX: &str = "envoy-types-0.7.";
const TYPES_BIN: &str = "src/generated/types.bin";
const OUT_FILE: &str = "redvoy_descriptors.bin";
/// Our protos, relative to the workspace's `proto/` folder.
const EXTRA_PROTOS: &[&str] = &[
    "udpa/type/v1/typed_struct.proto",
    "xds/type/v3/typed_struct.proto",
];

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");

    println!("cargo:rerun-if-changed=build.rs");
    for p in EXTRA_PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(p).display());
    }
    // A bump of envoy-types shows up in the lock file; without this the build script would keep
    // the old descriptor set.
    println!(
        "cargo:rerun-if-changed={}",
        manifest_dir.join("../../Cargo.lock").display()
    );

    let envoy_types_dir = locate_envoy_types(&manifest_dir)?;
    let types_bin = envoy_types_dir.join(TYPES_BIN);
    println!("cargo:rerun-if-changed={}", types_bin.display());
    let bytes =
        fs::read(&types_bin).map_err(|e| format!("cannot read {}: {e}", types_bin.display()))?;
    let mut set = FileDescriptorSet::decode(bytes.as_slice())?;
    // Comments make up most of the set and cost ~30 MiB of RSS once decoded; nothing reads them.
    for file in &mut set.file {
        file.source_code_info = None;
    }

    let known: HashSet<String> = set.file.iter().filter_map(|f| f.name.clone()).collect();
    let extra = protox::Compiler::new([&proto_dir])?
        .include_imports(false)
        .include_source_info(false)
        .open_files(EXTRA_PROTOS)?
        .file_descriptor_set();
    for file in extra.file {
        // A later envoy-types may ship these itself; its copy wins.
        if file.name.as_ref().is_some_and(|n| !known.contains(n)) {
            set.file.push(file);
        }
    }

    fs::write(out_dir.join(OUT_FILE), set.encode_to_vec())?;
    let version = envoy_types_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("envoy-types-"))
        .unwrap_or("unknown")
        .to_owned();
    println!("cargo:rustc-env=REDVOY_ENVOY_TYPES_VERSION={version}");
    Ok(())
}

fn locate_envoy_types(manifest_dir: &Path) -> Result<PathBuf, BoxError> {
    for locked in [true, false] {
        if let Some(dir) = from_cargo_metadata(manifest_dir, locked) {
            if dir.join(TYPES_BIN).is_file() {
                return Ok(dir);
            }
        }
    }
    if let Some(dir) = from_registry_scan() {
        return Ok(dir);
    }
    Err(format!(
        "cannot find the envoy-types package ({ENVOY_TYPES_PREFIX}*) and its {TYPES_BIN}: \
         `cargo metadata --offline` failed and $CARGO_HOME/registry/src has no copy; \
         run `cargo fetch` first"
    )
    .into())
}

/// The directory of the envoy-types package that this crate depends on, per `cargo metadata`.
fn from_cargo_metadata(manifest_dir: &Path, locked: bool) -> Option<PathBuf> {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(manifest_dir)
        .args(["metadata", "--format-version", "1", "--offline"]);
    if locked {
        cmd.arg("--locked");
    }
    let out = cmd.output().ok()?;
    if !out.status.success() {
        println!(
            "cargo:warning=cargo metadata (locked={locked}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("")
        );
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let own_manifest = manifest_dir.join("Cargo.toml");
    let packages = meta.get("packages")?.as_array()?;
    let manifest_of = |id: &str| -> Option<PathBuf> {
        packages
            .iter()
            .find(|p| p.get("id").and_then(|v| v.as_str()) == Some(id))
            .and_then(|p| p.get("manifest_path")?.as_str().map(PathBuf::from))
    };
    // Prefer the exact package our resolve node points at (several envoy-types versions may be
    // in the graph); fall back to any envoy-types package.
    let own_id = packages.iter().find_map(|p| {
        let mp = PathBuf::from(p.get("manifest_path")?.as_str()?);
        (same_file(&mp, &own_manifest)).then(|| p.get("id")?.as_str().map(str::to_owned))?
    });
    let via_resolve = own_id.and_then(|own_id| {
        let nodes = meta.get("resolve")?.get("nodes")?.as_array()?;
        let node = nodes
            .iter()
            .find(|n| n.get("id").and_then(|v| v.as_str()) == Some(&own_id))?;
        let dep = node
            .get("deps")?
            .as_array()?
            .iter()
            .find(|d| d.get("name").and_then(|v| v.as_str()) == Some("envoy_types"))?;
        manifest_of(dep.get("pkg")?.as_str()?)
    });
    let manifest = via_resolve.or_else(|| {
        packages
            .iter()
            .find(|p| p.get("name").and_then(|v| v.as_str()) == Some("envoy-types"))
            .and_then(|p| p.get("manifest_path")?.as_str().map(PathBuf::from))
    })?;
    manifest.parent().map(Path::to_path_buf)
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The newest `envoy-types-0.7.*` in any registry source directory.
fn from_registry_scan() -> Option<PathBuf> {
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let mut best: Option<(u64, PathBuf)> = None;
    for registry in fs::read_dir(cargo_home.join("registry/src"))
        .ok()?
        .flatten()
    {
        let Ok(entries) = fs::read_dir(registry.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(patch) = name.strip_prefix(ENVOY_TYPES_PREFIX) else {
                continue;
            };
            let Ok(patch) = patch.parse::<u64>() else {
                continue;
            };
            if !entry.path().join(TYPES_BIN).is_file() {
                continue;
            }
            if best.as_ref().is_none_or(|(k, _)| *k < patch) {
                best = Some((patch, entry.path()));
            }
        }
    }
    best.map(|(_, p)| p)
}
