#![no_main]
// The manifest fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("manifest", data);
});
