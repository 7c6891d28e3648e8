//! The man pages and shell completions that `driver/build.rs` and `bridge/build.rs` render from
//! the clap definitions (`man/render.rs`) say what `--help` says: every long option, every default
//! and every environment variable of each command and subcommand. The package test (deb.rs)
//! checks that the package ships them and lintian accepts them.

use std::path::Path;
use std::process::Command;

use qrng_e2e::packaging::build_binaries;

/// The long options a `--help` text lists (`-h, --help`, `--ring <RING>`, ...).
fn long_options(help: &str) -> Vec<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split_whitespace().take_while(|t| t.starts_with('-')).collect::<Vec<_>>())
        .map(|t| t.trim_end_matches(',').to_owned())
        .filter(|t| t.starts_with("--"))
        .collect()
}

/// The bracketed notes a `--help` text carries: `[default: X]` and the names in `[env: NAME=]`.
fn defaults_and_env(help: &str) -> (Vec<String>, Vec<String>) {
    let mut defaults = Vec::new();
    let mut env = Vec::new();
    for line in help.lines() {
        let mut rest = line;
        while let Some(i) = rest.find('[') {
            let Some(j) = rest[i..].find(']') else { break };
            let note = &rest[i + 1..i + j];
            if note.starts_with("default: ") {
                defaults.push(format!("[{note}]"));
            } else if let Some(e) = note.strip_prefix("env: ") {
                env.push(e.split('=').next().unwrap_or(e).to_owned());
            }
            rest = &rest[i + j + 1..];
        }
    }
    (defaults, env)
}

/// A man page as text a reader sees: roff's escaped hyphen `\-` is a hyphen.
fn page_text(path: &Path) -> String {
    let roff = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e} (rendered by build.rs)", path.display()));
    roff.replace("\\-", "-")
}

fn help_of(bin: &Path, sub: Option<&str>) -> String {
    let out = Command::new(bin).args(sub).arg("--help").output().expect("run --help");
    assert!(out.status.success(), "{} {sub:?} --help failed", bin.display());
    String::from_utf8(out.stdout).expect("UTF-8 help")
}

/// Checks the page of `bin` (or of its subcommand `sub`) against its `--help`.
fn check_page(dir: &Path, bin: &str, sub: Option<&str>) {
    let help = help_of(&dir.join(bin), sub);
    let page_name = match sub {
        Some(s) => format!("{bin}-{s}.8"),
        None => format!("{bin}.8"),
    };
    let page = page_text(&dir.join("man").join(&page_name));
    let options = long_options(&help);
    assert!(options.iter().any(|o| o == "--help"), "no options found in --help:\n{help}");
    for opt in &options {
        assert!(page.contains(opt.as_str()), "{page_name} lacks {opt} (in --help):\n{page}");
    }
    let (defaults, env) = defaults_and_env(&help);
    for d in &defaults {
        assert!(page.contains(d.as_str()), "{page_name} lacks {d} (in --help):\n{page}");
    }
    for e in &env {
        assert!(page.contains(e.as_str()), "{page_name} lacks ${e} (in --help):\n{page}");
    }
    assert!(page.contains(".TH "), "{page_name} is not a man page");
}

#[test]
fn man_pages_mention_every_option_default_and_variable_of_help() {
    let dir = build_binaries().expect("build the binaries");
    check_page(&dir, "qrng-bridge", None);
    check_page(&dir, "qrng-feeder", None);
    check_page(&dir, "quantis-driver", None);
    let top = help_of(&dir.join("quantis-driver"), None);
    let mut subs = 0;
    for sub in ["probe", "list", "assess", "make-matrix"] {
        assert!(top.contains(sub), "quantis-driver --help does not list {sub}");
        check_page(&dir, "quantis-driver", Some(sub));
        subs += 1;
    }
    assert_eq!(subs, 4);
}

#[test]
fn completions_offer_every_long_option() {
    let dir = build_binaries().expect("build the binaries");
    for bin in ["qrng-bridge", "qrng-feeder", "quantis-driver"] {
        let options = long_options(&help_of(&dir.join(bin), None));
        for file in [format!("{bin}.bash"), format!("_{bin}"), format!("{bin}.fish")] {
            let path = dir.join("completions").join(&file);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (rendered by build.rs)", path.display()));
            for opt in &options {
                // fish writes `-l ring-size`, bash and zsh `--ring-size`.
                let bare = opt.trim_start_matches("--");
                assert!(
                    text.contains(opt.as_str()) || text.contains(&format!("-l {bare}")),
                    "{file} does not complete {opt}"
                );
            }
        }
    }
}
