//! The CMOS real-time clock's date registers (MC146818 and compatibles, as
//! QEMU's q35 and pc machines emulate them) turned into seconds since the
//! Unix epoch, with the BCD, 12-hour and century handling, and civil dates
//! to days since 1970-01-01.
//!
//! Register numbers and bits are those of the MC146818A data sheet
//! ("Address map" and "Register B"); the century register is the one ACPI
//! names in the FADT `CENTURY` field (0x32 on QEMU and most PCs).
//!
//! The kernel reads the registers through ports 0x70/0x71 (`arch`); this
//! module only decodes what it read, so it is tested on the host, including
//! the values an absent RTC gives (every port read returns 0xff).

/// Register 0x00: seconds.
pub const SECONDS: u8 = 0x00;
/// Register 0x02: minutes.
pub const MINUTES: u8 = 0x02;
/// Register 0x04: hours (bit 7: PM in 12-hour mode).
pub const HOURS: u8 = 0x04;
/// Register 0x07: day of the month.
pub const DAY_OF_MONTH: u8 = 0x07;
/// Register 0x08: month.
pub const MONTH: u8 = 0x08;
/// Register 0x09: year within the century.
pub const YEAR: u8 = 0x09;
/// Register A (0x0a); bit 7 is UIP, "update in progress".
pub const STATUS_A: u8 = 0x0a;
/// Register B (0x0b): data mode and hour format.
pub const STATUS_B: u8 = 0x0b;
/// The century register QEMU and most PCs have (ACPI FADT `CENTURY`).
pub const CENTURY: u8 = 0x32;

/// Register A, bit 7: the RTC is updating its registers (they may be
/// inconsistent until it clears, at most 244 us later by the data sheet).
pub const UPDATE_IN_PROGRESS: u8 = 1 << 7;
/// Register B, bit 2 (DM): the date registers are binary, not BCD.
pub const BINARY_MODE: u8 = 1 << 2;
/// Register B, bit 1: the hours register counts 0-23, not 1-12 with PM.
pub const HOURS_24: u8 = 1 << 1;
/// Hours register bit 7 in 12-hour mode: afternoon.
pub const PM: u8 = 1 << 7;

/// The date registers as read, raw (BCD or binary as register B says).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registers {
    /// Register 0x00.
    pub seconds: u8,
    /// Register 0x02.
    pub minutes: u8,
    /// Register 0x04 (bit 7: PM in 12-hour mode).
    pub hours: u8,
    /// Register 0x07, day of the month.
    pub day: u8,
    /// Register 0x08.
    pub month: u8,
    /// Register 0x09, year within the century.
    pub year: u8,
    /// The century register, if the platform has one.
    pub century: Option<u8>,
    /// Register B: data mode and hour format.
    pub status_b: u8,
}

/// Why the registers do not hold a date.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RtcError {
    /// A BCD register holds a digit above 9 (every register reads 0xff
    /// where there is no RTC).
    NotBcd {
        /// The register number.
        register: u8,
        /// What it held.
        value: u8,
    },
    /// A field is out of its range (e.g. month 13, day 31 in April).
    OutOfRange {
        /// The register number.
        register: u8,
        /// Its decoded value.
        value: u8,
    },
}

impl core::fmt::Display for RtcError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotBcd { register, value } => write!(f, "RTC register {register:#04x} holds {value:#04x}, not BCD"),
            Self::OutOfRange { register, value } => {
                write!(f, "RTC register {register:#04x} holds {value}, out of range")
            }
        }
    }
}

fn from_bcd(register: u8, value: u8) -> Result<u8, RtcError> {
    let (high, low) = (value >> 4, value & 0x0f);
    if high > 9 || low > 9 {
        return Err(RtcError::NotBcd { register, value });
    }
    Ok(high * 10 + low)
}

fn in_range(register: u8, value: u8, low: u8, high: u8) -> Result<u8, RtcError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(RtcError::OutOfRange { register, value })
    }
}

