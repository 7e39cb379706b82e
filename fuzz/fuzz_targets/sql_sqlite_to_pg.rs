#![no_main]
// The sql_sqlite_to_pg fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("sql_sqlite_to_pg", data);
});
