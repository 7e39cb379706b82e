//! Runs one input through one fuzz target on stable, outside libFuzzer: `cargo run --example fuzz_replay
//! TARGET FILE...` (a crash artifact from fuzz/artifacts, say), so that its panic and backtrace show.

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(target), files) = (args.next(), args.collect::<Vec<_>>()) else {
        eprintln!(
            "usage: fuzz_replay TARGET FILE...; targets: {}",
            ferry::fuzz::TARGETS.join(", ")
        );
        std::process::exit(2);
    };
    for file in files {
        let data = std::fs::read(&file).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(ferry::fuzz::run(&target, &data), "no fuzz target {target}");
        println!("{file}: ok");
    }
}
