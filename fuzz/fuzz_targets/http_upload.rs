#![no_main]
// The http_upload fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("http_upload", data);
});
