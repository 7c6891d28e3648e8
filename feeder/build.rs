//! Renders qrng-feeder(8) and the shell completions from the clap definitions in `src/config.rs`
//! (see `../man/render.rs` for where they go), so that they never drift from `--help`.

#[path = "../man/render.rs"]
mod render;

// The build script only renders help text: the fields are never read.
#[allow(dead_code)]
#[path = "src/config.rs"]
mod config;

fn main() {
    println!("cargo:rerun-if-changed=src/config.rs");
    println!("cargo:rerun-if-changed=../man/render.rs");
    let cmd = <config::Config as clap::CommandFactory>::command();
    if let Err(e) = render::render(cmd) {
        panic!("failed to render the man page and completions: {e}");
    }
}
