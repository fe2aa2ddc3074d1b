//! The WGSL sources, embedded in the binary, and their reflection through naga.
//!
//! A kernel file may pull in a shared library with a line `//!include NAME.wgsl`; the
//! library is appended after the file's own text (WGSL declarations may come in any order),
//! so line numbers in errors about the file's own code stay true.

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};

use crate::engine::device::Access;

/// Every shader file, by stem. A new op family is one file plus one line here. The subgroup
/// kernels are generated at build time (build/subgroup_kernels.rs, into OUT_DIR).
pub const SHADERS: &[(&str, &str)] = &[
    ("gemm_core", include_str!("../../shaders/gemm_core.wgsl")),
    (
        "gemm_params",
        include_str!("../../shaders/gemm_params.wgsl"),
    ),
    ("matmul", include_str!("../../shaders/matmul.wgsl")),
    (
        "matmul_subgroup_nn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup_nn.wgsl")),
    ),
    (
        "matmul_subgroup_nt",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup_nt.wgsl")),
    ),
    (
        "matmul_subgroup_tn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup_tn.wgsl")),
    ),
    (
        "matmul_subgroup16_nn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup16_nn.wgsl")),
    ),
    (
        "matmul_subgroup4_nn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup4_nn.wgsl")),
    ),
    (
        "matmul_subgroup16_nt",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup16_nt.wgsl")),
    ),
    (
        "matmul_subgroup4_nt",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup4_nt.wgsl")),
    ),
    (
        "matmul_subgroup16_tn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup16_tn.wgsl")),
    ),
    (
        "matmul_subgroup4_tn",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup4_tn.wgsl")),
    ),
    (
        "matmul_subgroup_narrow",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup_narrow.wgsl")),
    ),
    (
        "matmul_subgroup16_narrow",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup16_narrow.wgsl")),
    ),
    (
        "matmul_subgroup4_narrow",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup4_narrow.wgsl")),
    ),
    (
        "matmul_subgroup_swap",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup_swap.wgsl")),
    ),
    (
        "matmul_subgroup16_swap",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup16_swap.wgsl")),
    ),
    (
        "matmul_subgroup4_swap",
        include_str!(concat!(env!("OUT_DIR"), "/matmul_subgroup4_swap.wgsl")),
    ),
    (
        "elementwise",
        include_str!("../../shaders/elementwise.wgsl"),
    ),
    ("activation", include_str!("../../shaders/activation.wgsl")),
    ("reduce", include_str!("../../shaders/reduce.wgsl")),
    ("conv2d", include_str!("../../shaders/conv2d.wgsl")),
    (
        "conv_subpixel",
        include_str!("../../shaders/conv_subpixel.wgsl"),
    ),
    (
        "conv_subpixel_subgroup",
        include_str!(concat!(env!("OUT_DIR"), "/conv_subpixel_subgroup.wgsl")),
    ),
    (
        "conv_subpixel_subgroup16",
        include_str!(concat!(env!("OUT_DIR"), "/conv_subpixel_subgroup16.wgsl")),
    ),
    (
        "conv_subpixel_subgroup4",
        include_str!(concat!(env!("OUT_DIR"), "/conv_subpixel_subgroup4.wgsl")),
    ),
    (
        "conv_implicit_subgroup",
        include_str!(concat!(env!("OUT_DIR"), "/conv_implicit_subgroup.wgsl")),
    ),
    (
        "conv_implicit_subgroup16",
        include_str!(concat!(env!("OUT_DIR"), "/conv_implicit_subgroup16.wgsl")),
    ),
    (
        "conv_implicit_subgroup4",
        include_str!(concat!(env!("OUT_DIR"), "/conv_implicit_subgroup4.wgsl")),
    ),
    ("linear_cm", include_str!("../../shaders/linear_cm.wgsl")),
    ("batchnorm", include_str!("../../shaders/batchnorm.wgsl")),
    ("dropout", include_str!("../../shaders/dropout.wgsl")),
    ("concat", include_str!("../../shaders/concat.wgsl")),
    ("loss", include_str!("../../shaders/loss.wgsl")),
    ("latent", include_str!("../../shaders/latent.wgsl")),
    ("diffaug", include_str!("../../shaders/diffaug.wgsl")),
    ("normalize", include_str!("../../shaders/normalize.wgsl")),
    ("knn", include_str!("../../shaders/knn.wgsl")),
    ("optim", include_str!("../../shaders/optim.wgsl")),
    ("rng", include_str!("../../shaders/rng.wgsl")),
    ("philox", include_str!("../../shaders/philox.wgsl")),
    ("act_lib", include_str!("../../shaders/act_lib.wgsl")),
    ("divmod", include_str!("../../shaders/divmod.wgsl")),
    (
        "flat_texture",
        include_str!("../../shaders/flat_texture.wgsl"),
    ),
    (
        "workgroup_sum",
        include_str!("../../shaders/workgroup_sum.wgsl"),
    ),
];

