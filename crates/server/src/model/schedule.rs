//! Cloudflare's published DCV retry schedule.

/// Seconds to wait after check number `n` (0-based) before the next one:
/// `min(floor(60 * 1.05^n), 14400)` for n < 10, `min(floor(60 * 1.15^n), 14400)` after.
///
/// So 60, 63, 66, 69, 72, 76, 80, 84, 88, 93, then 242 at n = 10 and the 4 h cap from
/// n = 40: ten checks take about 12.5 minutes, 76 checks about 7.2 days.
pub fn wait_before_next_check(n: u32) -> i64 {
    let base: f64 = if n < 10 { 1.05 } else { 1.15 };
    let wait = (60.0 * base.powi(n.min(200) as i32)).floor();
    (wait as i64).min(14_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_published_figures() {
        let first: Vec<i64> = (0..10).map(wait_before_next_check).collect();
        assert_eq!(first, [60, 63, 66, 69, 72, 76, 80, 84, 88, 93]);
        assert_eq!(wait_before_next_check(10), 242);
        assert_eq!(
            wait_before_next_check(39),
            14_400.min((60.0 * 1.15f64.powi(39)) as i64)
        );
        assert_eq!(wait_before_next_check(40), 14_400);
        assert_eq!(wait_before_next_check(u32::MAX), 14_400);
        let ten: i64 = first.iter().sum();
        assert!(
            (740..=760).contains(&ten),
            "ten checks take about 12.5 minutes: {ten}"
        );
        let total: i64 = (0..75).map(wait_before_next_check).sum();
        let days = total as f64 / 86_400.0;
        assert!(
            (7.0..7.4).contains(&days),
            "76 checks take about 7.2 days: {days}"
        );
    }
}
