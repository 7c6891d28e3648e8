//! `cargo run --release -p sp800-90b --example timing -- FILE [BITS]`: the fastest of three runs of
//! each estimator, in seconds (for finding where the time goes; docs/benchmarks.md has the figures).

use sp800_90b::estimators as est;
use std::time::Instant;

fn best(name: &str, mut f: impl FnMut()) {
    let mut t = f64::INFINITY;
    for _ in 0..3 {
        let s = Instant::now();
        f();
        t = t.min(s.elapsed().as_secs_f64());
    }
    eprintln!("{name:24} {t:.3}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let data = std::fs::read(&args[1]).expect("read the sample file");
    let bits = args.get(2).map(|b| b.parse().expect("bits per symbol"));
    let only = args.get(3).cloned().unwrap_or_default();
    let d = sp800_90b::Dataset::new(&data, bits).expect("samples");
    for (view, s, k) in [("bitstring", &d.bits, 2usize), ("literal", &d.symbols, d.alphabet_size)] {
        let run = |name: &str, f: &mut dyn FnMut()| {
            if only.is_empty() || name.contains(only.as_str()) {
                best(&format!("{view} {name}"), f);
            }
        };
        run("mcv", &mut || {
            std::hint::black_box(est::most_common_value(s, k));
        });
        if k == 2 {
            run("collision+markov", &mut || {
                std::hint::black_box((est::collision(s), est::markov(s)));
            });
            run("compression", &mut || {
                std::hint::black_box(est::compression(s));
            });
        }
        run("tuple", &mut || {
            let _ = std::hint::black_box(est::t_tuple_and_lrs(s));
        });
        run("mcw", &mut || {
            std::hint::black_box(est::multi_mcw(s, k));
        });
        run("lag", &mut || {
            std::hint::black_box(est::lag(s, k));
        });
        run("mmc", &mut || {
            std::hint::black_box(est::multi_mmc(s, k));
        });
        run("lz78y", &mut || {
            std::hint::black_box(est::lz78y(s, k));
        });
    }
}
