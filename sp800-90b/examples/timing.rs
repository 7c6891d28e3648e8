//! `cargo run --release -p sp800-90b --example timing -- FILE [BITS]`: time of each estimator.

use sp800_90b::estimators as est;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("read the sample file");
    let bits = args.get(2).map(|b| b.parse().expect("bits per symbol"));
    let d = sp800_90b::Dataset::new(&data, bits).expect("samples");
    for (name, s, k) in [("bitstring", &d.bits, 2usize), ("literal", &d.symbols, d.alphabet_size)] {
        let t = Instant::now();
        est::most_common_value(s, k);
        eprintln!("{name} mcv {:.3}", t.elapsed().as_secs_f64());
        if k == 2 {
            let t = Instant::now();
            est::collision(s);
            est::markov(s);
            eprintln!("{name} collision+markov {:.3}", t.elapsed().as_secs_f64());
            let t = Instant::now();
            est::compression(s);
            eprintln!("{name} compression {:.3}", t.elapsed().as_secs_f64());
        }
        let t = Instant::now();
        let _ = est::t_tuple_and_lrs(s);
        eprintln!("{name} tuple {:.3}", t.elapsed().as_secs_f64());
        let t = Instant::now();
        est::multi_mcw(s, k);
        eprintln!("{name} mcw {:.3}", t.elapsed().as_secs_f64());
        let t = Instant::now();
        est::lag(s, k);
        eprintln!("{name} lag {:.3}", t.elapsed().as_secs_f64());
        let t = Instant::now();
        est::multi_mmc(s, k);
        eprintln!("{name} mmc {:.3}", t.elapsed().as_secs_f64());
        let t = Instant::now();
        est::lz78y(s, k);
        eprintln!("{name} lz78y {:.3}", t.elapsed().as_secs_f64());
    }
}
