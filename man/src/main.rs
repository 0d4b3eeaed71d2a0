//! daxfs-man: writes the man pages and shell completions (filled in by the next commit).

fn main() {}
