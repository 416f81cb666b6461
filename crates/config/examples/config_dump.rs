//! `cargo run -p redvoy-config --example config_dump -- FILE [QUERY]`: prints what redvoy's
//! `/config_dump?QUERY` would answer for the bootstrap (`QUERY` like `mask=static_clusters`;
//! `resource=`, `mask=`, `name_regex=`, `include_eds` are understood, values unencoded).

fn main() {
    let mut args = std::env::args().skip(1);
    let opts = redvoy_config::LoadOptions {
        config_path: args.next().map(Into::into),
        ..Default::default()
    };
    let mut dump = redvoy_config::DumpOptions::default();
    for pair in args
        .next()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "resource" => dump.resource = Some(v.to_owned()),
            "mask" => dump.mask = Some(v.to_owned()),
            "name_regex" => dump.name_regex = Some(v.to_owned()),
            "include_eds" => dump.include_eds = true,
            _ => {}
        }
    }
    let bootstrap = match redvoy_config::load_bootstrap(&opts) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    };
    match redvoy_config::render_config_dump(&bootstrap, std::time::SystemTime::now(), &dump) {
        Ok(json) => print!("{json}"),
        Err(e) => {
            eprintln!("{} {}", e.status, e.message);
            std::process::exit(2);
        }
    }
}
