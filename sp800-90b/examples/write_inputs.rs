//! `cargo run --release -p sp800-90b --example write_inputs -- DIR`: writes the test inputs of
//! tests/common/inputs.rs as DIR/<name>.bin, for running NIST's reference tool on them.

#[path = "../tests/common/inputs.rs"]
mod inputs;

fn main() {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: write_inputs DIR"));
    std::fs::create_dir_all(&dir).expect("create the directory");
    for i in inputs::all() {
        let path = dir.join(format!("{}.bin", i.name));
        std::fs::write(&path, &i.samples).expect("write an input");
        println!("{} {}", path.display(), i.bits);
    }
}
