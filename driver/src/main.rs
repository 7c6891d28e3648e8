//! `quantis-driver`: thin command-line front over the library.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("quantis-driver: not wired yet")
}
