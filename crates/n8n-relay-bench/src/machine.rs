//! CPU time the whole machine spent busy, from /proc/stat: the cost of a round of
//! work summed over every process (writers, Postgres backends, the relay, the sink).
//! On a shared host the rate a round reaches moves with the neighbours' load, while
//! the CPU it needs per row moves much less, so this is the steadier figure of the two.

use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::relay::clock_ticks;

/// Busy CPU time of all cores since boot: user, nice, system, irq and softirq (not
/// idle, iowait, or steal, which is time another guest of the host had).
pub fn busy_time() -> Result<Duration> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_busy(&stat, clock_ticks())
}

fn parse_busy(stat: &str, ticks_per_second: u64) -> Result<Duration> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no aggregate cpu line in /proc/stat")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .context("malformed cpu line in /proc/stat")?;
    // user nice system idle iowait irq softirq steal ...
    let busy = match fields.as_slice() {
        [user, nice, system, _idle, _iowait, irq, softirq, ..] => {
            user + nice + system + irq + softirq
        }
        _ => bail!("too few fields on the cpu line of /proc/stat"),
    };
    Ok(Duration::from_secs_f64(
        busy as f64 / ticks_per_second as f64,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_time_leaves_out_idle_iowait_and_steal() {
        let stat = "cpu  100 20 30 5000 70 4 6 900 0 0\ncpu0 50 10 15 2500 35 2 3 450 0 0\n";
        assert_eq!(parse_busy(stat, 100).unwrap(), Duration::from_secs_f64(1.6));
    }

    #[test]
    fn this_machines_busy_time_is_readable() {
        assert!(busy_time().is_ok());
    }
}
