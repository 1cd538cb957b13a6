//! Key choice for the load generator: a seeded PRNG, and uniform or zipfian choosers over
//! `0..key_space`. Deterministic for a seed, so two runs ask for the same keys.

/// SplitMix64: small, fast, and good enough to pick keys; not for anything secret.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound` (`bound` > 0). The modulo bias is below 2^-40 for any key space
    /// this tool is given, far under what a benchmark can notice.
    pub fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0, "Rng::below needs a positive bound");
        self.next_u64() % bound
    }
}

/// How keys are drawn from the key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Distribution {
    Uniform,
    /// YCSB's zipfian with constant 0.99: key 0 is the hottest, then 1, and so on.
    Zipfian,
}

impl Distribution {
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Uniform => "uniform",
            Distribution::Zipfian => "zipfian",
        }
    }
}

/// YCSB's zipfian constant.
pub const ZIPFIAN_THETA: f64 = 0.99;

/// Draws key indexes in `0..n`. Cheap to clone: each client thread owns one.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    Uniform { n: u64 },
    Zipfian(Zipfian),
}

impl KeyChooser {
    pub fn new(distribution: Distribution, n: u64) -> KeyChooser {
        assert!(n > 0, "a key space needs at least one key");
        match distribution {
            Distribution::Uniform => KeyChooser::Uniform { n },
            Distribution::Zipfian => KeyChooser::Zipfian(Zipfian::new(n, ZIPFIAN_THETA)),
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { n } => rng.below(*n),
            KeyChooser::Zipfian(zipfian) => zipfian.next(rng),
        }
    }
}

/// The generator of Gray et al., "Quickly Generating Billion-Record Synthetic Databases"
/// (SIGMOD 1994), as YCSB's `ZipfianGenerator` uses it: O(n) set-up, O(1) per draw.
#[derive(Debug, Clone)]
pub struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(n: u64, theta: f64) -> Zipfian {
        assert!(n > 0, "a zipfian needs at least one item");
        assert!(theta > 0.0 && theta < 1.0, "theta must be in (0, 1)");
        let zeta_n = zeta(n, theta);
        let zeta_2 = zeta(2.min(n), theta);
        let alpha = 1.0 / (1.0 - theta);
        let eta = if n > 1 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n)
        } else {
            0.0
        };
        Zipfian {
            n,
            theta,
            alpha,
            zeta_n,
            eta,
        }
    }

    pub fn next(&self, rng: &mut Rng) -> u64 {
        let u = rng.next_f64();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1.min(self.n - 1);
        }
        let index = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        index.min(self.n - 1)
    }
}

fn zeta(n: u64, theta: f64) -> f64 {
    (1..=n).map(|i| 1.0 / (i as f64).powf(theta)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_per_seed() {
        let (mut a, mut b, mut c) = (Rng::new(7), Rng::new(7), Rng::new(8));
        let from_a: Vec<u64> = (0..5).map(|_| a.next_u64()).collect();
        let from_b: Vec<u64> = (0..5).map(|_| b.next_u64()).collect();
        let from_c: Vec<u64> = (0..5).map(|_| c.next_u64()).collect();
        assert_eq!(from_a, from_b);
        assert_ne!(from_a, from_c);
    }

    #[test]
    fn unit_floats_stay_in_range() {
        let mut rng = Rng::new(1);
        for _ in 0..100_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }

    #[test]
    fn zipfian_stays_in_range_and_favours_low_keys() {
        for n in [1, 2, 3, 10, 1_000, 100_000] {
            let chooser = KeyChooser::new(Distribution::Zipfian, n);
            let mut rng = Rng::new(n);
            let mut counts = vec![0u64; n.min(10) as usize];
            for _ in 0..50_000 {
                let key = chooser.next(&mut rng);
                assert!(key < n, "key {key} outside 0..{n}");
                if let Some(count) = counts.get_mut(key as usize) {
                    *count += 1;
                }
            }
            if n >= 3 {
                assert!(counts[0] > counts[1], "n={n}: {counts:?}");
                assert!(counts[1] > counts[2], "n={n}: {counts:?}");
            }
        }
    }

    #[test]
    fn zipfian_hottest_key_has_its_expected_share() {
        // P(key 0) = 1 / zeta(n, theta); for n = 1000 that is about 13.4 %.
        let n = 1_000;
        let chooser = KeyChooser::new(Distribution::Zipfian, n);
        let mut rng = Rng::new(42);
        let draws = 200_000;
        let zeros = (0..draws).filter(|_| chooser.next(&mut rng) == 0).count();
        let share = zeros as f64 / draws as f64;
        let expected = 1.0 / zeta(n, ZIPFIAN_THETA);
        assert!((share - expected).abs() < 0.01, "{share} vs {expected}");
    }

    #[test]
    fn uniform_covers_the_key_space_evenly() {
        let chooser = KeyChooser::new(Distribution::Uniform, 10);
        let mut rng = Rng::new(3);
        let mut counts = [0u64; 10];
        for _ in 0..100_000 {
            counts[chooser.next(&mut rng) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }
}
