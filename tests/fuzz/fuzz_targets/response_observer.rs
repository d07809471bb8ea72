#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ecluse::fuzzing::response_observer(data));
