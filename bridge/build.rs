//! Renders qrng-bridge(8) and the shell completions from the clap definitions in `src/config.rs`
//! (see `../man/render.rs` for where they go), so that they never drift from `--help`.

#[path = "../man/render.rs"]
mod render;

/// `config.rs`'s items that need the rest of the crate (see its module comment) are dropped here.
macro_rules! lib_only {
    ($($item:item)*) => {};
}

// The build script only renders help text: the fields are never read.
#[allow(dead_code)]
#[path = "src/config.rs"]
mod config;

/// Stand-in for the one library type `config.rs` names; help text never runs a value parser.
mod fuse {
    #[derive(Debug, Clone)]
    pub struct DevLink;

    impl std::str::FromStr for DevLink {
        type Err = String;
        fn from_str(_: &str) -> Result<Self, String> {
            Err("not parsed in the build script".to_owned())
        }
    }
}

/// The connection limits' defaults, from the same file the library includes.
#[allow(dead_code)]
mod http {
    pub mod server {
        pub mod limits {
            include!("src/http/server/defaults.rs");
        }
    }
}

fn main() {
    println!("cargo:rerun-if-changed=src/config.rs");
    println!("cargo:rerun-if-changed=src/http/server/defaults.rs");
    println!("cargo:rerun-if-changed=../man/render.rs");
    let cmd = <config::Config as clap::CommandFactory>::command();
    if let Err(e) = render::render(cmd) {
        panic!("failed to render the man page and completions: {e}");
    }
}