/// Whether `year` is a leap year in the Gregorian calendar.
pub fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1-12) of `year`.
pub fn days_in_month(year: u32, month: u8) -> u8 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to `year-month-day` (proleptic Gregorian; `month`
/// 1-12, `day` 1-31; years from 1970). H. Hinnant's `days_from_civil`.
pub fn days_since_epoch(year: u32, month: u8, day: u8) -> u64 {
    let year = if month <= 2 { year - 1 } else { year } as u64;
    let era = year / 400;
    let year_of_era = year - era * 400;
    let month = month as u64;
    let day_of_year = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day as u64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

impl Registers {
    /// Seconds since 1970-01-01 00:00:00 UTC (the RTC is taken to run in
    /// UTC, as QEMU's does by default). Without a century register, years
    /// 70-99 are 19xx and 00-69 are 20xx.
    pub fn unix_seconds(&self) -> Result<u64, RtcError> {
        let binary = self.status_b & BINARY_MODE != 0;
        let decode = |register: u8, value: u8| if binary { Ok(value) } else { from_bcd(register, value) };
        let pm = self.status_b & HOURS_24 == 0 && self.hours & PM != 0;
        let seconds = in_range(SECONDS, decode(SECONDS, self.seconds)?, 0, 59)?;
        let minutes = in_range(MINUTES, decode(MINUTES, self.minutes)?, 0, 59)?;
        let mut hours = decode(HOURS, self.hours & !PM)?;
        if self.status_b & HOURS_24 == 0 {
            // 12-hour mode: 12 AM is 0h, 12 PM is 12h.
            hours = in_range(HOURS, hours, 1, 12)? % 12 + if pm { 12 } else { 0 };
        }
        let hours = in_range(HOURS, hours, 0, 23)?;
        let month = in_range(MONTH, decode(MONTH, self.month)?, 1, 12)?;
        let year_in_century = in_range(YEAR, decode(YEAR, self.year)?, 0, 99)?;
        let year = match self.century {
            Some(century) => {
                let century = in_range(CENTURY, decode(CENTURY, century)?, 19, 99)?;
                century as u32 * 100 + year_in_century as u32
            }
            None if year_in_century >= 70 => 1900 + year_in_century as u32,
            None => 2000 + year_in_century as u32,
        };
        if year < 1970 {
            return Err(RtcError::OutOfRange { register: YEAR, value: year_in_century });
        }
        let day = in_range(DAY_OF_MONTH, decode(DAY_OF_MONTH, self.day)?, 1, days_in_month(year, month))?;
        let days = days_since_epoch(year, month, day);
        Ok(days * 86_400 + hours as u64 * 3600 + minutes as u64 * 60 + seconds as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bcd(value: u8) -> u8 {
        (value / 10) << 4 | (value % 10)
    }

    /// 2026-12-01 20:15:42 in BCD, 24-hour mode (QEMU's default).
    fn sample() -> Registers {
        Registers {
            seconds: bcd(42),
            minutes: bcd(15),
            hours: bcd(20),
            day: bcd(1),
            month: bcd(12),
            year: bcd(26),
            century: Some(bcd(20)),
            status_b: HOURS_24,
        }
    }

    #[test]
    fn bcd_24_hour() {
        // date -u -d '2026-12-01 20:15:42' +%s
        assert_eq!(sample().unix_seconds(), Ok(1_796_156_142));
    }

    #[test]
    fn binary_mode() {
        let registers = Registers {
            seconds: 42,
            minutes: 15,
            hours: 20,
            day: 1,
            month: 12,
            year: 26,
            century: Some(20),
            status_b: HOURS_24 | BINARY_MODE,
        };
        assert_eq!(registers.unix_seconds(), Ok(1_796_156_142));
    }

    #[test]
    fn twelve_hour_mode() {
        let pm = Registers { hours: bcd(8) | PM, status_b: 0, ..sample() };
        assert_eq!(pm.unix_seconds(), Ok(1_796_156_142));
        let midnight = Registers { hours: bcd(12), status_b: 0, ..sample() };
        assert_eq!(midnight.unix_seconds(), Ok(1_796_156_142 - 20 * 3600));
        let noon = Registers { hours: bcd(12) | PM, status_b: 0, ..sample() };
        assert_eq!(noon.unix_seconds(), Ok(1_796_156_142 - 8 * 3600));
        let binary_pm = Registers { hours: 8 | PM, status_b: BINARY_MODE, ..sample() };
        assert!(binary_pm.unix_seconds().is_err(), "other fields are BCD in this sample");
    }

    #[test]
    fn without_century_register() {
        assert_eq!(Registers { century: None, ..sample() }.unix_seconds(), Ok(1_796_156_142));
        let seventies = Registers { century: None, year: bcd(70), month: bcd(1), day: bcd(1), ..sample() };
        assert_eq!(seventies.unix_seconds(), Ok(20 * 3600 + 15 * 60 + 42));
    }

    #[test]
    fn absent_rtc_reads_all_ones() {
        let absent = Registers {
            seconds: 0xff,
            minutes: 0xff,
            hours: 0xff,
            day: 0xff,
            month: 0xff,
            year: 0xff,
            century: Some(0xff),
            status_b: 0xff,
        };
        // Binary mode (bit 2 set) but 255 seconds.
        assert_eq!(absent.unix_seconds(), Err(RtcError::OutOfRange { register: SECONDS, value: 255 }));
        let absent_bcd = Registers { status_b: HOURS_24, ..absent };
        assert_eq!(absent_bcd.unix_seconds(), Err(RtcError::NotBcd { register: SECONDS, value: 0xff }));
    }

    #[test]
    fn rejects_impossible_dates() {
        assert!(Registers { month: bcd(13), ..sample() }.unix_seconds().is_err());
        assert!(Registers { month: bcd(4), day: bcd(31), ..sample() }.unix_seconds().is_err());
        assert!(Registers { month: bcd(2), day: bcd(29), year: bcd(25), ..sample() }.unix_seconds().is_err());
        assert!(Registers { month: bcd(2), day: bcd(29), year: bcd(24), ..sample() }.unix_seconds().is_ok());
        assert!(Registers { minutes: bcd(60), ..sample() }.unix_seconds().is_err());
        assert!(Registers { hours: bcd(24), ..sample() }.unix_seconds().is_err());
        assert!(Registers { seconds: 0x1a, ..sample() }.unix_seconds().is_err());
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_since_epoch(1970, 1, 1), 0);
        assert_eq!(days_since_epoch(2000, 3, 1), 11_017);
        assert_eq!(days_since_epoch(2026, 12, 1), 20_788);
        assert!(is_leap_year(2000) && !is_leap_year(1900) && is_leap_year(2024));
    }

    proptest::proptest! {
        #[test]
        fn never_panics(
            seconds: u8, minutes: u8, hours: u8, day: u8, month: u8, year: u8,
            century: Option<u8>, status_b: u8,
        ) {
            let _ = Registers { seconds, minutes, hours, day, month, year, century, status_b }.unix_seconds();
        }

        #[test]
        fn consecutive_days_are_one_apart(days in 0u64..100_000) {
            // Walk from the epoch by months to check against a day count.
            let mut remaining = days;
            let (mut year, mut month) = (1970u32, 1u8);
            while remaining >= days_in_month(year, month) as u64 {
                remaining -= days_in_month(year, month) as u64;
                month += 1;
                if month == 13 {
                    month = 1;
                    year += 1;
                }
            }
            proptest::prop_assert_eq!(days_since_epoch(year, month, remaining as u8 + 1), days);
        }
    }
}
