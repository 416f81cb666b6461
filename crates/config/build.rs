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
    // Comments make up most of the set and cost ~30 MiB of RSS once decoded; nothing reads them.
    // The stripping works on the wire format: decoding into prost-types would drop the
    // extension options (`udpa.annotations.sensitive`, which `/config_dump` redaction reads).
    let (mut out, known) = strip_source_code_info(&bytes)?;

    let extra = protox::Compiler::new([&proto_dir])?
        .include_imports(false)
        .include_source_info(false)
        .open_files(EXTRA_PROTOS)?
        .file_descriptor_set();
    for file in extra.file {
        // A later envoy-types may ship these itself; its copy wins.
        if file.name.as_ref().is_some_and(|n| !known.contains(n)) {
            // `FileDescriptorSet.file` is field 1: appending entries appends to the set.
            FileDescriptorSet { file: vec![file] }.encode(&mut out)?;
        }
    }

    fs::write(out_dir.join(OUT_FILE), out)?;
    let version = envoy_types_dir
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("envoy-types-"))
        .unwrap_or("unknown")
        .to_owned();
    println!("cargo:rustc-env=REDVOY_ENVOY_TYPES_VERSION={version}");
    Ok(())
}

/// `FileDescriptorSet.file` and `FileDescriptorProto.{name, source_code_info}` field numbers.
const SET_FILE: u64 = 1;
const FILE_NAME: u64 = 1;
const FILE_SOURCE_CODE_INFO: u64 = 9;

/// Copies a serialized `FileDescriptorSet` without any file's `source_code_info`, returning
/// it with the file names it holds.
fn strip_source_code_info(set: &[u8]) -> Result<(Vec<u8>, HashSet<String>), BoxError> {
    let mut out = Vec::with_capacity(set.len() / 4);
    let mut names = HashSet::new();
    for field in wire_fields(set)? {
        if field.number != SET_FILE || field.body.is_none() {
            out.extend_from_slice(field.raw);
            continue;
        }
        let file = field.body.unwrap_or_default();
        let mut kept = Vec::with_capacity(file.len());
        for f in wire_fields(file)? {
            match (f.number, f.body) {
                (FILE_SOURCE_CODE_INFO, _) => {}
                (FILE_NAME, Some(name)) => {
                    names.insert(String::from_utf8(name.to_vec())?);
                    kept.extend_from_slice(f.raw);
                }
                _ => kept.extend_from_slice(f.raw),
            }
        }
        prost::encoding::encode_key(
            u32::try_from(SET_FILE)?,
            prost::encoding::WireType::LengthDelimited,
            &mut out,
        );
        prost::encoding::encode_varint(kept.len() as u64, &mut out);
        out.extend_from_slice(&kept);
    }
    Ok((out, names))
}

/// One top-level field of a serialized message: its number, its bytes as found (key
/// included), and for length-delimited fields the payload.
struct WireField<'a> {
    number: u64,
    raw: &'a [u8],
    body: Option<&'a [u8]>,
}

fn wire_fields(mut buf: &[u8]) -> Result<Vec<WireField<'_>>, BoxError> {
    let mut fields = Vec::new();
    while !buf.is_empty() {
        let start = buf;
        let key = prost::encoding::decode_varint(&mut buf)?;
        let (number, wire_type) = (key >> 3, key & 7);
        let body = match wire_type {
            0 => {
                prost::encoding::decode_varint(&mut buf)?;
                None
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                buf = buf.get(n..).ok_or("truncated fixed-width field")?;
                None
            }
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut buf)?)?;
                let body = buf.get(..len).ok_or("truncated length-delimited field")?;
                buf = &buf[len..];
                Some(body)
            }
            other => return Err(format!("unexpected wire type {other}").into()),
        };
        let used = start.len() - buf.len();
        fields.push(WireField {
            number,
            raw: &start[..used],
            body,
        });
    }
    Ok(fields)
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
    // Only this platform's packages: a fresh offline checkout has no copy of other platforms'
    // (e.g. Windows-only) dependencies, and metadata for every platform would fail.
    if let Ok(target) = env::var("TARGET") {
        cmd.args(["--filter-platform", &target]);
    }
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
