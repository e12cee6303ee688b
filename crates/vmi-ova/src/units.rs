//! Allocation units (DSP0004 programmatic units and the names exporters write instead) and MAC
//! addresses, as exporters spell them.

/// Bytes per unit for an OVF allocation unit string, `None` when it is not one we know.
///
/// Accepted: programmatic units `byte`, `byte * 2^20`, `byte*2^30`, `byte * 1024`,
/// `byte * 10^6` (any spacing, any case, `bytes` too; factors multiply), and the names
/// VirtualBox and others write: `KiloBytes`, `MegaBytes`, `GigaBytes`, `TeraBytes`, `KB`, `MB`,
/// `GB`, `TB`, `KiB`, `MiB`, `GiB`, `TiB`. The named units are binary: VirtualBox writes
/// `MegaBytes` for MiB.
pub(crate) fn unit_bytes(units: &str) -> Option<u128> {
    let compact: String = units
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let named = match compact.as_str() {
        "b" | "byte" | "bytes" => Some(0),
        "k" | "kb" | "kib" | "kbyte" | "kbytes" | "kilobyte" | "kilobytes" => Some(10),
        "m" | "mb" | "mib" | "mbyte" | "mbytes" | "megabyte" | "megabytes" => Some(20),
        "g" | "gb" | "gib" | "gbyte" | "gbytes" | "gigabyte" | "gigabytes" => Some(30),
        "t" | "tb" | "tib" | "tbyte" | "tbytes" | "terabyte" | "terabytes" => Some(40),
        _ => None,
    };
    if let Some(shift) = named {
        return Some(1u128 << shift);
    }
    let rest = compact
        .strip_prefix("bytes")
        .or_else(|| compact.strip_prefix("byte"))?;
    let mut total: u128 = 1;
    for factor in rest.split('*').skip(1) {
        let value = match factor.split_once('^') {
            Some((base, exp)) => {
                let base: u128 = base.parse().ok()?;
                let exp: u32 = exp.parse().ok()?;
                base.checked_pow(exp)?
            }
            None => factor.parse().ok()?,
        };
        if value == 0 {
            return None;
        }
        total = total.checked_mul(value)?;
    }
    // `byte` followed by anything but factors (`byte2^20`, `byte * `) is not a unit.
    if !rest.is_empty() && !rest.starts_with('*') {
        return None;
    }
    if rest.ends_with('*') {
        return None;
    }
    Some(total)
}

/// A MAC address as `aa:bb:cc:dd:ee:ff`, from `AA:BB:…`, `aa-bb-…`, `aabb.ccdd.eeff` or
/// VirtualBox's `080027AABBCC`; `None` when it is not 12 hex digits.
pub(crate) fn normalize_mac(s: &str) -> Option<String> {
    let hex: String = s
        .trim()
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let lower = hex.to_ascii_lowercase();
    let pairs: Vec<&str> = (0..6).filter_map(|i| lower.get(i * 2..i * 2 + 2)).collect();
    Some(pairs.join(":"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("byte", Some(1))]
    #[case("bytes", Some(1))]
    #[case("byte * 2^20", Some(1 << 20))]
    #[case("byte*2^30", Some(1 << 30))]
    #[case("Byte * 2^10 * 2^10", Some(1 << 20))]
    #[case("byte * 1024", Some(1024))]
    #[case("byte * 10^6", Some(1_000_000))]
    #[case("MegaBytes", Some(1 << 20))]
    #[case("GigaBytes", Some(1 << 30))]
    #[case("KiloBytes", Some(1 << 10))]
    #[case("MB", Some(1 << 20))]
    #[case("GiB", Some(1 << 30))]
    #[case("hertz * 10^6", None)]
    #[case("byte * 2^", None)]
    #[case("byte *", None)]
    #[case("byte2^20", None)]
    #[case("byte * 0", None)]
    #[case("byte * 2^400", None)]
    #[case("", None)]
    fn allocation_units(#[case] units: &str, #[case] bytes: Option<u128>) {
        assert_eq!(unit_bytes(units), bytes);
    }

    #[rstest]
    #[case("00:50:56:AA:BB:CC", Some("00:50:56:aa:bb:cc"))]
    #[case("00-50-56-aa-bb-cc", Some("00:50:56:aa:bb:cc"))]
    #[case("080027C5B3D1", Some("08:00:27:c5:b3:d1"))]
    #[case("0050.56aa.bbcc", Some("00:50:56:aa:bb:cc"))]
    #[case("00:50:56:aa:bb", None)]
    #[case("zz:50:56:aa:bb:cc", None)]
    #[case("", None)]
    fn mac_addresses(#[case] mac: &str, #[case] want: Option<&str>) {
        assert_eq!(normalize_mac(mac).as_deref(), want);
    }
}