/// Library files that are only ever included, never compiled on their own.
pub const LIBRARIES: &[&str] = &[
    "gemm_core",
    "gemm_params",
    "philox",
    "act_lib",
    "divmod",
    "flat_texture",
    "workgroup_sum",
];

/// The stems of the kernels generated at build time (build/subgroup_kernels.rs).
pub const GENERATED: &[&str] = &[
    "matmul_subgroup_nn",
    "matmul_subgroup_nt",
    "matmul_subgroup_tn",
    "matmul_subgroup_narrow",
    "matmul_subgroup_swap",
    "matmul_subgroup16_nn",
    "matmul_subgroup16_nt",
    "matmul_subgroup16_tn",
    "matmul_subgroup16_narrow",
    "matmul_subgroup16_swap",
    "conv_subpixel_subgroup",
    "conv_subpixel_subgroup16",
    "conv_implicit_subgroup",
    "conv_implicit_subgroup16",
    "matmul_subgroup4_nn",
    "matmul_subgroup4_nt",
    "matmul_subgroup4_tn",
    "matmul_subgroup4_narrow",
    "matmul_subgroup4_swap",
    "conv_subpixel_subgroup4",
    "conv_implicit_subgroup4",
];

/// Writes every shader, generated or hand-written, as `DIR/<stem>.wgsl` (their text as
/// embedded, `//!include` lines unexpanded) for reading; returns how many.
pub fn dump(dir: &std::path::Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("{}: cannot create: {e}", dir.display()))?;
    for (stem, src) in SHADERS {
        let path = dir.join(format!("{stem}.wgsl"));
        std::fs::write(&path, src).map_err(|e| anyhow!("{}: cannot write: {e}", path.display()))?;
    }
    Ok(SHADERS.len())
}

/// How errors name a shader's file: `shaders/<stem>.wgsl`, or for a generated kernel the
/// generator that writes it (its text: `activegen bench --dump-shaders DIR`).
pub fn path_of(stem: &str) -> String {
    if GENERATED.contains(&stem) {
        format!("{stem}.wgsl (generated by build/subgroup_kernels.rs)")
    } else {
        format!("shaders/{stem}.wgsl")
    }
}

fn raw(stem: &str) -> Result<&'static str> {
    SHADERS
        .iter()
        .find(|(s, _)| *s == stem)
        .map(|(_, src)| *src)
        .ok_or_else(|| anyhow!("no shader named '{stem}' is registered in src/engine/shaders.rs"))
}

/// The file's text with its `//!include`s appended, and the line at which each appended
/// library starts (1-based, in the composed text).
pub fn compose(stem: &str) -> Result<(String, Vec<(String, usize)>)> {
    let own = raw(stem)?;
    let mut out = own.to_string();
    let mut parts = Vec::new();
    let mut seen: Vec<&str> = Vec::new();
    for line in own.lines() {
        if let Some(inc) = line.trim().strip_prefix("//!include ") {
            let inc_stem = inc.trim().trim_end_matches(".wgsl");
            if seen.contains(&inc_stem) {
                continue;
            }
            seen.push(inc_stem);
            if !out.ends_with('\n') {
                out.push('\n');
            }
            parts.push((format!("shaders/{inc_stem}.wgsl"), out.lines().count() + 1));
            out.push_str(raw(inc_stem)?);
        }
    }
    Ok((out, parts))
}

pub fn source(stem: &str) -> Result<String> {
    Ok(compose(stem)?.0)
}

/// Which group-0 bindings each entry point uses, with their access mode.
pub struct Reflection {
    pub entry_bindings: HashMap<String, Vec<(u32, Access)>>,
}

