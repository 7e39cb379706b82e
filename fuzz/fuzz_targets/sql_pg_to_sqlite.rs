#![no_main]
// The sql_pg_to_sqlite fuzz target: see ferry::fuzz.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    ferry::fuzz::run("sql_pg_to_sqlite", data);
});
