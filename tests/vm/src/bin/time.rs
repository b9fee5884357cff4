//! `Instant` arithmetic like std's, and the wall clock (`SystemTime`) from
//! the CMOS RTC where the machine has one (q35), clearly absent where not
//! (microvm with `rtc=off`).

#![no_std]
#![no_main]

use core::time::Duration;

use toro::println;
use toro::thread;
use toro::time::{wall_clock, Instant, NoWallClock, SystemTime, WallClock, UNIX_EPOCH};
use vm_tests::check;

/// 2024-01-01 00:00:00 UTC: any RTC reading that is right is later.
const EARLIEST_PLAUSIBLE: u64 = 1_704_067_200;

#[toro::main]
fn main() -> i32 {
    let mut ok = true;
    let gap = Duration::from_millis(10);

    let before = Instant::now();
    thread::sleep(gap);
    let after = Instant::now();
    ok &= check(after.checked_duration_since(before).is_some_and(|d| d >= gap), "checked_duration_since");
    ok &= check(before.checked_duration_since(after).is_none(), "checked_duration_since of a later instant");
    ok &= check(before.saturating_duration_since(after) == Duration::ZERO, "saturating_duration_since");
    ok &= check(before.duration_since(after) == Duration::ZERO, "duration_since saturates like std");
    ok &= check(before.elapsed() >= gap, "elapsed");
    ok &= check(after - before >= gap, "Instant - Instant");
    ok &=
        check(before.checked_add(gap).and_then(|i| i.checked_sub(gap)) == Some(before), "checked_add then checked_sub");
    ok &= check(after.checked_sub(Duration::from_secs(u64::MAX / 4)).is_none(), "checked_sub before zero");
    ok &= check(after.checked_add(Duration::MAX).is_none(), "checked_add overflow");
    ok &= check(after - gap >= before && before + gap <= after, "Instant -/+ Duration");
    let mut moving = before;
    moving += gap;
    moving -= gap;
    ok &= check(moving == before, "AddAssign / SubAssign");
    println!("instant: ok");

    match wall_clock() {
        Some(WallClock::Rtc) => {
            let now = SystemTime::now();
            let seconds = now.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
            println!("wall clock: rtc, unix time {seconds}");
            ok &= check(seconds >= EARLIEST_PLAUSIBLE, "the RTC date is plausible");
            thread::sleep(Duration::from_millis(20));
            let later = SystemTime::now();
            ok &= check(now.elapsed().is_ok_and(|d| d >= Duration::from_millis(20)), "SystemTime::elapsed");
            let error = now.duration_since(later).expect_err("earlier minus later");
            ok &= check(error.duration() >= Duration::from_millis(20), "SystemTimeError::duration");
            ok &= check(now + Duration::from_secs(1) > now && (now - Duration::from_secs(1)) < now, "ops");
            ok &= check(SystemTime::UNIX_EPOCH.checked_sub(Duration::from_secs(1)).is_none(), "no times before 1970");
        }
        None => {
            println!("wall clock: absent");
            ok &= check(SystemTime::try_now() == Err(NoWallClock), "try_now says there is none");
        }
    }

    if ok {
        println!("time: all checks passed");
        0
    } else {
        1
    }
}
