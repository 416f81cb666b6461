//! `cargo run -p redvoy-config --example validate -- FILE [CONFIG_YAML]`: loads a bootstrap as
//! `redvoy --mode validate` would and prints the model or the error.

fn main() {
    let mut args = std::env::args().skip(1);
    let opts = redvoy_config::LoadOptions {
        config_path: args.next().map(Into::into),
        config_yaml: args.next(),
        ..Default::default()
    };
    match redvoy_config::load_bootstrap(&opts) {
        Ok(b) => println!("{b:#?}"),
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(1);
        }
    }
}
