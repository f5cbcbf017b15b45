//! `cargo +nightly fuzz run peft`: see src/lib.rs for what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = spectune_fuzz::peft(data);
});
