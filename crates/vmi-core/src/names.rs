//! Kubernetes names: DNS-1123 labels, sanitising of source VM names.

/// Longest DNS-1123 label.
pub const MAX_LABEL_LEN: usize = 63;

/// Whether `s` is a DNS-1123 label: 1–63 characters of `[a-z0-9-]`, starting and ending with an
/// alphanumeric character.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_LABEL_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Turns a source VM name into a DNS-1123 label: lower-case ASCII letters and digits are kept,
/// every run of other characters becomes one `-`, leading and trailing `-` are dropped and the
/// result is cut to 63 characters. Returns `None` when nothing usable is left (a name made only
/// of punctuation or non-ASCII letters).
pub fn sanitize_vm_name(name: &str) -> Option<String> {
    let mut out = String::with_capacity(name.len());
    let mut pending_dash = false;
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            if pending_dash && !out.is_empty() {
                out.push('-');
            }
            pending_dash = false;
            out.push(c);
        } else {
            pending_dash = true;
        }
    }
    out.truncate(MAX_LABEL_LEN);
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() { None } else { Some(out) }
}

/// Whether `s` has the 8-4-4-4-12 hexadecimal shape of a UUID (with or without dashes is not
/// accepted: OpenStack always prints the dashed form).
pub fn looks_like_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("vmi-bfv", Some("vmi-bfv"))]
    #[case("vmi-Mixed_Case.Name 01", Some("vmi-mixed-case-name-01"))]
    #[case("  Leading and trailing  ", Some("leading-and-trailing"))]
    #[case("web--01", Some("web-01"))]
    #[case("--x--", Some("x"))]
    #[case("Café au lait", Some("caf-au-lait"))]
    #[case("___", None)]
    #[case("", None)]
    #[case("日本", None)]
    #[case("UPPER", Some("upper"))]
    fn sanitising_gives_a_dns_label(#[case] input: &str, #[case] expected: Option<&str>) {
        let got = sanitize_vm_name(input);
        assert_eq!(got.as_deref(), expected);
        if let Some(label) = got {
            assert!(is_dns1123_label(&label), "{label} is not a DNS-1123 label");
        }
    }

    #[test]
    fn long_names_are_cut_to_63_without_a_trailing_dash() {
        let name = format!("{}-{}", "a".repeat(62), "b".repeat(10));
        let got = sanitize_vm_name(&name).unwrap();
        assert_eq!(got, "a".repeat(62));
        let name = "x".repeat(100);
        assert_eq!(sanitize_vm_name(&name).unwrap().len(), 63);
    }

    #[rstest]
    #[case("a", true)]
    #[case("a-b-1", true)]
    #[case("-a", false)]
    #[case("a-", false)]
    #[case("A", false)]
    #[case("a.b", false)]
    #[case("", false)]
    fn dns_label_validation(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(is_dns1123_label(s), ok);
    }

    #[rstest]
    #[case("5649cac7-3871-4bb5-aab6-c72b8c18d0a2", true)]
    #[case("5649CAC7-3871-4bb5-aab6-c72b8c18d0a2", true)]
    #[case("5649cac738714bb5aab6c72b8c18d0a2", false)]
    #[case("vmi-bfv", false)]
    #[case("5649cac7-3871-4bb5-aab6-c72b8c18d0aZ", false)]
    fn uuid_shape(#[case] s: &str, #[case] ok: bool) {
        assert_eq!(looks_like_uuid(s), ok);
    }
}