/// Parses and validates `shaders/<stem>.wgsl` with naga; an error names the file and line.
pub fn parse_and_validate(stem: &str) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let (src, parts) = compose(stem)?;
    let note = if parts.is_empty() {
        String::new()
    } else {
        let p: Vec<String> = parts
            .iter()
            .map(|(f, l)| format!("{f} from line {l}"))
            .collect();
        format!(" (appended: {})", p.join(", "))
    };
    validate_source(&path_of(stem), &note, &src)
}

/// Parses and validates WGSL text; errors carry `path:line:column` and the offending line.
pub fn validate_source(
    path: &str,
    note: &str,
    src: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo)> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| anyhow!("{path}{note}: {}", e.emit_to_string_with_path(src, path)))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| anyhow!("{path}{note}: {}", e.emit_to_string_with_path(src, path)))?;
    Ok((module, info))
}

pub fn reflect(stem: &str, _source: &str) -> Result<Reflection> {
    let (module, info) = parse_and_validate(stem)?;
    let mut entry_bindings = HashMap::new();
    for (i, ep) in module.entry_points.iter().enumerate() {
        let fi = info.get_entry_point(i);
        let mut used = Vec::new();
        for (h, var) in module.global_variables.iter() {
            if fi[h].is_empty() {
                continue;
            }
            let Some(rb) = &var.binding else { continue };
            if rb.group != 0 {
                bail!("{}: only bind group 0 is supported", path_of(stem));
            }
            let access = match var.space {
                naga::AddressSpace::Uniform => Access::Uniform,
                naga::AddressSpace::Storage { access } => {
                    if access.contains(naga::StorageAccess::STORE) {
                        Access::ReadWrite
                    } else {
                        Access::Read
                    }
                }
                naga::AddressSpace::Handle => match module.types[var.ty].inner {
                    naga::TypeInner::Image {
                        dim: naga::ImageDimension::D2,
                        arrayed: false,
                        class:
                            naga::ImageClass::Storage {
                                format,
                                access: naga::StorageAccess::LOAD,
                            },
                    } => match format {
                        naga::StorageFormat::Rgba32Float => {
                            Access::Texture(wgpu::TextureFormat::Rgba32Float)
                        }
                        naga::StorageFormat::R32Float => {
                            Access::Texture(wgpu::TextureFormat::R32Float)
                        }
                        _ => bail!(
                            "{}: storage textures are rgba32float or r32float",
                            path_of(stem)
                        ),
                    },
                    _ => continue,
                },
                _ => continue,
            };
            if access == Access::Uniform && rb.binding != 0 {
                bail!(
                    "{}: the uniform parameters must sit at binding 0",
                    path_of(stem)
                );
            }
            used.push((rb.binding, access));
        }
        used.sort_by_key(|b| b.0);
        entry_bindings.insert(ep.name.clone(), used);
    }
    Ok(Reflection { entry_bindings })
}

#[cfg(test)]
mod tests {
    /// The flat-texture layout is stated twice, for the host's copies and the kernels'
    /// loads: both must say the same row length.
    // The generated kernels are registered, come from the build script, and say so (the
    // naga validation of every shader in tests/engine.rs covers their code).
    #[test]
    fn generated_kernels_are_registered_and_name_their_generator() {
        for stem in super::GENERATED {
            let src = super::raw(stem).unwrap();
            assert!(
                src.starts_with("// GENERATED by build/subgroup_kernels.rs"),
                "{stem}: {}",
                src.lines().next().unwrap_or("")
            );
            assert!(src.contains("@compute"), "{stem} has no entry point");
        }
        let hand_written = super::SHADERS
            .iter()
            .filter(|(stem, _)| !super::GENERATED.contains(stem))
            .filter(|(_, src)| src.contains("GENERATED by"))
            .map(|(stem, _)| *stem)
            .collect::<Vec<_>>();
        assert!(
            hand_written.is_empty(),
            "{hand_written:?} say they are generated"
        );
    }

    #[test]
    fn flat_texture_width_agrees_between_host_and_shaders() {
        let (_, src) = super::SHADERS
            .iter()
            .find(|(stem, _)| *stem == "flat_texture")
            .unwrap();
        let line = format!(
            "const FLAT_WIDTH: u32 = {}u;",
            crate::engine::device::FLAT_WIDTH
        );
        assert!(
            src.contains(&line),
            "shaders/flat_texture.wgsl does not say `{line}`"
        );
    }
}
