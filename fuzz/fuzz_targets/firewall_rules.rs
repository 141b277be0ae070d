#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cos_mesh_fuzz::firewall_rules::run(data));
