//! Generates the subgroup kernels (build/subgroup_kernels.rs) into OUT_DIR, where
//! src/engine/shaders.rs includes them.

#[path = "build/subgroup_kernels.rs"]
mod subgroup_kernels;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=build/subgroup_kernels.rs");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    for (stem, text) in subgroup_kernels::generate() {
        let path = out.join(format!("{stem}.wgsl"));
        // Rewritten only when changed, so the crate is not rebuilt for nothing.
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, text).expect("writing a generated shader into OUT_DIR");
        }
    }
}
