//! clap's errors in the tools' own words: the pieces mkfs.daxfs, fsck.daxfs and daxfs
//! share when they turn a clap error into the message they have always printed.

/// The first line of clap's message, without its "error: " prefix.
pub fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_string()
}

/// The argument as it was typed: clap names the bad letter of a bundle (`-x` of `-fx`),
/// a message should name `-fx`. Arguments after `--` are operands, never bundles.
pub fn as_typed(arg: &str, args: &[String]) -> String {
    if arg.len() != 2 || args.iter().any(|a| a == arg) {
        return arg.to_string();
    }
    args.iter()
        .take_while(|a| *a != "--")
        .find(|a| {
            a.len() > 2 && a.starts_with('-') && !a.starts_with("--") && a[1..].contains(&arg[1..])
        })
        .cloned()
        .unwrap_or_else(|| arg.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_letter_of_a_bundle_is_named_by_the_bundle() {
        assert_eq!(as_typed("-x", &args(&["-fx", "dev"])), "-fx");
    }

    #[test]
    fn an_option_typed_alone_or_after_the_operands_marker_is_itself() {
        assert_eq!(as_typed("-x", &args(&["-x"])), "-x");
        assert_eq!(as_typed("-x", &args(&["--", "-fx"])), "-x");
        assert_eq!(as_typed("--long", &args(&["--long"])), "--long");
    }

    #[test]
    fn first_line_drops_the_error_prefix_and_the_rest() {
        let e = clap::Command::new("t")
            .try_get_matches_from(["t", "--nope"])
            .err()
            .map(|e| first_line(&e));
        let line = e.unwrap_or_default();
        assert!(line.starts_with("unexpected argument '--nope'"), "{line}");
        assert!(!line.contains('\n'));
    }
}
