#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| memleak_fuzz::check_kallsyms(data));
