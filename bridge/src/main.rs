//! `qrng-bridge`: thin command-line front over the library.
#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    anyhow::bail!("qrng-bridge: not wired yet")
}
