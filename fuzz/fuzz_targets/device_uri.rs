#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qrng_fuzz::device_uri::run(data));
