//! Medians and spread of repeated measurements.

/// A set of repeated measurements of one quantity, summarised.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// The summary of `samples`; `None` when there are none or one is not
    /// a finite number (a failed run must not turn into a figure).
    pub fn of(samples: &[f64]) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|s| !s.is_finite()) {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let middle = sorted.len() / 2;
        let median = if sorted.len() % 2 == 1 { sorted[middle] } else { (sorted[middle - 1] + sorted[middle]) / 2.0 };
        Some(Self { count: sorted.len(), median, min: sorted[0], max: sorted[sorted.len() - 1] })
    }
}

/// How many times `toro` is better than `linux` for a lower-is-better
/// quantity: Linux's median over Toro's. `None` if Toro's is zero.
pub fn ratio(toro: &Summary, linux: &Summary) -> Option<f64> {
    (toro.median > 0.0).then(|| linux.median / toro.median)
}

/// The smallest value in `low..=high` for which `works` holds, assuming it
/// holds for every value above one that works. `works(high)` must hold;
/// `low` is tried too, so a guest that needs no more than `low` reports
/// `low`. Returns `None` if `works(high)` does not hold.
pub fn smallest_working(
    low: u32,
    high: u32,
    works: &mut dyn FnMut(u32) -> anyhow::Result<bool>,
) -> anyhow::Result<Option<u32>> {
    assert!(low <= high);
    if !works(high)? {
        return Ok(None);
    }
    if low == high || works(low)? {
        return Ok(Some(low));
    }
    // Invariant: works(high) holds, works(low) does not.
    let (mut failing, mut working) = (low, high);
    while working - failing > 1 {
        let middle = failing + (working - failing) / 2;
        if works(middle)? {
            working = middle;
        } else {
            failing = middle;
        }
    }
    Ok(Some(working))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&[5.0, 1.0, 3.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max, odd.count), (3.0, 1.0, 5.0, 3));
        let even = Summary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        let one = Summary::of(&[7.0]).unwrap();
        assert_eq!((one.median, one.min, one.max), (7.0, 7.0, 7.0));
    }

    #[test]
    fn no_summary_of_nothing_or_of_failures() {
        assert_eq!(Summary::of(&[]), None);
        assert_eq!(Summary::of(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn ratio_is_linux_over_toro() {
        let toro = Summary::of(&[50.0]).unwrap();
        let linux = Summary::of(&[3400.0]).unwrap();
        assert_eq!(ratio(&toro, &linux), Some(68.0));
        assert_eq!(ratio(&Summary::of(&[0.0]).unwrap(), &linux), None);
    }

    #[test]
    fn bisection_finds_the_threshold() {
        for threshold in [1, 2, 7, 94, 127, 128] {
            let mut probes = 0;
            let mut works = |m: u32| {
                probes += 1;
                Ok(m >= threshold)
            };
            assert_eq!(smallest_working(1, 128, &mut works).unwrap(), Some(threshold));
            assert!(probes <= 10, "{probes} probes for {threshold}");
        }
        assert_eq!(smallest_working(1, 128, &mut |_| Ok(false)).unwrap(), None);
        assert_eq!(smallest_working(16, 16, &mut |_| Ok(true)).unwrap(), Some(16));
    }
}
