//! `cargo +nightly fuzz run adapter_file`: see src/lib.rs for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spectune_fuzz::adapter_file(data);
});
