#![no_main]
libfuzzer_sys::fuzz_target!(|input: cos_mesh_fuzz::mesh::MeshInput| {
    cos_mesh_fuzz::mesh::run(input);
});
