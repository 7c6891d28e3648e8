#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| qrng_fuzz::ioctl::run(data));
