#![no_main]
// The json fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("json", data);
});
