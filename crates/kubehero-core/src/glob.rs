//! Cluster-name globs used by scoped bindings: `*` matches any run of characters, `?` exactly one.
//! Nothing else is special, so a cluster literally named `a[1]` matches the glob `a[1]`.

/// Returns whether `name` matches `pattern` (`*` and `?` wildcards). Linear in practice: the classic
/// two-pointer algorithm with one backtrack point, so no pattern can make it exponential.
pub fn matches(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Returns whether a glob is acceptable as a binding scope: non-empty, at most 253 characters (a DNS name),
/// and made of the characters cluster names use plus the two wildcards.
pub fn is_valid(pattern: &str) -> bool {
    !pattern.is_empty()
        && pattern.len() <= 253
        && pattern.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '*' | '?'))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*", ""));
        assert!(matches("*", "prod-eu"));
        assert!(matches("prod-*", "prod-eu"));
        assert!(!matches("prod-*", "staging-eu"));
        assert!(matches("prod-??", "prod-eu"));
        assert!(!matches("prod-??", "prod-eu1"));
        assert!(matches("*-eu-*", "prod-eu-1"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exactly"));
        assert!(matches("a*b*c", "axxbyyc"));
        assert!(!matches("a*b*c", "axxbyy"));
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let name = "a".repeat(10_000);
        assert!(!matches(&format!("{}b", "*a".repeat(50)), &name));
    }
}
