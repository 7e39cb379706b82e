#![no_main]
// The markdown fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("markdown", data);
});
