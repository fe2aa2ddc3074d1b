//! Small helpers shared by the commands: settings files, the host random generator, and
//! (from the engine) atomic writes and the cache directory.

use std::path::Path;

use anyhow::{Context, Result};

pub use crate::engine::files::{cache_dir, fault_point, write_atomic};

/// A small seeded generator for host-side randomness (data order, fixed latents, pool
/// subsampling): SplitMix64, so any (seed, stream) pair is reproducible everywhere.
#[derive(Clone, Debug)]
pub struct HostRng(pub u64);

impl HostRng {
    pub fn new(seed: u64, stream: u64) -> HostRng {
        let mut r = HostRng(seed ^ stream.wrapping_mul(0xD1B54A32D192ED03));
        r.next_u64();
        r
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E3779B97F4A7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Reads a settings file over `defaults`: keys the file leaves out, whole sections or
/// single fields, keep their default values, and a key that is not a setting is refused
/// with the nearest valid one suggested (a misspelt `stepz = 5` would otherwise be
/// ignored without a word). `optional` lists dotted keys that are valid although the
/// defaults leave them out (an `Option` that is `None` is not serialised).
pub fn settings_over_defaults<T>(
    text: &str,
    defaults: &T,
    optional: &[&str],
    path: &Path,
) -> Result<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let file: toml::Table = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!("{}: not valid TOML: {}", path.display(), e.message().trim())
    })?;
    let mut merged = toml::Table::try_from(defaults).context("serialising the defaults")?;
    merge_settings(&mut merged, file, "", optional)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // Parsed back from text so that a type error has a span, and through it a key.
    let text = toml::to_string(&merged).context("serialising the settings")?;
    toml::from_str(&text).map_err(|e| {
        let key = e.span().map(|s| key_at(&text, s.start)).unwrap_or_default();
        anyhow::anyhow!("{}: {key}{}", path.display(), e.message().trim())
    })
}

/// "section.key: " of the line of a TOML text that holds byte `at`, or "".
fn key_at(text: &str, at: usize) -> String {
    let before = &text[..at.min(text.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let Some((key, _)) = line.split_once('=') else {
        return String::new();
    };
    let section = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[').and_then(|l| l.strip_suffix(']')))
        .map(|s| format!("{}.", s.trim()))
        .unwrap_or_default();
    format!("{section}{}: ", key.trim())
}

fn merge_settings(
    into: &mut toml::Table,
    from: toml::Table,
    at: &str,
    optional: &[&str],
) -> Result<()> {
    for (k, v) in from {
        let key = if at.is_empty() {
            k.clone()
        } else {
            format!("{at}.{k}")
        };
        match (into.get_mut(&k), v) {
            (Some(toml::Value::Table(dst)), toml::Value::Table(src)) => {
                merge_settings(dst, src, &key, optional)?
            }
            (Some(toml::Value::Table(_)), other) => {
                anyhow::bail!(
                    "{key} is a section ([{key}]), got the {} {other}",
                    other.type_str()
                )
            }
            (Some(slot), v) => {
                // A section where a value belongs is refused here; other type errors are
                // reported by the deserialiser with the key.
                if let toml::Value::Table(_) = v {
                    anyhow::bail!("{key} is a value, not a section");
                }
                *slot = v
            }
            (None, v) if optional.contains(&key.as_str()) => {
                into.insert(k, v);
            }
            (None, _) => {
                let prefix = if at.is_empty() {
                    String::new()
                } else {
                    format!("{at}.")
                };
                let valid = into.keys().map(|c| format!("{prefix}{c}")).chain(
                    optional
                        .iter()
                        .filter(|o| o.strip_prefix(&prefix).is_some_and(|r| !r.contains('.')))
                        .map(|o| o.to_string()),
                );
                let nearest = valid
                    .map(|c| (edit_distance(&c, &key), c))
                    .min()
                    .filter(|(d, c)| *d <= 2.max(c.len() / 3));
                match nearest {
                    Some((_, c)) => anyhow::bail!("unknown setting '{key}' (did you mean '{c}'?)"),
                    None => anyhow::bail!("unknown setting '{key}'"),
                }
            }
        }
    }
    Ok(())
}

/// Levenshtein distance, for "did you mean" suggestions.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = (diag + usize::from(ca != cb)).min(row[j] + 1).min(up + 1);
            diag = up;
        }
    }
    row[b.len()]
}

/// The first setting (dotted key, in key order) where two settings tables differ, as
/// "key: OLD then, NEW now".
pub fn first_difference(a: &toml::Value, b: &toml::Value, at: &str) -> Option<String> {
    match (a, b) {
        (toml::Value::Table(x), toml::Value::Table(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            keys.into_iter().find_map(|k| {
                let path = if at.is_empty() {
                    k.clone()
                } else {
                    format!("{at}.{k}")
                };
                match (x.get(k), y.get(k)) {
                    (Some(u), Some(v)) => first_difference(u, v, &path),
                    (u, v) => Some(format!(
                        "{path}: {} then, {} now",
                        show_setting(u),
                        show_setting(v)
                    )),
                }
            })
        }
        _ if a == b => None,
        _ => Some(format!("{at}: {a} then, {b} now")),
    }
}

fn show_setting(v: Option<&toml::Value>) -> String {
    v.map_or("unset".into(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_settings_are_refused_with_the_nearest_key_and_partial_sections_take_defaults() {
        assert_eq!(super::edit_distance("stepz", "steps"), 1);
        assert_eq!(super::edit_distance("", "abc"), 3);
        let d = crate::train::TrainConfig::default();
        let p = Path::new("x.toml");
        let c: crate::train::TrainConfig =
            super::settings_over_defaults("[gan]\nz_dim = 7\n", &d, &[], p).unwrap();
        assert_eq!((c.gan.z_dim, c.gan.g_width), (7, d.gan.g_width));
        let e = super::settings_over_defaults::<crate::train::TrainConfig>(
            "[gan]\nz_dimm = 7\n",
            &d,
            &[],
            p,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("x.toml") && e.contains("did you mean 'gan.z_dim'"),
            "{e}"
        );
    }
}
