//! Shared pieces of the aioloop benchmark binaries: argument parsing, the
//! fixed-seed PRNG and the machine-readable result lines that
//! `cargo xtask bench` collects.
//!
//! Every binary runs ONE case for ONE system per process and prints lines like
//! `result case=call_soon system=aioloop value=31.2 unit=ns/op n=1000000`.

use std::time::Duration;

pub mod load;

/// A loop on `backend` (`None`: `EventLoop::new()`, the default backend,
/// honouring `AIOLOOP_BACKEND`). Fails when the loop runs another backend
/// than the one asked for (an unavailable io_uring falls back to epoll), so
/// that no result is reported under the wrong name.
pub fn aioloop_loop(
    backend: Option<loop_core::Backend>,
) -> Result<loop_core::EventLoop, Box<dyn std::error::Error>> {
    let Some(b) = backend else {
        return Ok(loop_core::EventLoop::new()?);
    };
    let lp = loop_core::EventLoop::builder().backend(b).build()?;
    if lp.backend() != b {
        return Err(format!(
            "the {b:?} backend is unavailable here (got {:?})",
            lp.backend()
        )
        .into());
    }
    Ok(lp)
}

/// The backend an aioloop system name asks for: `...-uring` is io_uring,
/// anything else the default.
pub fn backend_of_system(system: &str) -> Option<loop_core::Backend> {
    system
        .ends_with("-uring")
        .then_some(loop_core::Backend::Uring)
}

/// The seed of every benchmark's PRNG, so that all systems see the same delays.
pub const SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// A xorshift64* generator: tiny, fast, deterministic.
#[derive(Debug, Clone)]
pub struct XorShift(u64);

impl XorShift {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Self {
        XorShift(if seed == 0 { SEED } else { seed })
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A duration uniform in `[lo, hi]` (nanosecond resolution).
    #[inline]
    pub fn duration_between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let lo_ns = lo.as_nanos() as u64;
        let span = (hi.as_nanos() as u64).saturating_sub(lo_ns) + 1;
        Duration::from_nanos(lo_ns + self.next_u64() % span)
    }
}

/// Command-line arguments common to the benchmark binaries.
#[derive(Debug, Clone)]
pub struct Args {
    /// `--system NAME`.
    pub system: String,
    /// `--case NAME`.
    pub case: String,
    /// `--quick`: 10x smaller workloads.
    pub quick: bool,
    /// `--n N`: exact operation count, overriding the default (and `--quick`).
    pub n: Option<u64>,
}

impl Args {
    /// Parses `--system S --case C [--quick] [--n N]`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let (mut system, mut case, mut quick, mut n) = (None, None, false, None);
        let mut it = args.into_iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--system" => system = Some(it.next().ok_or("--system needs a value")?),
                "--case" => case = Some(it.next().ok_or("--case needs a value")?),
                "--quick" => quick = true,
                "--n" => {
                    let v = it.next().ok_or("--n needs a value")?;
                    n = Some(v.parse().map_err(|_| format!("bad --n value `{v}`"))?);
                }
                other => return Err(format!("unknown argument `{other}`")),
            }
        }
        Ok(Args {
            system: system.ok_or("--system is required")?,
            case: case.ok_or("--case is required")?,
            quick,
            n,
        })
    }

    /// The operation count: `--n`, else `full` (divided by 10 with `--quick`).
    pub fn count(&self, full: u64) -> u64 {
        match self.n {
            Some(n) => n,
            None if self.quick => full / 10,
            None => full,
        }
    }
}

/// Prints one result line on stdout.
pub fn report(case: &str, system: &str, value: f64, unit: &str, n: u64) {
    println!("result case={case} system={system} value={value:.3} unit={unit} n={n}");
}

/// Nanoseconds per operation.
pub fn ns_per_op(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_nanos() as f64 / n.max(1) as f64
}

/// A duration in (fractional) milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_is_deterministic_and_in_range() {
        let (mut a, mut b) = (XorShift::new(SEED), XorShift::new(SEED));
        let (lo, hi) = (Duration::from_secs(1), Duration::from_secs(10));
        for _ in 0..10_000 {
            let d = a.duration_between(lo, hi);
            assert_eq!(d, b.duration_between(lo, hi));
            assert!(d >= lo && d <= hi);
        }
    }

    #[test]
    fn parses_args() {
        let args = ["--system", "tokio", "--case", "chain", "--quick"].map(String::from);
        let a = Args::parse(args).unwrap();
        assert_eq!(
            (a.system.as_str(), a.case.as_str(), a.quick),
            ("tokio", "chain", true)
        );
        assert_eq!(a.count(1_000_000), 100_000);
        let a =
            Args::parse(["--system", "x", "--case", "y", "--n", "0"].map(String::from)).unwrap();
        assert_eq!(a.count(1_000_000), 0);
        assert!(Args::parse(["--case", "y"].map(String::from)).is_err());
    }
}
