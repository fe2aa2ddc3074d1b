//! The acquisition scenario: which training images start acquired, which form the pool of
//! unseen images, and how that pool is skewed (long tail) or made redundant (near-duplicate
//! copies). The held-out evaluation set is the dataset's test split, never touched here.

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::util::HostRng;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scenario {
    /// Size of the initial acquired set.
    pub initial: usize,
    /// Draw the initial set only from these classes (all classes when empty).
    pub initial_classes: Vec<usize>,
    /// Keep only fraction F of class C in the pool: (C, F) pairs.
    pub pool_class_fraction: Vec<(usize, f64)>,
    /// Near-duplicate augmented copies added per pool image.
    pub pool_duplicates: usize,
}

impl Scenario {
    /// Parses `C=F,C=F` for --pool-class-fraction.
    pub fn parse_fractions(s: &str) -> Result<Vec<(usize, f64)>> {
        let mut out = vec![];
        for part in s.split(',').filter(|p| !p.trim().is_empty()) {
            let Some((c, f)) = part.split_once('=') else {
                bail!("--pool-class-fraction: '{part}' is not CLASS=FRACTION");
            };
            let c: usize = c.trim().parse().map_err(|_| {
                anyhow::anyhow!("--pool-class-fraction: '{c}' is not a class index")
            })?;
            let f: f64 = f
                .trim()
                .parse()
                .map_err(|_| anyhow::anyhow!("--pool-class-fraction: '{f}' is not a number"))?;
            if !(0.0..=1.0).contains(&f) {
                bail!("--pool-class-fraction: fraction {f} for class {c} is outside [0, 1]");
            }
            out.push((c, f));
        }
        Ok(out)
    }

    /// The named scenarios of EXPERIMENTS.md: `balanced`, `long-tail` (classes 0-4 of the
    /// pool at 1/20 of their frequency) and `redundant` (3 near-duplicates per pool image).
    pub fn preset(name: &str, initial: usize) -> Result<Scenario> {
        let mut s = Scenario {
            initial,
            ..Default::default()
        };
        match name {
            "balanced" => {}
            "long-tail" => s.pool_class_fraction = (0..5).map(|c| (c, 0.05)).collect(),
            "redundant" => s.pool_duplicates = 3,
            other => bail!("--scenario {other}: expected balanced, long-tail or redundant"),
        }
        Ok(s)
    }
}

/// One pool item: a row of `Pool::data` that came from training image `source`.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Item {
    pub source: usize,
    /// 0 for the original image, k for its k-th near-duplicate.
    pub copy: u8,
}

pub struct Pool {
    /// Every image an item can refer to, row i for item i.
    pub data: Dataset,
    pub items: Vec<Item>,
    /// Items acquired before the first round.
    pub initial: Vec<usize>,
    /// Items of the pool of unseen images.
    pub unseen: Vec<usize>,
}

