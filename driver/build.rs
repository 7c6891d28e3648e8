//! Renders quantis-driver(8), a page per subcommand, and the shell completions from the clap
//! definitions in `src/cli.rs` (see `../man/render.rs` for where they go), so that they never drift
//! from `--help`.

#[path = "../man/render.rs"]
mod render;

// The build script only renders help text: the fields are never read.
#[allow(dead_code)]
#[path = "src/cli.rs"]
mod cli;

/// Stand-ins for what `cli.rs` takes from the library (main.rs's `cli_lib` re-exports the real
/// ones). They only have to parse: help text never runs a value parser. The defaults are shown
/// in the man page; `tests/tests/man.rs` checks they match the binary's `--help`.
#[allow(dead_code)]
mod cli_lib {
    macro_rules! opaque {
        ($($name:ident),*) => {$(
            #[derive(Debug, Clone)]
            pub struct $name;
            impl std::str::FromStr for $name {
                type Err = String;
                fn from_str(_: &str) -> Result<Self, String> {
                    Err("not parsed in the build script".to_owned())
                }
            }
        )*};
    }
    opaque!(DeviceUri, ExtractorSpec, Shape);

    pub const DEFAULT_ELEMENTARY: usize = 4;
    pub const DEFAULT_UNDERSAMPLING: usize = 16;
    pub const DEFAULT_NO_DATA_INTERVALS: u32 = 40;
    pub const DEFAULT_ASSESS_SAMPLES: usize = 1_000_000;
    pub const DEFAULT_STARTUP_ASSESS_BYTES: usize = 300_000;
    pub const MAX_RING_CAPACITY: u64 = 1 << 30;

    pub fn parse_shape(s: &str) -> Result<Shape, String> {
        s.parse()
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/cli.rs");
    println!("cargo:rerun-if-changed=../man/render.rs");
    let cmd = <cli::Cli as clap::CommandFactory>::command();
    if let Err(e) = render::render(cmd) {
        panic!("failed to render the man pages and completions: {e}");
    }
}
