#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cos_mesh_fuzz::config::file(data));
