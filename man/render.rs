//! Shared by `driver/build.rs`, `bridge/build.rs` and `feeder/build.rs` (each includes it with
//! `#[path]`): renders a clap command's man pages (section 8: the command and one page per
//! subcommand) and its bash, zsh and fish completions.
//!
//! The files go to `OUT_DIR` and are copied to `<target>/<profile>/man/` and
//! `<target>/<profile>/completions/`: the Debian package takes its assets by paths under
//! `target/release/` (cargo-deb maps that prefix to the real target and profile directory), and the
//! hash in `OUT_DIR`'s name changes with the build, so the package cannot name it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Man page section of both daemons (system administration commands).
const SECTION: &str = "8";

/// Renders everything for `cmd`; returns the directory the pages and completions were copied to.
pub fn render(cmd: clap::Command) -> io::Result<PathBuf> {
    let out =
        PathBuf::from(std::env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("no OUT_DIR"))?);
    // OUT_DIR = <target>/<profile>/build/<package>-<hash>/out
    let profile_dir = out
        .ancestors()
        .nth(3)
        .ok_or_else(|| io::Error::other(format!("unexpected OUT_DIR {}", out.display())))?
        .to_path_buf();
    let man_out = out.join("man");
    let completions_out = out.join("completions");
    fs::create_dir_all(&man_out)?;
    fs::create_dir_all(&completions_out)?;

    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    man_pages(&cmd, &man_out)?;
    let name = cmd.get_name().to_owned();
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish]
    {
        clap_complete::generate_to(shell, &mut cmd, &name, &completions_out)?;
    }

    copy_dir(&man_out, &profile_dir.join("man"))?;
    copy_dir(&completions_out, &profile_dir.join("completions"))?;
    Ok(profile_dir)
}

/// One page per command, named after its full name (`quantis-driver-probe.8`), and the same
/// gzipped at the highest level without a time stamp (`.8.gz`, Debian policy 12.1).
fn man_pages(cmd: &clap::Command, dir: &Path) -> io::Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        man_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(cmd.clone()).section(SECTION);
    let mut page = Vec::new();
    man.render(&mut page)?;
    let name = man.get_filename();
    let mut gz = flate2::GzBuilder::new()
        .mtime(0)
        .write(fs::File::create(dir.join(format!("{name}.gz")))?, flate2::Compression::best());
    io::Write::write_all(&mut gz, &page)?;
    gz.finish()?;
    fs::write(dir.join(name), page)
}

fn copy_dir(from: &Path, to: &Path) -> io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