/// A copy of `img` shifted by up to 2 pixels with mild pixel noise: a near-duplicate.
fn augment(img: &[u8], c: usize, h: usize, w: usize, rng: &mut HostRng) -> Vec<u8> {
    let dy = rng.below(5) as isize - 2;
    let dx = rng.below(5) as isize - 2;
    let mut out = vec![0u8; img.len()];
    for ch in 0..c {
        for y in 0..h as isize {
            for x in 0..w as isize {
                let (sy, sx) = (y - dy, x - dx);
                let v = if sy >= 0 && sx >= 0 && sy < h as isize && sx < w as isize {
                    img[(ch * h + sy as usize) * w + sx as usize] as f64
                } else {
                    0.0
                };
                let noisy = v + 6.0 * rng.normal();
                out[(ch * h + y as usize) * w + x as usize] = noisy.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    out
}

impl Pool {
    /// Builds the scenario from the training split, deterministically from `seed`.
    pub fn build(train: &Dataset, sc: &Scenario, seed: u64) -> Result<Pool> {
        check_scenario(train, sc)?;
        let mut order: Vec<usize> = (0..train.n).collect();
        HostRng::new(seed, 0x9001).shuffle(&mut order);
        let initial_src = initial_sources(train, sc, &order)?;
        let is_initial: std::collections::HashSet<usize> = initial_src.iter().copied().collect();
        let pool_src = pool_sources(train, sc, &order, &is_initial);
        // Rows: the initial images, the pool's originals, then their copies.
        let mut items: Vec<Item> = initial_src
            .iter()
            .map(|&s| Item { source: s, copy: 0 })
            .collect();
        items.extend(pool_src.iter().map(|&s| Item { source: s, copy: 0 }));
        let mut rng = HostRng::new(seed, 0xd0b1e);
        let len = train.image_len();
        let mut pixels =
            Vec::with_capacity((items.len() + pool_src.len() * sc.pool_duplicates) * len);
        for it in &items {
            pixels.extend_from_slice(train.image(it.source));
        }
        for k in 1..=sc.pool_duplicates {
            for &s in &pool_src {
                pixels.extend(augment(
                    train.image(s),
                    train.channels,
                    train.height,
                    train.width,
                    &mut rng,
                ));
                items.push(Item {
                    source: s,
                    copy: k as u8,
                });
            }
        }
        let labels = train.labels.as_ref().map(|_| {
            items
                .iter()
                .map(|it| train.label(it.source).unwrap_or(0) as u8)
                .collect()
        });
        let data = Dataset {
            name: format!("{} (scenario pool)", train.name),
            n: items.len(),
            channels: train.channels,
            height: train.height,
            width: train.width,
            pixels,
            labels,
            num_classes: train.num_classes,
            class_names: train.class_names.clone(),
        };
        let initial = (0..initial_src.len()).collect();
        let unseen = (initial_src.len()..items.len()).collect();
        Ok(Pool {
            data,
            items,
            initial,
            unseen,
        })
    }

    /// Class histogram of some items (empty without labels).
    pub fn histogram(&self, items: &[usize]) -> Vec<usize> {
        self.data.class_histogram(items)
    }

    /// Every image the pool holds (the initial set included) without labels, in a
    /// canonical order (by source image, then copy): what the acquisition encoder trains
    /// on. The same set of images gives the same dataset, whatever order a seed put it in,
    /// so the encoder's cache serves every seed of a scenario that keeps the same images.
    pub fn unlabeled_images(&self) -> Dataset {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        order.sort_by_key(|&i| (self.items[i].source, self.items[i].copy));
        let mut ds = self.data.subset(&order);
        ds.labels = None;
        ds.num_classes = 0;
        ds.class_names.clear();
        ds.name = format!("{} (pool images, unlabeled)", self.data.name);
        ds
    }
}

/// Refuses an initial set as large as the data, and class flags on unlabelled data or
/// naming classes that do not exist.
fn check_scenario(train: &Dataset, sc: &Scenario) -> Result<()> {
    if sc.initial == 0 {
        bail!("--initial must be at least 1");
    }
    if sc.initial >= train.n {
        bail!(
            "--initial {} is not smaller than the {} training images",
            sc.initial,
            train.n
        );
    }
    let classes = train.num_classes;
    for &c in sc
        .initial_classes
        .iter()
        .chain(sc.pool_class_fraction.iter().map(|(c, _)| c))
    {
        if classes == 0 {
            bail!("class-based scenario flags need a labelled dataset");
        }
        if c >= classes {
            bail!(
                "class {c} does not exist: {} has classes 0..{}",
                train.name,
                classes - 1
            );
        }
    }
    Ok(())
}

/// The initial set: the first `sc.initial` images of the seeded order (of the allowed
/// classes, with `initial_classes`).
fn initial_sources(train: &Dataset, sc: &Scenario, order: &[usize]) -> Result<Vec<usize>> {
    let allowed = |i: usize| {
        sc.initial_classes.is_empty()
            || train
                .label(i)
                .is_some_and(|l| sc.initial_classes.contains(&l))
    };
    let initial_src: Vec<usize> = order
        .iter()
        .copied()
        .filter(|&i| allowed(i))
        .take(sc.initial)
        .collect();
    if initial_src.len() < sc.initial {
        bail!(
            "--initial-classes allow only {} images, fewer than --initial {}",
            initial_src.len(),
            sc.initial
        );
    }
    Ok(initial_src)
}

/// The pool's originals in the seeded order: every image outside the initial set, but of
/// a class with a `pool_class_fraction` only the first ceil(F * count).
fn pool_sources(
    train: &Dataset,
    sc: &Scenario,
    order: &[usize],
    is_initial: &std::collections::HashSet<usize>,
) -> Vec<usize> {
    let classes = train.num_classes;
    // The pool keeps a fraction of some classes: the first ceil(F * count) in the order.
    let mut seen_per_class = vec![0usize; classes.max(1)];
    let total_per_class = train.class_histogram(
        &order
            .iter()
            .copied()
            .filter(|i| !is_initial.contains(i))
            .collect::<Vec<_>>(),
    );
    let mut pool_src = vec![];
    for &i in order.iter().filter(|i| !is_initial.contains(i)) {
        let keep = match (train.label(i), classes) {
            (Some(l), k) if k > 0 => {
                let frac = sc
                    .pool_class_fraction
                    .iter()
                    .find(|(c, _)| *c == l)
                    .map(|(_, f)| *f)
                    .unwrap_or(1.0);
                let quota = (frac * total_per_class[l] as f64).ceil() as usize;
                seen_per_class[l] += 1;
                seen_per_class[l] <= quota
            }
            _ => true,
        };
        if keep {
            pool_src.push(i);
        }
    }
    pool_src
}
