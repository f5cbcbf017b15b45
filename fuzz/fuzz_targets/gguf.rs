//! `cargo +nightly fuzz run gguf`: see src/lib.rs for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spectune_fuzz::gguf(data);
});
