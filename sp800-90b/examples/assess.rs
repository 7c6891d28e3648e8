//! `cargo run --release -p sp800-90b --example assess -- FILE [BITS]`: the non-IID assessment as JSON.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("read the sample file");
    let bits = args.get(2).map(|b| b.parse().expect("bits per symbol"));
    let d = sp800_90b::Dataset::new(&data, bits).expect("samples");
    let t = std::time::Instant::now();
    let r = sp800_90b::non_iid(&d).expect("assessment");
    eprintln!("{:.3} s", t.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string_pretty(&r).expect("json"));
}
