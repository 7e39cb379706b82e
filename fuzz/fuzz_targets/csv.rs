#![no_main]
// The csv fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("csv", data);
});
